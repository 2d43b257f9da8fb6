"""Drill: what a vLLM server's Ingress lets through without the API key (issue 18, item 5).

The vllm role runs against the sandbox (real kube-apiserver, scheduler, kwok GPU node) with an API key
and an Ingress per model, once with a path prefix rewritten by ingress-nginx and once on a host of its
own. The drill then reads back what the API server holds (Ingresses, Deployments, NetworkPolicies) and
follows every route of vLLM's API server, from the route table generated from the pinned release
(plugins/module_utils/vllm_releases/vllm-<version>.json: each route was asked with and without the key
through vLLM's own middleware), through those Ingress rules:
- every route the Ingress reaches must refuse a request without the key, except /health and /metrics;
- the chat API and /health must be reached (so the check sees real routing);
- the key is really configured (VLLM_API_KEY from the Secret in the served container);
- the NetworkPolicy admits only the namespace itself and the ingress controller's namespace.

No vLLM runs here (no GPU, no kubelet): the route table is the part of the real server this drill uses.
"""

import uuid

import pytest

from tests.helpers import vllm_release
from tests.helpers.sandbox import kubectl, kubectl_json, run_playbook

NS = "drill-vllm-routes-%s" % uuid.uuid4().hex[:6]
CONTROLLER_NS = "ingress-nginx"
NODE = "sbx-l40-k3s"


def free_gpus():
    node = kubectl_json("get", "node", NODE)
    allocatable = int(node["status"]["allocatable"].get("nvidia.com/gpu", "0"))
    pods = kubectl_json("get", "pods", "-A", "--field-selector", "spec.nodeName=%s" % NODE)["items"]
    used = sum(int((container.get("resources", {}).get("requests") or {}).get("nvidia.com/gpu", "0"))
               for pod in pods if pod["status"].get("phase") not in ("Succeeded", "Failed")
               for container in pod["spec"]["containers"])
    return allocatable - used


def play():
    gpu_types = {"nvidia-l40": {
        "nodes": [NODE], "gpus_total": 4, "gpus_free": free_gpus(), "gpu_memory_mib": 46068,
        "resource_name": "nvidia.com/gpu", "node_selector": {"kubernetes.io/hostname": NODE}, "tolerations": [],
        "vendor": "nvidia", "runtime_class": None}}
    resources = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
    models = [
        {"name": "routes-prefixed", "source": {"type": "path", "path": "tiny"}, "resources": resources,
         "ingress": {"enabled": True}},
        {"name": "routes-own-host", "source": {"type": "path", "path": "tiny"}, "resources": resources,
         "ingress": {"host": "routes.sandbox.local", "path": "/"}},
    ]
    role_vars = {"vllm_namespace": NS, "vllm_models": models, "vllm_gpu_type": "nvidia-l40",
                 "vllm_ingress_class_name": "nginx", "vllm_ingress_controller_namespace": CONTROLLER_NS,
                 "vllm_api_key_secret_name": "vllm-key", "vllm_cache_type": "emptyDir", "vllm_cache_size": "1Gi",
                 "vllm_shm_size": "256Mi", "vllm_wait_timeout": 240}
    return [{"hosts": "localhost", "gather_facts": False,
             "vars": {"gpu_discovery_types": gpu_types, "gpu_discovery_is_k3s": False},
             "roles": [{"role": "llmops.serving.vllm", "vars": role_vars}]}]


@pytest.fixture(scope="module")
def deployed(sandbox_env):
    kubectl("create", "namespace", NS)
    kubectl("create", "secret", "generic", "vllm-key", "-n", NS, "--from-literal=api-key=%s" % uuid.uuid4().hex)
    try:
        run = run_playbook(play())
        assert run["rc"] == 0, run["stdout"][-4000:] + run["stderr"][-2000:]
        yield {kind: kubectl_json("get", kind, "-n", NS)["items"]
               for kind in ("ingresses", "deployments", "networkpolicies")}
    finally:
        kubectl("delete", "namespace", NS, "--wait=false", "--ignore-not-found", check=False)


def _release(deployments):
    tags = set(item["spec"]["template"]["spec"]["containers"][0]["image"].rsplit(":", 1)[1] for item in deployments)
    assert len(tags) == 1, tags
    return vllm_release.load(vllm_release.tag_version(tags.pop()))


def test_every_routed_path_without_a_key_is_refused_except_health_and_metrics(deployed):
    data = _release(deployed["deployments"])
    ingresses = deployed["ingresses"]
    assert sorted(item["metadata"]["name"] for item in ingresses) == ["routes-own-host", "routes-prefixed"]
    reached = vllm_release.ingress_exposure(ingresses, [], data,
                                            {"routes-prefixed": "/routes-prefixed", "routes-own-host": ""})
    assert vllm_release.unguarded(reached) == []
    seen = set((name, route["path"]) for name, _external, route in reached)
    for name in ("routes-prefixed", "routes-own-host"):
        assert (name, "/v1/chat/completions") in seen and (name, "/health") in seen, sorted(seen)
    # the routes that answer without a key exist in the release and are kept off
    open_routes = [route["path"] for route in data["routes"] if not route["requires_key"]]
    assert "/invocations" in open_routes and "/tokenize" in open_routes
    assert not [path for _name, path in seen if path in ("/invocations", "/tokenize", "/detokenize")]


def test_the_key_that_guards_v1_is_configured_in_every_server(deployed):
    for deployment in deployed["deployments"]:
        env = dict((item["name"], item) for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"])
        assert env["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "vllm-key", "key": "api-key"}


def test_inside_the_cluster_only_the_namespace_and_the_ingress_controller_reach_vllm(deployed):
    allowed = [{"podSelector": {}},
               {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": CONTROLLER_NS}}}]
    policies = deployed["networkpolicies"]
    assert len(policies) == 2
    for policy in policies:
        rules = policy["spec"]["ingress"]
        assert [rule["from"] for rule in rules] == [allowed], rules
