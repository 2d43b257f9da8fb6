"""The vllm role against the vLLM it deploys (issue 18): every argument list, choice and env name the
inventories render is accepted by the parser of the image's vLLM release, read from that release's data
file (plugins/module_utils/vllm_releases/, written by tests/fixtures/vllm/generate.py from the real
package), and every vLLM version an inventory pins has a data file.

The inventories are rendered by a real ansible-playbook run of the role's render step per inventory
(no cluster): the Deployments below are what the role would apply.
"""

import glob
import json
import os
import subprocess
import sys
import tempfile

import pytest
import yaml

from tests.helpers import vllm_release

REPO_ROOT = vllm_release.REPO_ROOT
INVENTORIES = sorted(os.path.basename(path) for path in glob.glob(os.path.join(REPO_ROOT, "inventories", "*"))
                     if os.path.isdir(path))


SANDBOX_ENV_PLACEHOLDERS = {
    "KUBECONFIG": "/nonexistent/kubeconfig", "SANDBOX_HELM": "helm", "SANDBOX_LLM_ENGINE_URL": "http://127.0.0.1:1",
    "SANDBOX_LLM_ENGINE_USER": "placeholder", "SANDBOX_S3_ENDPOINT": "http://127.0.0.1:9000",
    "SANDBOX_S3_ACCESS_KEY": "placeholder", "SANDBOX_S3_SECRET_KEY": "placeholder", "SANDBOX_S3_REGION": "us-east-1",
}


def _inventory_models(inventory):
    models = []
    for path in glob.glob(os.path.join(REPO_ROOT, "inventories", inventory, "group_vars", "*", "*.yml")):
        with open(path, encoding="utf-8") as handle:
            models += (yaml.safe_load(handle) or {}).get("vllm_models") or []
    return models


def render_inventory(inventory):
    """{host: [Deployment, ...]} as the role renders them for every host of the inventory."""
    tmp = tempfile.mkdtemp(prefix="vllm-inventory-")
    play = [{
        "hosts": "all", "gather_facts": False,
        "tasks": [
            {"name": "render",
             "ansible.builtin.include_role": {"name": "llmops.serving.vllm", "tasks_from": "render.yml"},
             "vars": {"_vllm_plan": "{{ vllm_models | llmops.serving.vllm_plan(_vllm_settings) }}"}},
            {"name": "out", "ansible.builtin.copy": {
                "content": "{{ _vllm_manifests | selectattr('kind', 'equalto', 'Deployment') | list | to_json }}",
                "dest": tmp + "/{{ inventory_hostname }}.json", "mode": "0600"}},
        ],
    }]
    play_path = os.path.join(tmp, "play.yml")
    with open(play_path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(play, handle)
    # What model_staging would publish for the S3 checkpoints the inventory names.
    names = [(model.get("source") or {}).get("checkpoint") for model in _inventory_models(inventory)]
    checkpoints = dict((name, {"checkpoint_path": "s3://models/%s/" % name}) for name in names if name)
    vars_path = os.path.join(tmp, "vars.json")
    with open(vars_path, "w", encoding="utf-8") as handle:
        json.dump({"model_staging_checkpoints": checkpoints, "ansible_python_interpreter": sys.executable,
                   # the sandbox inventory reads these from a running sandbox's env file
                   "llmops_sandbox_env": SANDBOX_ENV_PLACEHOLDERS}, handle)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO_ROOT, "ansible.cfg"))
    proc = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), play_path, "-i",
         os.path.join(REPO_ROOT, "inventories", inventory), "-e", "@" + vars_path],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    out = {}
    for path in glob.glob(os.path.join(tmp, "*.json")):
        if os.path.basename(path) != "vars.json":
            with open(path, encoding="utf-8") as handle:
                out[os.path.basename(path)[:-len(".json")]] = json.load(handle)
    return out


@pytest.fixture(scope="module", params=INVENTORIES)
def rendered(request):
    return request.param, render_inventory(request.param)


def _servers(rendered):
    inventory, hosts = rendered
    for host, deployments in sorted(hosts.items()):
        for deployment in deployments:
            container = deployment["spec"]["template"]["spec"]["containers"][0]
            yield "%s/%s/%s" % (inventory, host, deployment["metadata"]["name"]), container


def test_every_inventory_renders_vllm_servers(rendered):
    assert list(_servers(rendered)), "inventory %s renders no vLLM Deployment" % rendered[0]


def test_every_pinned_vllm_version_has_a_data_file(rendered):
    known = vllm_release.data_files()
    for where, container in _servers(rendered):
        tag = container["image"].rsplit(":", 1)[1]
        version = vllm_release.tag_version(tag)
        assert version in known, (
            "%s runs vLLM image tag %s, which has no data file in plugins/module_utils/vllm_releases/ (have %s); "
            "add it with make vllm-data VLLM_VERSION=<version>" % (where, tag, ", ".join(sorted(known))))


def test_every_rendered_argument_list_parses_with_the_release_parser(rendered):
    checked = 0
    for where, container in _servers(rendered):
        data = vllm_release.load(vllm_release.tag_version(container["image"].rsplit(":", 1)[1]))
        assert container["command"] == ["vllm", "serve"], where
        assert vllm_release.check_args(container["args"], data) == [], (where, container["args"])
        checked += 1
    assert checked


def test_every_rendered_env_name_is_read_by_the_release(rendered):
    for where, container in _servers(rendered):
        data = vllm_release.load(vllm_release.tag_version(container["image"].rsplit(":", 1)[1]))
        names = set(item["name"] for item in container.get("env") or [])
        assert names - vllm_release.env_names_read(data) == set(), where


def test_the_role_default_tag_has_a_data_file():
    with open(os.path.join(REPO_ROOT, "roles", "vllm", "defaults", "main.yml"), encoding="utf-8") as handle:
        tag = yaml.safe_load(handle)["vllm_image_tag"]
    assert vllm_release.tag_version(tag) in vllm_release.data_files(), tag


# --------------------------------------------------------------------------- the checker itself


def _data():
    return vllm_release.load("0.10.2")


@pytest.mark.parametrize("args, expected", [
    (["m", "--quantization", "marlin"], "quantization='marlin'"),  # accepted by argparse, refused by vLLM
    (["m", "--kv-cache-dtype", "fp9"], "invalid choice"),
    (["m", "--no-such-flag"], "unrecognized"),
    (["m", "--max-model-len"], "expected one argument"),
    (["m", "--disable-log-requests"], "deprecated"),
])
def test_the_checker_finds_what_vllm_refuses(args, expected):
    problems = vllm_release.check_args(args, _data())
    assert problems and expected in problems[0], problems


def test_the_checker_accepts_short_forms_abbreviations_and_underscores_like_vllm():
    assert vllm_release.check_args(["m", "-tp", "2", "--served-model", "x", "--max_model_len", "4096"], _data()) == []


def test_the_rebuilt_parser_has_every_option_string_of_the_release():
    data = _data()
    parser = vllm_release.release_parser(data)
    recorded = set(text for option in data["options"] for text in option["option_strings"])
    assert set(parser._option_string_actions) == recorded
    assert {"-tp", "-pp", "-q", "--no-enable-prefix-caching"} <= recorded
