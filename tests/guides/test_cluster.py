"""docs/cluster.md, followed as written (environment `dev`) on a sandbox shaped like the guide's cluster.

The cluster: the sandbox's nodes as the GPU Operator labels them (GFD full labels, family only,
MIG mixed, time-slicing; the A100 node tainted nvidia.com/gpu) plus a CPU node, a `ceph-rbd`
StorageClass (served by the sandbox's provisioner), the `nginx` IngressClass, and S3 over HTTPS with
a private CA (MinIO with a CA made for it) holding the bucket `llm-models-dev`. The user's side: a
kubeconfig whose context is `dev`, helm on PATH, the vault file the guide's step `secrets` creates
(values typed into the editor, the vault password at the prompts), then the guide's step `run`
(the run, check mode with diff right after it, which must report no change, and status).

inventories/cluster is used as it is; what the guide's site has and the sandbox has not is replaced
through inventory variables, in host_vars/llmops-dev.yml of the copy (see OVERRIDES_WHY): the S3
endpoint and its CA file, the llm-engine checkout the chart comes from, the gateway's URL (the guide
reaches it through an Ingress with DNS and its own CA), and the local directory of the model.
"""

import base64
import os
import re
import secrets

import pytest

from tests.guides.shapes import (
    UserSide,
    gateway_get,
    guide_sandbox,
    kube_get,
    kubeconfig_with_context,
    models_with_local_source,
    require_ok,
    s3_client,
    sandbox_inventory_value,
    shape_storage,
    tiny_model,
    write_host_vars,
)
from tests.helpers import guides

GUIDE = "docs/cluster.md"
ENVIRONMENT = "dev"
NODES = ["sbx-cpu-1", "sbx-t4-gfd", "sbx-a100-family", "sbx-h100-mig", "sbx-h100-gfd", "sbx-t4-shared"]
CLUSTER_OBJECTS = """
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: ceph-rbd
provisioner: sandbox.llmops.local/hostpath
reclaimPolicy: Delete
volumeBindingMode: Immediate
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: nginx
spec:
  controller: k8s.io/ingress-nginx
"""
OVERRIDES_WHY = {
    "llmops_s3_endpoint_url": "https://s3.storage.example.internal",
    "llmops_s3_ca_bundle": "/etc/pki/llmops/s3-ca.pem",
    "model_engine_chart_ref": "a checkout of llm-engine in /opt/llm-engine",
    "llm_endpoints_url": "https://llm-engine.dev.example.internal through its Ingress",
    "llm_endpoints_ca_path": "/etc/pki/llmops/internal-ca.pem, the CA of the gateway's certificate",
    "model_staging_models": "the weights in /srv/models/Llama-3.1-8B-Instruct",
}
VAULT_PROMPT = r"(New |Confirm New )?Vault password( \([^)]*\))?:"

pytestmark = [pytest.mark.guides, pytest.mark.slow]


def test_cluster_guide_dev():
    steps = guides.guide_steps(GUIDE)
    with guide_sandbox("cluster", nodes=NODES, s3_tls=True) as sbx:
        shape_storage(sbx, CLUSTER_OBJECTS)
        s3_client(sbx).create_bucket(Bucket="llm-models-" + ENVIRONMENT)
        user = UserSide(sbx)
        write_host_vars(user.checkout, "llmops-" + ENVIRONMENT, {
            "llmops_s3_endpoint_url": sbx["SANDBOX_S3_ENDPOINT"],
            "llmops_s3_ca_bundle": sbx["SANDBOX_S3_CA_BUNDLE"],
            "model_engine_chart_ref": sandbox_inventory_value(sbx, "model_engine_chart_ref"),
            "llm_endpoints_url": sbx["SANDBOX_LLM_ENGINE_URL"],
            "llm_endpoints_ca_path": "",
            "model_staging_models": models_with_local_source(user.checkout, tiny_model(sbx)),
        }, OVERRIDES_WHY)

        typed = vault_values(sbx)
        listed = re.findall(r"^#\s*(vault_\w+):", steps["secrets"].text, re.MULTILINE)
        assert listed and set(listed) <= set(typed), "%s lists %s; the test types values for %s" % (
            steps["secrets"].label(), listed, sorted(typed))
        password = secrets.token_urlsafe(12)
        env = user.env({
            "KUBECONFIG": kubeconfig_with_context(sbx, ENVIRONMENT, os.path.join(sbx["SANDBOX_DIR"], "kubeconfig")),
            "EDITOR": user.editor,
            "GUIDE_EDITOR_TEXT": "\n".join("%s: %s" % (name, typed[name]) for name in listed),
        })
        env["PATH"] = sbx["SANDBOX_BIN_PATH"] + os.pathsep + env["PATH"]  # helm 3.13+ on the controller (section 1)
        answers = [(VAULT_PROMPT, password)]

        runs = [require_ok(user.run(steps["secrets"], env, answers))]
        runs.append(require_ok(user.run(steps["run"], env, answers)))
        recaps = guides.recaps(runs[-1].output)
        assert len(recaps) == 3 and all(r[0] == "llmops-" + ENVIRONMENT and r[1]["failed"] == 0 for r in recaps), (
            runs[-1].failure())
        assert recaps[1][1]["changed"] == 0, "%s: check mode right after the run reports %d change(s): %s" % (
            steps["run"].label(), recaps[1][1]["changed"],
            guides.changed_tasks(runs[-1].output.split("PLAY RECAP", 1)[1]))

        _assert_cluster_as_the_guide_says(sbx, typed)
        for run in runs:
            for name in ("vault_registry_password", "vault_s3_secret_key", "vault_hf_token"):
                assert typed[name] not in run.output, "%s printed %s" % (run.step.label(), name)


def vault_values(sbx):
    """What a user types into the vault file for this sandbox: its S3 keys and gateway user, a registry
    login and a Hugging Face token of their own (random: they must never appear in any output)."""
    return {
        "vault_registry_username": "guide-" + secrets.token_hex(3),
        "vault_registry_password": secrets.token_urlsafe(18),
        "vault_s3_access_key": sbx["SANDBOX_S3_ACCESS_KEY"],
        "vault_s3_secret_key": sbx["SANDBOX_S3_SECRET_KEY"],
        "vault_llm_engine_user": sbx["SANDBOX_LLM_ENGINE_USER"],
        "vault_hf_token": "hf_" + secrets.token_hex(16),
    }


def _assert_cluster_as_the_guide_says(sbx, typed):
    """What docs/cluster.md's "Order and what each phase checks" says the run leaves, read back."""
    for namespace in ("llm-engine", "llm-engine-endpoints", "vllm"):
        s3_secret = kube_get(sbx, "secret", "llm-engine-s3", "-n", namespace)
        assert typed["vault_s3_secret_key"].encode() in b"".join(
            base64.b64decode(v) for v in s3_secret["data"].values()), namespace
        pull = kube_get(sbx, "secret", "regcred", "-n", namespace)
        assert pull["type"] == "kubernetes.io/dockerconfigjson", namespace
    quotas = {q["metadata"]["namespace"]: q["spec"]["hard"] for q in kube_get(sbx, "resourcequota", "-A")["items"]}
    assert quotas.get("llm-engine-endpoints", {}).get("requests.nvidia.com/gpu") == "4", quotas
    claims = kube_get(sbx, "pvc", "-n", "llm-engine")["items"]
    assert claims and {c["spec"]["storageClassName"] for c in claims} == {"ceph-rbd"}, claims
    assert kube_get(sbx, "secret", "redis-cluster", "-n", "llm-engine")["data"]

    objects = s3_client(sbx).list_objects_v2(Bucket="llm-models-dev", Prefix="models/llama-3.1-8b-instruct/")
    keys = [o["Key"] for o in objects.get("Contents", [])]
    assert any(k.endswith(".safetensors") for k in keys), keys
    endpoint = gateway_get(sbx, typed["vault_llm_engine_user"], "/v1/llm/model-endpoints/llama-3-1-8b")
    assert endpoint["status"] == "READY", endpoint
    assert endpoint["checkpoint_path"].startswith("s3://llm-models-dev/models/llama-3.1-8b-instruct"), endpoint
