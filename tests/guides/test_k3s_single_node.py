"""docs/k3s-single-node.md, followed as written on a one-node k3s-like sandbox.

The sandbox has only the k3s workstation node of tests/sandbox/nodes.yaml (four L40, device plugin
only, no GPU labels) and what k3s itself provides: the `local-path` StorageClass and the `nvidia`
RuntimeClass. The user's side sets what the guide says: KUBECONFIG, LLMOPS_K3S_NODE and HF_TOKEN, an
ansible-vault file made with `ansible-vault create` (the token typed into the editor, the vault
password typed at the prompts). Then the guide's `run` step runs twice: the second run must change
nothing, and neither token may appear in any output.
"""

import base64
import secrets

import pytest

from tests.guides.shapes import UserSide, guide_sandbox, kube_get, require_ok, shape_storage
from tests.helpers import guides

GUIDE = "docs/k3s-single-node.md"
NODE = "sbx-l40-k3s"
MODELS = ["llama-3-1-8b", "mixtral-8x7b-awq", "deepseek-coder-v2-lite"]
# What k3s creates by itself: its local-path provisioner's class and, when it finds the NVIDIA
# container runtime at start, the nvidia RuntimeClass. The sandbox's provisioner serves the class.
K3S_OBJECTS = """
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local-path
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: sandbox.llmops.local/hostpath
reclaimPolicy: Delete
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata:
  name: nvidia
handler: nvidia
"""
VAULT_PROMPTS = [(r"(New |Confirm New )?Vault password( \([^)]*\))?:", None)]

pytestmark = [pytest.mark.guides, pytest.mark.slow]


def test_k3s_single_node_guide():
    steps = guides.guide_steps(GUIDE)
    with guide_sandbox("k3s-single-node", nodes=[NODE]) as sbx:
        shape_storage(sbx, K3S_OBJECTS)
        user = UserSide(sbx)
        vault_token, env_token = "hf_" + secrets.token_hex(16), "hf_" + secrets.token_hex(16)
        password = secrets.token_urlsafe(12)
        env = user.env({"KUBECONFIG": sbx["KUBECONFIG"], "LLMOPS_K3S_NODE": NODE, "HF_TOKEN": env_token,
                        "EDITOR": user.editor, "GUIDE_EDITOR_TEXT": "vault_hf_token: " + vault_token})
        answers = [(prompt[0], password) for prompt in VAULT_PROMPTS]

        runs = [require_ok(user.run(steps["secrets"], env, answers))]
        with open(user.checkout + "/inventories/k3s_single_node/group_vars/all/vault.yml", encoding="utf-8") as handle:
            encrypted = handle.read().startswith("$ANSIBLE_VAULT;")
        assert encrypted, "%s: the vault file is not encrypted" % steps["secrets"].label()

        runs.append(require_ok(user.run(steps["run"], env, answers)))
        site = guides.recaps(runs[-1].output)
        assert site and site[0][1]["failed"] == 0, runs[-1].failure()
        _assert_cluster_as_the_guide_says(sbx, vault_token)

        runs.append(require_ok(user.run(steps["run"], env, answers)))
        rerun = guides.recaps(runs[-1].output)[0][1]
        assert rerun["changed"] == 0, "%s: the re-run changed %d task(s): %s" % (
            steps["run"].label(), rerun["changed"], guides.changed_tasks(runs[-1].output))

        for run in runs:
            for token in (vault_token, env_token):
                assert token not in run.output, "%s printed the Hugging Face token" % run.step.label()


def _assert_cluster_as_the_guide_says(sbx, token):
    """What docs/k3s-single-node.md says the run leaves behind, read back from the cluster."""
    node = kube_get(sbx, "node", NODE)
    # the product in our label, the LLM Engine type an L40 never falls short of in the accelerator label
    assert node["metadata"]["labels"].get("llmops.serving/gpu-product") == "nvidia-ada-l40"
    assert node["metadata"]["labels"].get("k8s.amazonaws.com/accelerator") == "nvidia-ampere-a10"
    secret = kube_get(sbx, "secret", "hf-token", "-n", "llm")
    assert base64.b64decode(secret["data"]["token"]).decode() == token, "hf-token does not hold the vault's token"

    deployments = {d["metadata"]["name"]: d for d in kube_get(sbx, "deployments", "-n", "llm")["items"]}
    assert sorted(deployments) == sorted(MODELS)
    gpus = 0
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod.get("runtimeClassName") == "nvidia", name
        host_paths = [v["hostPath"]["path"] for v in pod.get("volumes", []) if "hostPath" in v]
        assert "/var/lib/llmops/vllm-cache" in host_paths, (name, host_paths)
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"] in (0, "0"), name
        gpus += int(pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
        assert deployment["status"].get("availableReplicas") == 1, name
    assert gpus == 4, "1 + 2 + 1 GPUs on the four-GPU node, found %d" % gpus

    paths = sorted(path["path"] for ingress in kube_get(sbx, "ingress", "-n", "llm")["items"]
                   for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"])
    assert all(any(path.startswith("/" + model) for path in paths) for model in MODELS), paths
    assert kube_get(sbx, "networkpolicies", "-n", "llm")["items"], "no NetworkPolicy in namespace llm"
