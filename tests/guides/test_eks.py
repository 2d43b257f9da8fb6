"""docs/eks.md, followed as written (the `eks` group of inventories/cluster) on an EKS-style sandbox.

The cluster: the sandbox's EKS-style node (g5.2xlarge, one A10G, labelled by its node group with
k8s.amazonaws.com/accelerator=nvidia-ampere-a10 and tainted nvidia.com/gpu), a second node of that
node group, and a CPU node, the
`gp3` StorageClass (EBS CSI driver on EKS; the sandbox's provisioner here) and the `alb` IngressClass.
The user's side: a kubeconfig whose context is the cluster ARN (what `aws eks update-kubeconfig`
writes; that command needs AWS and is skipped), LLM_ENGINE_USER exported, the controller's own AWS
credentials in AWS_* variables, helm on PATH; then the guide's step `run` (site.yml and status.yml).

Replaced through inventory variables (host_vars/llmops-eks.yml of the copy, see OVERRIDES_WHY): AWS
S3 by the sandbox's MinIO, the llm-engine checkout, the gateway's public URL, the model's local
directory. The node's label must be read, never rewritten: the test checks it is unchanged.
"""

import json
import os

import pytest
import yaml

from tests.guides.shapes import (
    UserSide,
    apply,
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

GUIDE = "docs/eks.md"
NODES = ["sbx-cpu-1", "sbx-eks-a10g"]
EKS_OBJECTS = """
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: gp3
provisioner: sandbox.llmops.local/hostpath
reclaimPolicy: Delete
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: alb
spec:
  controller: ingress.k8s.aws/alb
"""
OVERRIDES_WHY = {
    "llmops_s3_endpoint_url": 'AWS S3 ("")',
    "model_engine_chart_ref": "a checkout of llm-engine in /opt/llm-engine",
    "llm_endpoints_url": "https://llm-engine.example.com through the ALB",
    "model_staging_models": "the weights in /srv/models/Llama-3.1-8B-Instruct",
}

pytestmark = [pytest.mark.guides, pytest.mark.slow]


def second_node_of_the_node_group(sbx):
    """A second g5.2xlarge of the same node group (the inventory runs a vLLM server and an endpoint
    worker, one A10G each): sbx-eks-a10g's labels, taints and capacity under another name."""
    node = kube_get(sbx, "node", "sbx-eks-a10g")
    name = "sbx-eks-a10g-2"
    labels = dict(node["metadata"]["labels"], **{"kubernetes.io/hostname": name})
    return json.dumps({"apiVersion": "v1", "kind": "Node",
                       "metadata": {"name": name, "labels": labels, "annotations": {"kwok.x-k8s.io/node": "fake"}},
                       "spec": {"taints": node["spec"].get("taints", [])},
                       "status": {key: node["status"][key] for key in ("capacity", "allocatable", "nodeInfo")}})


def test_eks_guide():
    steps = guides.guide_steps(GUIDE)
    with guide_sandbox("eks", nodes=NODES) as sbx:
        shape_storage(sbx, EKS_OBJECTS)
        apply(sbx, second_node_of_the_node_group(sbx))
        user = UserSide(sbx)
        group_vars = os.path.join(user.checkout, "inventories", "cluster", "group_vars", "eks", "main.yml")
        with open(group_vars, encoding="utf-8") as handle:
            eks = yaml.safe_load(handle)
        s3_client(sbx).create_bucket(Bucket=eks["llmops_s3_bucket"])
        write_host_vars(user.checkout, "llmops-eks", {
            "llmops_s3_endpoint_url": sbx["SANDBOX_S3_ENDPOINT"],
            "model_engine_chart_ref": sandbox_inventory_value(sbx, "model_engine_chart_ref"),
            "llm_endpoints_url": sbx["SANDBOX_LLM_ENGINE_URL"],
            "model_staging_models": models_with_local_source(user.checkout, tiny_model(sbx)),
        }, OVERRIDES_WHY)
        env = user.env({
            "KUBECONFIG": kubeconfig_with_context(sbx, eks["llmops_kube_context"],
                                                  os.path.join(sbx["SANDBOX_DIR"], "kubeconfig")),
            "LLM_ENGINE_USER": sbx["SANDBOX_LLM_ENGINE_USER"],
            "AWS_ACCESS_KEY_ID": sbx["SANDBOX_S3_ACCESS_KEY"],
            "AWS_SECRET_ACCESS_KEY": sbx["SANDBOX_S3_SECRET_KEY"],
        })
        env["PATH"] = sbx["SANDBOX_BIN_PATH"] + os.pathsep + env["PATH"]  # helm on the controller

        run = require_ok(user.run(steps["run"], env))
        recaps = guides.recaps(run.output)
        assert len(recaps) == 2 and all(r[0] == "llmops-eks" and r[1]["failed"] == 0 for r in recaps), run.failure()
        assert sbx["SANDBOX_S3_SECRET_KEY"] not in run.output, "%s printed the S3 secret key" % run.step.label()

        for name in ("sbx-eks-a10g", "sbx-eks-a10g-2"):
            node = kube_get(sbx, "node", name)
            assert node["metadata"]["labels"]["k8s.amazonaws.com/accelerator"] == "nvidia-ampere-a10", name
        for namespace in ("llm-engine", "llm-engine-endpoints", "vllm"):
            names = {s["metadata"]["name"] for s in kube_get(sbx, "secrets", "-n", namespace)["items"]}
            assert not names & {"regcred", "llm-engine-s3"}, "%s: EKS needs no pull or S3 Secret: %s" % (
                namespace, names)
        claims = kube_get(sbx, "pvc", "-A")["items"]
        assert claims and {c["spec"]["storageClassName"] for c in claims} == {"gp3"}, claims
        keys = [o["Key"] for o in s3_client(sbx).list_objects_v2(Bucket=eks["llmops_s3_bucket"]).get("Contents", [])]
        assert any(k.endswith(".safetensors") for k in keys), keys
        endpoint = gateway_get(sbx, sbx["SANDBOX_LLM_ENGINE_USER"], "/v1/llm/model-endpoints/llama-3-1-8b")
        assert endpoint["status"] == "READY", endpoint
        assert endpoint["spec"]["resource_state"]["gpu_type"] == "nvidia-ampere-a10", endpoint
        assert "accelerator-label" in run.output, "status.yml did not show the labeling scheme the guide names"
