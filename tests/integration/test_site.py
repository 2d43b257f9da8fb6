"""playbooks/site.yml with the sandbox inventory, end to end on the running sandbox.

One flow, because each step needs the state of the one before (and a full run takes minutes on a
loaded machine): deploy everything, run again without a change, read status.yml's report, tear down
without purge (PVCs and Secrets stay), deploy the data phase again (the kept passwords and volumes are
reused), then tear down with purge=true (they go) so the sandbox is left as it was found.

Ground truth comes from outside the playbooks: the cluster (kubectl), Helm, MinIO (boto3) and the
sandbox's node list (tests/sandbox/nodes.yaml).
"""

import base64
import hashlib
import json
import os
import subprocess
import tempfile

import pytest
import yaml

from tests.helpers.playbook import INVENTORY, PLAYBOOKS, changed_tasks, exists, failures
from tests.helpers.sandbox import (
    REPO_ROOT,
    kubectl,
    kubectl_json,
    load_env,
    process_env,
    run_playbook,
    sandbox_dir,
    total_changed,
)
from tests.integration.s3_helpers import client_for, sandbox_s3

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

NAMESPACE = "llm-engine"
VLLM_NAMESPACE = "vllm"
ENDPOINT = "tiny-llama"
BUCKET = "llmops-models"
MANIFEST_KEY = "models/tiny-llama/.llmops-manifest.json"
DATA_SECRETS = ("redis-cluster", "llm-engine-postgres-credentials", "postgres-superuser", "redis-ca-keypair")
PREREQ_SECRETS = ("regcred", "llm-engine-s3")
DATA_PVCS = ("data-redis-0", "data-postgres-0")


def playbook(name, **kwargs):
    return run_playbook(os.path.join(PLAYBOOKS, name), inventory=INVENTORY, **kwargs)


def gpu_node_names():
    """Nodes of the sandbox that offer a GPU resource, from its own node list."""
    with open(os.path.join(REPO_ROOT, "tests", "sandbox", "nodes.yaml"), encoding="utf-8") as handle:
        nodes = [doc for doc in yaml.safe_load_all(handle) if doc and doc.get("kind") == "Node"]
    return sorted(node["metadata"]["name"] for node in nodes
                  if any(key.startswith(("nvidia.com/", "amd.com/")) for key in node["status"]["allocatable"]))


def local_model():
    """{relative path: (size, sha256)} of the tiny model the sandbox inventory generated."""
    root = os.path.join(sandbox_dir(), "models", "tiny-llama")
    out = {}
    for directory, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            with open(path, "rb") as handle:
                out[os.path.relpath(path, root)] = (os.path.getsize(path), hashlib.sha256(handle.read()).hexdigest())
    return out


def secret_data(name, namespace=NAMESPACE):
    result = kubectl("get", "secret", name, "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        return None
    return {k: base64.b64decode(v).decode() for k, v in (json.loads(result.stdout).get("data") or {}).items()}


def pvc_uids():
    return {name: kubectl_json("get", "pvc", name, "-n", NAMESPACE)["metadata"]["uid"] for name in DATA_PVCS}


def live_pods(namespace, selector):
    pods = kubectl_json("get", "pods", "-n", namespace, "-l", selector)["items"]
    return [pod for pod in pods if not pod["metadata"].get("deletionTimestamp")]


def helm_releases():
    env = process_env()
    out = subprocess.run([env["SANDBOX_HELM"], "list", "-n", NAMESPACE, "-o", "json"], env=env, text=True,
                         capture_output=True, check=True).stdout
    return {release["name"]: release for release in json.loads(out)}


@pytest.fixture(scope="module")
def site(sandbox_env):
    """Deploy with site.yml twice; yield both runs; purge everything at the end."""
    first = playbook("site.yml")
    state = {"first": first}
    try:
        assert first["rc"] == 0, failures(first)
        state["second"] = playbook("site.yml")
        yield state
    finally:
        if not state.get("purged"):
            playbook("teardown.yml", extra_vars={"purge": True})


def test_second_run_changes_nothing(site):
    second = site["second"]
    assert second["rc"] == 0, failures(second)
    assert total_changed(second) == 0, changed_tasks(second)


def test_every_phase_left_real_state(site):
    # prerequisites: namespaces labelled for the platform, the pull and S3 Secrets in each
    for namespace in (NAMESPACE, "llm-engine-endpoints", VLLM_NAMESPACE):
        ns = kubectl_json("get", "namespace", namespace)
        assert ns["metadata"]["labels"].get("app.kubernetes.io/part-of") == "llmops-serving"
        regcred = secret_data("regcred", namespace)
        assert "registry.sandbox.local" in json.loads(regcred[".dockerconfigjson"])["auths"]
        assert set(secret_data("llm-engine-s3", namespace)) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        assert secret_data("llm-engine-s3", namespace)["AWS_ACCESS_KEY_ID"] == load_env()["SANDBOX_S3_ACCESS_KEY"]
    quota = kubectl_json("get", "resourcequota", "llmops-gpu-quota", "-n", VLLM_NAMESPACE)
    assert quota["spec"]["hard"] == {"requests.nvidia.com/gpu": "4"}

    # gpu discovery: the device-plugin-only k3s node was mapped to L40 and labelled with the product and
    # the LLM Engine type an L40 never falls short of
    l40 = kubectl_json("get", "node", "sbx-l40-k3s")
    assert l40["metadata"]["labels"].get("llmops.serving/gpu-product") == "nvidia-ada-l40"
    assert l40["metadata"]["labels"].get("k8s.amazonaws.com/accelerator") == "nvidia-ampere-a10"

    # data: Redis and Postgres rolled out with their volumes bound
    for name in ("redis", "postgres"):
        sts = kubectl_json("get", "statefulset", name, "-n", NAMESPACE)
        assert sts["status"].get("readyReplicas") == 1, name
    for pvc in DATA_PVCS:
        assert kubectl_json("get", "pvc", pvc, "-n", NAMESPACE)["status"]["phase"] == "Bound"

    # gateway: the release is deployed and its three Deployments are available
    assert helm_releases()["model-engine"]["status"] == "deployed"
    for name in ("model-engine", "model-engine-endpoint-builder", "model-engine-cacher"):
        assert kubectl_json("get", "deployment", name, "-n", NAMESPACE)["status"].get("availableReplicas") == 1

    # models: the manifest in MinIO lists exactly the generated model's files, sizes and SHA-256
    s3 = client_for(sandbox_s3(load_env()))
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=MANIFEST_KEY)["Body"].read())
    assert {name: (entry["size"], entry["sha256"]) for name, entry in manifest["files"].items()} == local_model()
    assert any(name.endswith(".safetensors") for name in manifest["files"])

    # vllm: the server runs on the k3s L40 node, reading the staged checkpoint
    pods = live_pods(VLLM_NAMESPACE, "app.kubernetes.io/instance=tiny-llama")
    assert [pod["spec"].get("nodeName") for pod in pods] == ["sbx-l40-k3s"]
    assert pods[0]["status"]["phase"] == "Running"
    assert "s3://%s/models/tiny-llama/" % BUCKET in json.dumps(pods[0]["spec"])

    # endpoints: the gateway stand-in's Deployment landed on the T4 node gpu_discovery labelled
    pods = live_pods(NAMESPACE, "endpoint_name=%s" % ENDPOINT)
    assert [pod["spec"].get("nodeName") for pod in pods] == ["sbx-t4-gfd"]
    assert pods[0]["status"]["phase"] == "Running"


def test_status_report_names_every_gpu_node_and_the_endpoint(site):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "status.txt")
        run = playbook("status.yml", extra_vars={"status_report_path": path})
        assert run["rc"] == 0, failures(run)
        with open(path, encoding="utf-8") as handle:
            report = handle.read()
    assert total_changed(run) == 0 or changed_tasks(run) == ["Write the report to a file (-e status_report_path=...)"]
    for node in gpu_node_names():
        assert node in report, node
    endpoint_rows = [line for line in report.splitlines() if line.startswith(ENDPOINT + " ") and "READY" in line]
    assert endpoint_rows, report
    assert "tiny-llama: verified, s3://%s/models/tiny-llama/" % BUCKET in report
    assert "vllm/tiny-llama" in report and "llm-engine/redis" in report
    assert load_env()["SANDBOX_S3_SECRET_KEY"] not in report


def vllm_image():
    deployment = kubectl_json("get", "deployment", "tiny-llama", "-n", VLLM_NAMESPACE)
    return deployment["spec"]["template"]["spec"]["containers"][0]["image"]


def test_rollback_reverts_a_vllm_upgrade_and_explains_a_missing_helm_revision(site):
    before = vllm_image()
    upgrade = playbook("vllm.yml", extra_vars={"vllm_image_tag": "v0.0.1-rollback-test"})
    assert upgrade["rc"] == 0, failures(upgrade)
    assert vllm_image().endswith(":v0.0.1-rollback-test")

    back = playbook("rollback.yml", extra_vars={"rollback_target": "vllm"})
    assert back["rc"] == 0, failures(back)
    assert vllm_image() == before

    # the LLM Engine release has a single revision: nothing to return to, said plainly
    gateway = playbook("rollback.yml")
    assert gateway["rc"] != 0
    assert "known revisions are [1]" in failures(gateway)


def test_teardown_keeps_volumes_and_secrets_and_a_rerun_reuses_them(site):
    secrets_before = {name: secret_data(name) for name in DATA_SECRETS + PREREQ_SECRETS}
    assert all(secrets_before.values()), secrets_before
    uids_before = pvc_uids()

    down = playbook("teardown.yml")
    assert down["rc"] == 0, failures(down)
    removed = (("statefulset", "redis", NAMESPACE), ("statefulset", "postgres", NAMESPACE),
               ("deployment", "model-engine", NAMESPACE), ("deployment", "tiny-llama", VLLM_NAMESPACE),
               ("configmap", "model-engine-service-config", NAMESPACE))
    for kind, name, namespace in removed:
        assert not exists(kind, name, namespace), "%s %s/%s survived the teardown" % (kind, namespace, name)
    assert "model-engine" not in helm_releases()
    assert not live_pods(NAMESPACE, "endpoint_name=%s" % ENDPOINT)
    assert pvc_uids() == uids_before
    assert {name: secret_data(name) for name in secrets_before} == secrets_before

    again = playbook("site.yml", extra_args=["--tags", "prereqs,data"])
    assert again["rc"] == 0, failures(again)
    assert pvc_uids() == uids_before
    assert {name: secret_data(name) for name in secrets_before} == secrets_before
    for name in ("redis", "postgres"):
        assert kubectl_json("get", "statefulset", name, "-n", NAMESPACE)["status"].get("readyReplicas") == 1, name


def test_teardown_with_purge_deletes_volumes_and_secrets(site):
    purge = playbook("teardown.yml", extra_vars={"purge": True})
    site["purged"] = True
    assert purge["rc"] == 0, failures(purge)
    for name in DATA_SECRETS:
        assert secret_data(name) is None, name
    for namespace in (NAMESPACE, VLLM_NAMESPACE):
        for name in PREREQ_SECRETS:
            assert secret_data(name, namespace) is None, "%s/%s" % (namespace, name)
    for name in DATA_PVCS:
        assert not exists("pvc", name, NAMESPACE), name
    assert not exists("resourcequota", "llmops-gpu-quota", VLLM_NAMESPACE)
    # namespaces stay: other tools (and the gateway stand-in) use them
    assert kubectl_json("get", "namespace", NAMESPACE)["status"]["phase"] == "Active"
