"""A sandbox shaped like a guide's cluster, and the user's side of a guide: a copy of the checkout, the
environment the guide tells the user to set, and the tools it calls that cannot run here as they are.

Each guide test starts its own sandbox in ``.sandbox-guides/<guide>`` (only the nodes of the guide's
cluster, MinIO with a private CA where the guide's store has one), one at a time, and purges it at the
end (``LLMOPS_GUIDES_KEEP=1`` keeps it to look at). Starting one takes about 10 s: the binaries are the
cached ones of the other sandboxes.
"""

import base64
import contextlib
import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from tests.helpers import guides

SANDBOX_PY = os.path.join(guides.REPO_ROOT, "tests", "sandbox", "sandbox.py")
GUIDES_DIR = os.path.join(guides.REPO_ROOT, ".sandbox-guides")


def _read_env(directory):
    env = {}
    with open(os.path.join(directory, "sandbox.env"), encoding="utf-8") as handle:
        for line in handle:
            if "=" in line and not line.startswith("#"):
                key, value = line.rstrip("\n").split("=", 1)
                env[key] = value
    return env


@contextlib.contextmanager
def guide_sandbox(name, nodes=(), s3_tls=False):
    """Start a fresh sandbox for one guide; yield its env file as a dict; purge it afterwards."""
    directory = os.path.join(GUIDES_DIR, name)
    env = dict(os.environ, LLMOPS_SANDBOX_DIR=directory, LLMOPS_SANDBOX_NODES=",".join(nodes),
               LLMOPS_SANDBOX_S3_TLS="1" if s3_tls else "")
    subprocess.run([sys.executable, SANDBOX_PY, "down", "--purge"], env=env, check=True, capture_output=True)
    up = subprocess.run([sys.executable, SANDBOX_PY, "up"], env=env, text=True, capture_output=True, check=False)
    if up.returncode != 0:
        pytest.fail("the sandbox for %s did not start:\n%s" % (name, up.stderr[-3000:]))
    try:
        yield _read_env(directory)
    finally:
        if not os.environ.get("LLMOPS_GUIDES_KEEP"):
            subprocess.run([sys.executable, SANDBOX_PY, "down", "--purge"], env=env, check=False, capture_output=True)


def kubectl(sbx, *args, input_text=None, check=True):
    return subprocess.run([sbx["SANDBOX_KUBECTL"], "--kubeconfig", sbx["KUBECONFIG"], *args], input=input_text,
                          text=True, capture_output=True, check=check)


def kube_get(sbx, *args):
    return json.loads(kubectl(sbx, "get", *args, "-o", "json").stdout)


def apply(sbx, manifest):
    """kubectl apply a manifest (YAML text); what a guide's cluster has before the guide starts."""
    kubectl(sbx, "apply", "-f", "-", input_text=manifest)


def shape_storage(sbx, manifest):
    """The guide's StorageClasses (served by the sandbox's provisioner) instead of the sandbox's own
    (tests/sandbox/storage.yaml), which the guide's cluster does not have."""
    apply(sbx, manifest)
    kubectl(sbx, "delete", "storageclass", "sandbox-hostpath", "sandbox-rwx", "--ignore-not-found")


class UserSide:
    """A copy of the checkout, and the tools the guides call that need a stand-in here (see guides.py)."""

    def __init__(self, sbx):
        base = sbx["SANDBOX_DIR"]
        self.checkout = guides.copy_checkout(os.path.join(base, "checkout"))
        self.tools = os.path.join(base, "tools")
        guides.write_tool(self.tools, "sudo", guides.SUDO)
        self.editor = guides.write_tool(self.tools, "guide-editor", guides.EDITOR)

    def env(self, extra):
        return guides.user_env(self.tools, extra)

    def run(self, step, env, answers=()):
        return guides.run_step(step, cwd=self.checkout, env=env, answers=answers)


def require_ok(run):
    """Fail the test with the guide, the step and the command when a step failed."""
    if run.rc != 0:
        pytest.fail(run.failure(), pytrace=False)
    return run


# ----------------------------------------------------------------------------- cluster-style guides

def kubeconfig_with_context(sbx, context, path):
    """The sandbox's admin kubeconfig with its context renamed to the one the inventory selects (the
    environment name on-prem, the cluster ARN on EKS): what the user's kubeconfig holds."""
    with open(sbx["KUBECONFIG"], encoding="utf-8") as src, open(path, "w", encoding="utf-8") as dst:
        dst.write(src.read())
    os.chmod(path, 0o600)
    subprocess.run([sbx["SANDBOX_KUBECTL"], "--kubeconfig", path, "config", "rename-context", "llmops-sandbox",
                    context],
                   check=True, capture_output=True)
    return path


def sandbox_inventory_value(sbx, variable):
    """A variable as the sandbox inventory resolves it for this sandbox (the LLM Engine chart the sandbox
    runs: whichever chart inventories/sandbox installs, so the guides follow it)."""
    env = dict(os.environ, LLMOPS_SANDBOX_DIR=sbx["SANDBOX_DIR"],
               ANSIBLE_CONFIG=os.path.join(guides.REPO_ROOT, "ansible.cfg"),
               ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible"), "localhost", "-i",
                          os.path.join(guides.REPO_ROOT, "inventories", "sandbox"), "-m", "ansible.builtin.debug",
                          "-a", "msg={{ %s }}" % variable], env=env, text=True, capture_output=True, check=False,
                         cwd=guides.REPO_ROOT)
    match = re.search(r'"msg": "([^"]*)"', out.stdout)
    if out.returncode != 0 or not match:
        pytest.fail("inventories/sandbox does not resolve %s:\n%s%s"
                    % (variable, out.stdout[-2000:], out.stderr[-2000:]))
    return match.group(1)


def tiny_model(sbx):
    """A tiny but real Llama-style safetensors model (tests/fixtures/make_tiny_model.py)."""
    dest = os.path.join(sbx["SANDBOX_DIR"], "models", "tiny-llama")
    subprocess.run([sys.executable, os.path.join(guides.REPO_ROOT, "tests", "fixtures", "make_tiny_model.py"), dest],
                   check=True, capture_output=True)
    return dest


def models_with_local_source(checkout, model_dir):
    """The inventory's model_staging_models with each `src` (a directory on the guide's controller) replaced
    by the tiny model: names and prefixes stay the inventory's."""
    path = os.path.join(checkout, "inventories", "cluster", "group_vars", "all", "models.yml")
    with open(path, encoding="utf-8") as handle:
        models = yaml.safe_load(handle)["model_staging_models"]
    return [dict(model, src=model_dir) if "src" in model else model for model in models]


def s3_client(sbx, access_key=None, secret_key=None):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=sbx["SANDBOX_S3_ENDPOINT"], region_name=sbx["SANDBOX_S3_REGION"],
                        aws_access_key_id=access_key or sbx["SANDBOX_S3_ACCESS_KEY"],
                        aws_secret_access_key=secret_key or sbx["SANDBOX_S3_SECRET_KEY"],
                        verify=sbx.get("SANDBOX_S3_CA_BUNDLE") or True,
                        config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                                      response_checksum_validation="when_required"))


def write_host_vars(checkout, host, values, why):
    """inventories/cluster/host_vars/<host>.yml in the copy: the site's own values (host_vars win over
    group_vars), the way a user points the example inventory at their cluster. ``why`` says, per
    variable, what the guide's cluster has there."""
    directory = os.path.join(checkout, "inventories", "cluster", "host_vars")
    os.makedirs(directory, exist_ok=True)
    lines = ["---", "# The sandbox's own services in place of the guide's site (tests/guides)."]
    for key, value in values.items():
        lines.append("# %s: the guide's cluster has %s" % (key, why[key]))
        lines.append(yaml.safe_dump({key: value}, default_flow_style=False, width=1000).rstrip())
    with open(os.path.join(directory, host + ".yml"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def gateway_get(sbx, user, path):
    """GET on the sandbox's LLM Engine gateway as ``user`` (HTTP Basic, the user id as user name)."""
    import urllib.request

    request = urllib.request.Request(sbx["SANDBOX_LLM_ENGINE_URL"] + path, headers={  # noqa: S310 - http(s) only
        "Authorization": "Basic " + base64.b64encode((user + ":").encode()).decode()})
    with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 - the sandbox's gateway
        return json.loads(resp.read())
