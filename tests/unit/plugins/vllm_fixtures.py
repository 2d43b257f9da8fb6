"""Shared data for the vllm unit tests: the sandbox's nodes (tests/sandbox/nodes.yaml, the ground
truth) and gpu_discovery-shaped facts describing them."""

import copy
import os

import yaml

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def sandbox_nodes():
    with open(os.path.join(REPO_ROOT, "tests", "sandbox", "nodes.yaml"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)["items"]


GIB = 1024 ** 3

GPU_TYPES = {
    "nvidia-l40": {
        "nodes": ["sbx-l40-k3s"], "gpus_total": 4, "gpus_free": 4, "gpu_memory_mib": 46068,
        "resource_name": "nvidia.com/gpu", "node_selector": {"kubernetes.io/hostname": "sbx-l40-k3s"},
        "tolerations": [], "vendor": "nvidia", "ephemeral_storage_bytes_min": 1811 * GIB, "runtime_class": "nvidia",
    },
    "nvidia-ampere-a100": {
        "nodes": ["sbx-a100-family"], "gpus_total": 8, "gpus_free": 8, "gpu_memory_mib": 40960,
        "resource_name": "nvidia.com/gpu",
        "node_selector": {"nvidia.com/gpu.family": "ampere", "nvidia.com/gpu.memory": "40960"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "vendor": "nvidia", "ephemeral_storage_bytes_min": 189 * GIB, "runtime_class": None,
    },
    "nvidia-hopper-h100-1g20gb": {
        "nodes": ["sbx-h100-mig"], "gpus_total": 8, "gpus_free": 8, "gpu_memory_mib": 19968,
        "resource_name": "nvidia.com/mig-1g.20gb",
        "node_selector": {"nvidia.com/mig-1g.20gb.product": "NVIDIA-H100-80GB-HBM3-MIG-1g.20gb"},
        "tolerations": [], "vendor": "nvidia", "ephemeral_storage_bytes_min": 480 * GIB, "runtime_class": None,
    },
}


def gpu_types():
    return copy.deepcopy(GPU_TYPES)


def hf_model(name="llama-3-1-8b", **extra):
    model = {"name": name, "source": {"type": "huggingface", "repo": "meta-llama/Llama-3.1-8B-Instruct",
                                      "revision": "0e9e39f249a16976918f6564b8830bc894c89659"}}
    model.update(extra)
    return model


def storage_classes():
    return [
        {"metadata": {"name": "sandbox-hostpath",
                      "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
         "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"},
        {"metadata": {"name": "sandbox-rwx"}, "provisioner": "nfs.csi.k8s.io", "volumeBindingMode": "Immediate",
         "allowVolumeExpansion": True},
    ]


def cluster(**overrides):
    data = {"nodes": sandbox_nodes(), "runtime_classes": ["nvidia"], "crds": [],
            "storage_classes": storage_classes(), "pvcs": [], "secrets": [], "pods": []}
    data.update(overrides)
    return data


def pod(model, node, gpus, resource="nvidia.com/gpu", phase="Running"):
    return {"metadata": {"name": "%s-abc" % model, "labels": {"llmops.serving/model": model}},
            "spec": {"nodeName": node, "containers": [{"name": "vllm", "resources": {
                "limits": {resource: str(gpus)}, "requests": {resource: str(gpus)}}}]},
            "status": {"phase": phase}}
