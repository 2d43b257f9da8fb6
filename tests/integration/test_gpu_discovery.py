"""gpu_node_info and the gpu_discovery role against the sandbox (real apiserver, scheduler, kwok nodes).

Ground truth is tests/sandbox/nodes.yaml. The role is exercised end to end on a label of its own
(``it-gpu.llmops.serving/accelerator``) so check mode, first run and second run are observable
whatever other sessions did; that label is removed again at the end. The role is also run with the
real accelerator label (other roles rely on it), and pods shaped like LLM Engine endpoint pods must
then schedule on a node of the right type for every type present.

Failure paths the shared cluster cannot show (no GPU at all, RBAC refusal) run against a tiny
HTTP stand-in for the API server on 127.0.0.1 that records every request, to prove that nothing is
patched before the role fails.
"""

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from tests.helpers.sandbox import (
    REPO_ROOT,
    kubectl,
    kubectl_json,
    run_playbook,
    task_results,
    total_changed,
)

pytestmark = pytest.mark.sandbox

NODES_FILE = os.path.join(REPO_ROOT, "tests", "sandbox", "nodes.yaml")
REAL_LABEL = "k8s.amazonaws.com/accelerator"
TEST_LABEL = "it-gpu.llmops.serving/accelerator"
MANAGED = "llmops.serving/managed-labels"
OVERRIDES = {"sbx-l40-k3s": "nvidia-ada-l40"}
NAMESPACE = "it-gpu-sched"
ROLE_PREFIX = "llmops.serving.gpu_discovery : "

# What each sandbox node is (from the comments and labels of nodes.yaml), with the L40 override.
EXPECTED = {
    "sbx-t4-gfd": (["nvidia-tesla-t4"], "gpu-feature-discovery", "none"),
    "sbx-a100-family": (["nvidia-ampere-a100"], "family-only", "none"),
    "sbx-l40-k3s": (["nvidia-ada-l40"], "override", "none"),
    "sbx-h100-mig": (["nvidia-hopper-h100-1g20gb", "nvidia-hopper-h100-3g40gb"], "gpu-feature-discovery",
                     "mig-mixed"),
    "sbx-h100-gfd": (["nvidia-hopper-h100"], "gpu-feature-discovery", "none"),
    "sbx-t4-shared": (["nvidia-tesla-t4-shared"], "gpu-feature-discovery", "time-slicing"),
    "sbx-eks-a10g": (["nvidia-ampere-a10"], "accelerator-label", "none"),
}
# Nodes whose GPUs are of one type get the label; the MIG mixed node and the CPU node do not.
LABELED = dict((name, types[0]) for name, (types, _s, _m) in EXPECTED.items() if len(types) == 1)


def _truth():
    with open(NODES_FILE, encoding="utf-8") as handle:
        return dict((d["metadata"]["name"], d) for d in yaml.safe_load(handle)["items"])


def _bytes(quantity):
    units = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * factor
    return int(quantity)


def _millicores(quantity):
    return int(quantity[:-1]) if quantity.endswith("m") else int(quantity) * 1000


def _play(tasks=None, roles=None):
    play = {"hosts": "localhost", "gather_facts": False}
    if roles:
        play["roles"] = roles
    play["tasks"] = tasks or []
    return [play]


def _fail_text(run):
    return "rc=%s\n%s\n%s" % (run["rc"], run["stdout"][-4000:], run["stderr"][-2000:])


def run_module(args, env=None):
    run = run_playbook(_play([{"name": "discover", "llmops.serving.gpu_node_info": args}]), env=env)
    results = task_results(run, "discover")
    return run, (results[0] if results else None)


def run_role(role_vars, check=False, diff=False, env=None):
    facts = {"name": "facts", "ansible.builtin.debug": {"msg": {
        "nodes": "{{ gpu_discovery_nodes }}", "types": "{{ gpu_discovery_types }}",
        "hardware": "{{ gpu_discovery_recommended_hardware }}", "label": "{{ gpu_discovery_accelerator_label }}",
        "is_k3s": "{{ gpu_discovery_is_k3s }}"}}}
    run = run_playbook(_play([facts], roles=[{"role": "llmops.serving.gpu_discovery", "vars": role_vars}]),
                       check=check, diff=diff, env=env)
    facts_result = task_results(run, "facts")
    return run, (facts_result[0]["msg"] if facts_result else None)


def node_labels():
    return dict((n["metadata"]["name"], n["metadata"].get("labels") or {})
                for n in kubectl_json("get", "nodes")["items"])


def remove_test_label():
    """Take TEST_LABEL and its annotation entry off every node (keeps every other key)."""
    for node in kubectl_json("get", "nodes")["items"]:
        meta = node["metadata"]
        keys = [k for k in (meta.get("annotations") or {}).get(MANAGED, "").split(",") if k]
        if TEST_LABEL not in (meta.get("labels") or {}) and TEST_LABEL not in keys:
            continue
        rest = ",".join(k for k in keys if k != TEST_LABEL)
        patch = {"metadata": {"labels": {TEST_LABEL: None}, "annotations": {MANAGED: rest or None}}}
        kubectl("patch", "node", meta["name"], "--type", "merge", "-p", json.dumps(patch))


# ------------------------------------------------------------------------------------------ module
def test_module_result_equals_fixture_truth(sandbox_env):
    run, result = run_module({"gpu_type_overrides": OVERRIDES, "include_allocations": True, "page_size": 3})
    assert run["rc"] == 0, _fail_text(run)
    truth = _truth()
    records = dict((r["name"], r) for r in result["nodes"])
    # every sandbox GPU node is found (extra nodes may exist only during benchmarks), the CPU node is not
    assert set(EXPECTED) <= set(records)
    assert "sbx-cpu-1" not in records
    for name, (types, scheme, mode) in EXPECTED.items():
        record = records[name]
        node = truth[name]
        assert record["gpu_types"] == types, name
        assert record["labeling_scheme"] == scheme, name
        assert record["sharing"]["mode"] == mode, name
        allocatable = node["status"]["allocatable"]
        for resource, info in record["resources"].items():
            assert info["allocatable"] == int(allocatable[resource]), (name, resource)
            assert info["capacity"] == int(node["status"]["capacity"][resource]), (name, resource)
        gpu_resources = [r for r in allocatable if "gpu" in r or "mig" in r]
        assert sorted(record["resources"]) == sorted(gpu_resources), name
        assert record["ephemeral_storage_allocatable_bytes"] == _bytes(allocatable["ephemeral-storage"])
        assert record["memory_allocatable_bytes"] == _bytes(allocatable["memory"])
        assert record["cpu_allocatable_millicores"] == _millicores(allocatable["cpu"])
        taints = (node.get("spec") or {}).get("taints") or []
        assert [(t["key"], t["effect"]) for t in record["taints"]] == [(t["key"], t["effect"]) for t in taints]
        assert record["is_k3s"] == ("+k3s" in node["status"]["nodeInfo"]["kubeletVersion"])
        assert record["ready"] is True and record["cordoned"] is False
    assert records["sbx-l40-k3s"]["runtime_class"] == "nvidia"
    assert records["sbx-a100-family"]["tolerations_needed"] == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}]
    a100 = result["gpu_types"]["nvidia-ampere-a100"]
    assert a100["ephemeral_storage_bytes_min"] == 189 * 2 ** 30
    mig = result["gpu_types"]["nvidia-hopper-h100-3g40gb"]
    assert (mig["resource_name"], mig["gpus_total"]) == ("nvidia.com/mig-3g.40gb", 4)
    # one paginated LIST per kind: ceil(nodes / 3) node pages
    nodes_now = len(kubectl_json("get", "nodes")["items"])
    assert result["summary"]["api_pages"]["nodes"] in (-(-nodes_now // 3), -(-(nodes_now - 1) // 3),
                                                       -(-(nodes_now + 1) // 3))
    assert result["summary"]["api_pages"]["pods"] >= 1
    codes = set(w["code"] for w in result["discovery_warnings"])
    assert {"mixed_driver_versions", "mig_mixed_node"} <= codes
    assert "unlabeled_gpu_node" not in codes  # the override maps the device-plugin-only node


def test_module_without_override_warns_about_the_unlabeled_node(sandbox_env):
    run, result = run_module({})
    assert run["rc"] == 0, _fail_text(run)
    record = [r for r in result["nodes"] if r["name"] == "sbx-l40-k3s"][0]
    assert (record["gpu_type"], record["labeling_scheme"]) == ("nvidia-unknown", "device-plugin-only")
    warning = [w for w in result["discovery_warnings"] if w["code"] == "unlabeled_gpu_node"]
    assert warning and warning[0]["node"] == "sbx-l40-k3s" and "gpu_type_overrides" in warning[0]["message"]
    # warnings are shown, never failures
    assert any("sbx-l40-k3s" in w for w in task_results(run, "discover")[0].get("warnings", []))


def _gpu_requests_on(node_name):
    total = 0
    pods = kubectl_json("get", "pods", "-A", "--field-selector",
                        "spec.nodeName=%s,status.phase!=Succeeded,status.phase!=Failed" % node_name)
    for pod in pods["items"]:
        for container in pod["spec"]["containers"]:
            limits = (container.get("resources") or {}).get("limits") or {}
            total += int(limits.get("nvidia.com/gpu", 0))
    return total


def test_module_counts_allocated_gpus(sandbox_env, gpu_namespace):
    _create_pod("alloc-probe", {"kubernetes.io/hostname": "sbx-h100-gfd"}, [], "nvidia.com/gpu", count=3)
    assert _wait_scheduled(["alloc-probe"])["alloc-probe"] == "sbx-h100-gfd"
    for _attempt in range(3):
        before = _gpu_requests_on("sbx-h100-gfd")
        run, result = run_module({"include_allocations": True})
        after = _gpu_requests_on("sbx-h100-gfd")
        assert run["rc"] == 0, _fail_text(run)
        if before == after:
            break
    record = [r for r in result["nodes"] if r["name"] == "sbx-h100-gfd"][0]
    assert before >= 3
    assert record["gpus_allocated"] == before
    assert record["gpus_free"] == 8 - before
    kubectl("delete", "pod", "-n", NAMESPACE, "alloc-probe", "--grace-period=0", "--force", "--wait=true")


# ------------------------------------------------------------------------------------------ role
@pytest.fixture
def test_label(sandbox_env):
    remove_test_label()
    yield TEST_LABEL
    remove_test_label()


@pytest.fixture(scope="module")
def gpu_namespace(sandbox_env):
    kubectl("create", "namespace", NAMESPACE, check=False)
    yield NAMESPACE
    kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def _create_pod(name, node_selector, tolerations, resource, count=1):
    manifest = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "it-gpu"}},
        "spec": {
            "nodeSelector": node_selector,
            "tolerations": tolerations,
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": False,
            "containers": [{"name": "main", "image": "registry.invalid/llmops/probe:1",
                            "resources": {"limits": {resource: str(count)}}}],
        },
    }
    deadline = time.time() + 60
    while True:  # the namespace's default ServiceAccount appears a moment after the namespace
        proc = kubectl("apply", "-f", "-", input_text=json.dumps(manifest), check=False)
        if proc.returncode == 0:
            return
        if time.time() > deadline:
            raise AssertionError("cannot create pod %s: %s" % (name, proc.stderr))
        time.sleep(1)


def _wait_scheduled(names, timeout=90):
    deadline = time.time() + timeout
    placed = {}
    while time.time() < deadline:
        for name in names:
            pod = kubectl_json("get", "pod", "-n", NAMESPACE, name)
            if pod["spec"].get("nodeName"):
                placed[name] = pod["spec"]["nodeName"]
        if len(placed) == len(names):
            return placed
        time.sleep(1)
    pending = [n for n in names if n not in placed]
    events = kubectl("get", "events", "-n", NAMESPACE, "--field-selector", "reason=FailedScheduling",
                     check=False).stdout
    raise AssertionError("pods not scheduled after %ss: %s\n%s" % (timeout, pending, events[-3000:]))


def _delete_pods():
    kubectl("delete", "pods", "-n", NAMESPACE, "-l", "app=it-gpu", "--grace-period=0", "--force", "--wait=true",
            check=False)


def test_role_check_mode_then_apply_then_idempotent(sandbox_env, test_label, gpu_namespace):
    before = node_labels()
    role_vars = {"gpu_discovery_accelerator_label": TEST_LABEL, "gpu_discovery_gpu_type_overrides": OVERRIDES}

    # check mode with diff: reports every label it would add, changes nothing
    run, _facts = run_role(role_vars, check=True, diff=True)
    assert run["rc"] == 0, _fail_text(run)
    label_results = task_results(run, ROLE_PREFIX + "Label GPU nodes with their gpu_type")
    assert label_results and label_results[0]["changed"] is True
    items = label_results[0]["results"]
    assert sorted(i["item"]["node"] for i in items) == sorted(LABELED)
    assert all(i["changed"] and i.get("diff") for i in items)
    assert node_labels() == before

    # first run: the label lands on exactly the single-type GPU nodes; nothing else changes
    run, facts = run_role(role_vars)
    assert run["rc"] == 0, _fail_text(run)
    after = node_labels()
    for name, labels in after.items():
        if name in LABELED:
            assert labels.get(TEST_LABEL) == LABELED[name], name
        else:
            assert TEST_LABEL not in labels, name
        other = dict((k, v) for k, v in labels.items() if k not in (TEST_LABEL, REAL_LABEL))
        assert other == dict((k, v) for k, v in before.get(name, {}).items() if k not in (TEST_LABEL, REAL_LABEL))
    for node in kubectl_json("get", "nodes")["items"]:
        if node["metadata"]["name"] in LABELED:
            assert TEST_LABEL in node["metadata"]["annotations"][MANAGED].split(",")
    assert facts["label"] == TEST_LABEL
    assert facts["is_k3s"] is False

    # second run: nothing to do
    run, facts_again = run_role(role_vars)
    assert run["rc"] == 0, _fail_text(run)
    assert total_changed(run) == 0, _fail_text(run)
    assert facts_again["types"] == facts["types"]

    # every type's published selector + tolerations + resource schedules onto a node of that type
    types = facts["types"]
    assert set(types) >= set(t for types_, _s, _m in EXPECTED.values() for t in types_)
    for gpu_type, info in sorted(types.items()):
        assert info["node_selector_exact"] is True, gpu_type
    _schedule_round(dict((t, (i["node_selector"], i["tolerations"], i["resource_name"], i["nodes"]))
                         for t, i in types.items()))


def _schedule_round(specs):
    """Create one pod per type, wait until all are bound, check the node, delete them."""
    names = {}
    for gpu_type, (selector, tolerations, resource, nodes) in sorted(specs.items()):
        name = "probe-" + gpu_type.replace(".", "-")[:50]
        _create_pod(name, selector, tolerations, resource)
        names[name] = (gpu_type, nodes)
    try:
        placed = _wait_scheduled(sorted(names))
        for name, (gpu_type, nodes) in names.items():
            assert placed[name] in nodes, (gpu_type, placed[name], nodes)
    finally:
        _delete_pods()


def test_role_real_label_lets_llm_engine_pods_schedule(sandbox_env, gpu_namespace):
    role_vars = {"gpu_discovery_gpu_type_overrides": OVERRIDES}
    run, facts = run_role(role_vars)
    assert run["rc"] == 0, _fail_text(run)
    labels = node_labels()
    for name, gpu_type in LABELED.items():
        assert labels[name].get(REAL_LABEL) == gpu_type, name
    run, _again = run_role(role_vars)
    assert run["rc"] == 0, _fail_text(run)
    assert total_changed(run) == 0, _fail_text(run)

    # LLM Engine's endpoint pod: nodeSelector accelerator=<gpu_type>, nvidia.com/gpu toleration and limit
    llm_toleration = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    compatible = dict((t, i) for t, i in facts["types"].items() if i["llm_engine_compatible"])
    assert sorted(compatible) == sorted(["nvidia-ada-l40", "nvidia-ampere-a10", "nvidia-ampere-a100",
                                         "nvidia-hopper-h100", "nvidia-tesla-t4"])
    _schedule_round(dict((t, ({REAL_LABEL: t}, llm_toleration, "nvidia.com/gpu", i["nodes"]))
                         for t, i in compatible.items()))
    hardware = facts["hardware"]["byGpuMemoryGb"]
    assert set(e["gpu_type"] for e in hardware) <= set(compatible)
    # storage on the 189Gi A100 node stays under its ephemeral storage
    for entry in hardware:
        limit = compatible[entry["gpu_type"]]["ephemeral_storage_bytes_min"]
        assert int(entry["storage"][:-2]) * 2 ** 30 <= limit, entry


# ------------------------------------------------------------------------------------------ stand-in API
def _node(name, gpus=0, ready=True, cordoned=False):
    allocatable = {"cpu": "8", "memory": "32Gi", "ephemeral-storage": "100Gi"}
    if gpus:
        allocatable["nvidia.com/gpu"] = str(gpus)
    labels = {"kubernetes.io/hostname": name}
    if gpus:
        labels["nvidia.com/gpu.product"] = "Tesla-T4"
    return {"metadata": {"name": name, "labels": labels}, "spec": {"unschedulable": cordoned},
            "status": {"capacity": allocatable, "allocatable": allocatable,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "nodeInfo": {"kubeletVersion": "v1.34.4"}}}


class StandInApi(object):
    """Serves /version, /api, /apis and paginated node/pod lists; records every request."""

    def __init__(self, nodes, status=200):
        self.nodes = nodes
        self.status = status
        self.requests = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                api.requests.append(("GET", self.path))
                url = urlparse(self.path)
                query = parse_qs(url.query)
                if url.path == "/version":
                    return self._send(200, {"major": "1", "minor": "34", "gitVersion": "v1.34.4"})
                if url.path == "/api":
                    return self._send(200, {"kind": "APIVersions", "versions": ["v1"]})
                if url.path == "/apis":
                    return self._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
                if url.path in ("/api/v1/nodes", "/api/v1/pods"):
                    if api.status != 200:
                        return self._send(api.status, {"kind": "Status", "code": api.status,
                                                       "message": "forbidden", "reason": "Forbidden"})
                    items = api.nodes if url.path.endswith("nodes") else []
                    start = int(query.get("continue", ["0"])[0])
                    limit = int(query.get("limit", ["500"])[0])
                    page = items[start:start + limit]
                    meta = {"continue": str(start + limit)} if start + limit < len(items) else {}
                    return self._send(200, {"kind": "List", "apiVersion": "v1", "metadata": meta, "items": page})
                return self._send(404, {"kind": "Status", "code": 404})

            def do_PATCH(self):
                api.requests.append(("PATCH", self.path))
                return self._send(500, {"kind": "Status", "code": 500})

            do_POST = do_PUT = do_DELETE = do_PATCH

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def kubeconfig(self, tmp_path):
        path = tmp_path / "standin.kubeconfig"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "s", "cluster": {"server": "http://127.0.0.1:%d" % self.server.server_port}}],
            "users": [{"name": "u", "user": {"token": "standin"}}],
            "contexts": [{"name": "c", "context": {"cluster": "s", "user": "u"}}]}))
        return {"K8S_AUTH_KUBECONFIG": str(path), "KUBECONFIG": str(path)}

    def writes(self):
        return [r for r in self.requests if r[0] != "GET"]


def test_role_fails_early_without_schedulable_gpu_and_changes_nothing(tmp_path):
    nodes = [_node("cpu-a"), _node("cpu-b"), _node("gpu-down", gpus=1, ready=False),
             _node("gpu-cordoned", gpus=1, cordoned=True)]
    with StandInApi(nodes) as api:
        run, _facts = run_role({}, env=api.kubeconfig(tmp_path))
        assert run["rc"] != 0
        text = run["stdout"]
        assert "No schedulable GPU" in text and "gpu_discovery_allow_cpu_only" in text
        assert "'gpu-down': 1" in text and "NotReady ['gpu-down']" in text and "cordoned ['gpu-cordoned']" in text
        assert api.writes() == []
        run, facts = run_role({"gpu_discovery_allow_cpu_only": True, "gpu_discovery_label_nodes": False},
                              env=api.kubeconfig(tmp_path))
        assert run["rc"] == 0, _fail_text(run)
        assert facts["hardware"] == {"byGpuMemoryGb": [], "byModelName": []}
        assert facts["types"]["nvidia-tesla-t4"]["gpus_schedulable"] == 0
        assert api.writes() == []


def test_bad_input_fails_before_any_request(tmp_path):
    with StandInApi([_node("gpu-a", gpus=1)]) as api:
        env = api.kubeconfig(tmp_path)
        run, _facts = run_role({"gpu_discovery_gpu_type_overrides": {"gpu-a": "Not A Label"}}, env=env)
        assert run["rc"] != 0
        assert "gpu_type_overrides['gpu-a'] = 'Not A Label'" in run["stdout"]
        assert not [r for r in api.requests if "/nodes" in r[1]]
        run, _facts = run_role({"gpu_discovery_label_nodes": "sometimes"}, env=env)
        assert run["rc"] != 0
        assert "gpu_discovery_label_nodes" in run["stdout"]
        run, _facts = run_role({"gpu_discovery_accelerator_label": "bad label!"}, env=env)
        assert run["rc"] != 0 and "accelerator_label 'bad label!'" in run["stdout"]
        assert api.writes() == [] and not [r for r in api.requests if "/nodes" in r[1]]


def test_module_reads_nodes_in_one_paginated_list(tmp_path):
    nodes = [_node("n%02d" % i, gpus=i % 2) for i in range(7)]
    with StandInApi(nodes) as api:
        run, result = run_module({"page_size": 3}, env=api.kubeconfig(tmp_path))
        assert run["rc"] == 0, _fail_text(run)
        node_requests = [urlparse(p) for _m, p in api.requests if p.startswith("/api/v1/nodes")]
        assert [r.path for r in node_requests] == ["/api/v1/nodes"] * 3  # never one request per node
        assert [parse_qs(r.query) for r in node_requests] == [
            {"limit": ["3"]}, {"limit": ["3"], "continue": ["3"]}, {"limit": ["3"], "continue": ["6"]}]
        assert result["summary"]["nodes_total"] == 7 and result["summary"]["gpu_nodes"] == 3
        assert not [p for _m, p in api.requests if "/pods" in p]
        run, result = run_module({"include_allocations": True}, env=api.kubeconfig(tmp_path))
        pod_requests = [p for _m, p in api.requests if p.startswith("/api/v1/pods")]
        assert len(pod_requests) == 1
        assert parse_qs(urlparse(pod_requests[0]).query)["fieldSelector"] == [
            "spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed"]


def test_module_explains_rbac_refusal(tmp_path):
    with StandInApi([_node("gpu-a", gpus=1)], status=403) as api:
        run, result = run_module({}, env=api.kubeconfig(tmp_path))
        assert run["rc"] != 0
        assert "forbids listing nodes (403)" in result["msg"] and "verbs: [list]" in result["msg"]


def test_module_explains_unreachable_api(tmp_path):
    api = StandInApi([])
    env = api.kubeconfig(tmp_path)
    api.server.server_close()  # the port is closed: nothing listens there
    run, result = run_module({}, env=env)
    assert run["rc"] != 0
    assert "cannot reach the Kubernetes API" in result["msg"] and "K8S_AUTH_KUBECONFIG" in result["msg"]
    assert "Traceback" not in result["msg"]
