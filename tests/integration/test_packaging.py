"""Packaging: the collection builds, installs and runs from the installed copy; the execution
environment definition turns into a build context; every playbook parses with every inventory."""

import glob
import json
import os
import subprocess
import sys

import pytest

from tests.helpers.sandbox import REPO_ROOT, process_env

BIN = os.path.dirname(sys.executable)


def run(cmd, env=None, cwd=REPO_ROOT, check=True):
    proc = subprocess.run(cmd, cwd=cwd, env=env, text=True, capture_output=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s\n%s" % (" ".join(cmd), proc.returncode, proc.stdout, proc.stderr))
    return proc


@pytest.fixture(scope="module")
def collection_tarball(tmp_path_factory):
    out = tmp_path_factory.mktemp("collection-build")
    run([os.path.join(BIN, "ansible-galaxy"), "collection", "build", "--force", "--output-path", str(out)])
    tarballs = glob.glob(str(out / "llmops-serving-*.tar.gz"))
    assert len(tarballs) == 1, tarballs
    return tarballs[0]


def test_built_collection_excludes_local_state(collection_tarball):
    import tarfile

    with tarfile.open(collection_tarball) as tar:
        names = tar.getnames()
    assert "plugins/modules/gpu_node_info.py" in names
    assert "roles/cluster_prereqs/meta/argument_specs.yml" in names
    assert not [n for n in names if n.startswith((".venv", ".sandbox", ".collections", ".git/"))]


def test_module_runs_from_installed_copy(collection_tarball, tmp_path, sandbox_env):
    dest = tmp_path / "collections"
    run([os.path.join(BIN, "ansible-galaxy"), "collection", "install", "--force", "--no-deps", "-p", str(dest),
         collection_tarball])
    installed = dest / "ansible_collections" / "llmops" / "serving"
    assert (installed / "MANIFEST.json").exists()
    env = process_env()
    # only the installed copy (and the bundled collections in site-packages), not the checkout
    env["ANSIBLE_COLLECTIONS_PATH"] = str(dest)
    env.pop("ANSIBLE_CONFIG", None)
    env["ANSIBLE_LOAD_CALLBACK_PLUGINS"] = "1"
    env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.builtin.json"
    proc = run([os.path.join(BIN, "ansible"), "localhost", "-c", "local", "-e",
                "ansible_python_interpreter=" + sys.executable, "-m", "llmops.serving.gpu_node_info"],
               env=env, cwd=str(tmp_path))
    result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    names = {node["name"] for node in result["nodes"]}
    assert {"sbx-t4-gfd", "sbx-a100-family", "sbx-l40-k3s"} <= names
    assert "sbx-cpu-1" not in names


def test_ansible_builder_creates_a_build_context(collection_tarball, tmp_path):
    build_dir = os.path.join(REPO_ROOT, "build")
    os.makedirs(build_dir, exist_ok=True)
    copied = os.path.join(build_dir, os.path.basename(collection_tarball))
    with open(collection_tarball, "rb") as src, open(copied, "wb") as dst:
        dst.write(src.read())
    context = tmp_path / "context"
    run([os.path.join(BIN, "ansible-builder"), "create", "-f", "ee/execution-environment.yml",
         "-c", str(context), "--output-filename", "Containerfile"])
    containerfile = (context / "Containerfile").read_text()
    assert "ansible-galaxy collection install --offline /build/collections/llmops-serving-" in containerfile
    python_reqs = (context / "_build" / "requirements.txt").read_text()
    assert "kubernetes>=33,<37" in python_reqs
    assert (context / "_build" / "bindep.txt").exists()
    assert glob.glob(str(context / "_build" / "collections" / "llmops-serving-*.tar.gz"))


PLAYBOOKS = sorted(glob.glob(os.path.join(REPO_ROOT, "playbooks", "*.yml")))
INVENTORIES = sorted(d for d in glob.glob(os.path.join(REPO_ROOT, "inventories", "*")) if os.path.isdir(d))


@pytest.mark.parametrize("inventory", INVENTORIES, ids=os.path.basename)
@pytest.mark.parametrize("playbook", PLAYBOOKS, ids=os.path.basename)
def test_playbook_syntax(playbook, inventory):
    env = dict(os.environ)
    env["ANSIBLE_CONFIG"] = os.path.join(REPO_ROOT, "ansible.cfg")
    run([os.path.join(BIN, "ansible-playbook"), "--syntax-check", "-i", inventory, playbook], env=env)
