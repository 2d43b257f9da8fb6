"""gpu_node_info and the gpu_discovery role against the sandbox (real apiserver, scheduler, kwok nodes).

Ground truth is tests/sandbox/nodes.yaml. The role is exercised end to end on a label of its own
(``it-gpu.llmops.serving/accelerator``) so check mode, first run and second run are observable
whatever other sessions did; that label is removed again at the end. The role is also run with the
real accelerator label (other roles rely on it), and pods shaped like LLM Engine endpoint pods must
then schedule on a node of the right type for every type present.

Each node's accelerator label must hold a value of the pinned LLM Engine's own ``GpuType`` enum
(imported from the pinned checkout tests/helpers/upstream.py finds), or discovery must say why none fits
and how to map it. GPU Feature Discovery-labelled H200, L40S and L4 nodes are added for that test
only (kwok nodes, deleted again), so the node and GPU counts of nodes.yaml stay as they are.

Failure paths the shared cluster cannot show (no GPU at all, RBAC refusal) run against a tiny
HTTP stand-in for the API server on 127.0.0.1 that records every request, to prove that nothing is
patched before the role fails.
"""

import importlib.util
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
from tests.helpers.upstream import upstream_dir

pytestmark = pytest.mark.sandbox

NODES_FILE = os.path.join(REPO_ROOT, "tests", "sandbox", "nodes.yaml")
REAL_LABEL = "k8s.amazonaws.com/accelerator"
TEST_LABEL = "it-gpu.llmops.serving/accelerator"
PRODUCT_LABEL = "llmops.serving/gpu-product"
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
# The LLM Engine gpu_type each node's accelerator label carries: the L40 runs what an A10 runs, the
# time-sliced T4 has no memory isolation and the MIG mixed node several types, so those two get none.
LLM_TYPES = {
    "sbx-t4-gfd": "nvidia-tesla-t4",
    "sbx-a100-family": "nvidia-ampere-a100",
    "sbx-l40-k3s": "nvidia-ampere-a10",
    "sbx-h100-gfd": "nvidia-hopper-h100",
    "sbx-eks-a10g": "nvidia-ampere-a10",
}
# Nodes whose GPUs are of one type get the product label; those with an LLM Engine type the accelerator label.
PRODUCTS = dict((name, types[0]) for name, (types, _s, _m) in EXPECTED.items() if len(types) == 1)
LABELED = dict(LLM_TYPES)


def upstream_gpu_types():
    """Values of the pinned LLM Engine's GpuType enum, from its own module (it needs only ``enum``)."""
    path = os.path.join(upstream_dir(), "model-engine", "model_engine_server", "domain", "entities", "gpu_type.py")
    assert os.path.isfile(path), "pinned LLM Engine not found at %s: run `make upstream` or set " \
        "LLMOPS_UPSTREAM_LLM_ENGINE" % path
    spec = importlib.util.spec_from_file_location("upstream_gpu_type", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return set(member.value for member in module.GpuType)


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
        assert record["llm_engine_gpu_type"] == LLM_TYPES.get(name), name
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
    label_results = task_results(run, ROLE_PREFIX + "Label GPU nodes with their LLM Engine gpu_type and product")
    assert label_results and label_results[0]["changed"] is True
    items = label_results[0]["results"]
    # every node that gets the test label, and any single-type GPU node still without our product label
    unlabeled = set(n for n, product in PRODUCTS.items() if before[n].get(PRODUCT_LABEL) != product)
    assert sorted(i["item"]["node"] for i in items) == sorted(set(LABELED) | unlabeled)
    assert all(i["changed"] and i.get("diff") for i in items)
    assert node_labels() == before

    # first run: the label lands on exactly the single-type GPU nodes; nothing else changes
    run, facts = run_role(role_vars)
    assert run["rc"] == 0, _fail_text(run)
    after = node_labels()
    ours = (TEST_LABEL, REAL_LABEL, PRODUCT_LABEL)
    for name, labels in after.items():
        if name in LABELED:
            assert labels.get(TEST_LABEL) == LABELED[name], name
        else:
            assert TEST_LABEL not in labels, name
        if name in PRODUCTS:
            assert labels.get(PRODUCT_LABEL) == PRODUCTS[name], name
        else:
            assert PRODUCT_LABEL not in labels, name
        other = dict((k, v) for k, v in labels.items() if k not in ours)
        assert other == dict((k, v) for k, v in before.get(name, {}).items() if k not in ours)
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


def _llm_engine_pod_round(by_llm_type, extra_selector=None):
    """One pod per LLM Engine gpu_type shaped like LLM Engine's endpoint pods (nodeSelector
    ``k8s.amazonaws.com/accelerator: ${GPU_TYPE}`` plus the ``nvidia.com/gpu`` toleration,
    charts/model-engine/templates/service_template_config_map.yaml:104-112 of the pinned chart, and an
    ``nvidia.com/gpu`` limit); each must land on one of the nodes given for its type."""
    llm_toleration = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    specs = {}
    for llm_type, nodes in by_llm_type.items():
        selector = {REAL_LABEL: llm_type}
        selector.update(extra_selector or {})
        specs[llm_type] = (selector, llm_toleration, "nvidia.com/gpu", nodes)
    _schedule_round(specs)


def test_role_real_label_lets_llm_engine_pods_schedule(sandbox_env, gpu_namespace):
    role_vars = {"gpu_discovery_gpu_type_overrides": OVERRIDES}
    run, facts = run_role(role_vars)
    assert run["rc"] == 0, _fail_text(run)
    labels = node_labels()
    accepted = upstream_gpu_types()
    for name in EXPECTED:
        assert labels[name].get(REAL_LABEL) == LLM_TYPES.get(name), name
        assert labels[name].get(PRODUCT_LABEL) == PRODUCTS.get(name), name
        # what an endpoint can ask for: a value of the pinned server's own GpuType enum
        assert labels[name].get(REAL_LABEL) in accepted | {None}, name
    run, _again = run_role(role_vars)
    assert run["rc"] == 0, _fail_text(run)
    assert total_changed(run) == 0, _fail_text(run)

    # the types without an LLM Engine type say why and how to map them
    types = facts["types"]
    shared = types["nvidia-tesla-t4-shared"]
    assert (shared["llm_engine_gpu_type"], shared["llm_engine_compatible"]) == (None, False)
    assert "without memory isolation" in shared["llm_engine_reason"]
    assert "gpu_discovery_llm_engine_gpu_types: {'Tesla-T4-SHARED': <gpu_type>}" in shared["llm_engine_reason"]
    compatible = dict((t, i) for t, i in types.items() if i["llm_engine_compatible"])
    assert sorted(compatible) == sorted(["nvidia-ada-l40", "nvidia-ampere-a10", "nvidia-ampere-a100",
                                         "nvidia-hopper-h100", "nvidia-tesla-t4"])
    pools = {}
    for info in compatible.values():
        pools.setdefault(info["llm_engine_gpu_type"], []).extend(info["nodes"])
    assert sorted(pools) == ["nvidia-ampere-a10", "nvidia-ampere-a100", "nvidia-hopper-h100", "nvidia-tesla-t4"]
    _llm_engine_pod_round(pools)
    hardware = facts["hardware"]["byGpuMemoryGb"]
    assert set(e["gpu_type"] for e in hardware) == set(pools) and set(pools) <= accepted
    # the A10 pool (A10G and L40) counts the A10G's 24 GB; storage on the 189Gi A100 node stays under it
    assert [e["gpu_memory_le"] for e in hardware if e["gpu_type"] == "nvidia-ampere-a10"][0] == 24
    for entry in hardware:
        limit = min(i["ephemeral_storage_bytes_min"] for i in compatible.values()
                    if i["llm_engine_gpu_type"] == entry["gpu_type"])
        assert int(entry["storage"][:-2]) * 2 ** 30 <= limit, entry


# GPU Feature Discovery labels: the H200's are those GFD v0.18.0 put on a real H200 (FACTS.md section 0).
GFD_NODES = {
    "it-gfd-h200": ("NVIDIA-H200", "143771", "hopper", "9", "0", "1", ("580", "159", "04")),
    "it-gfd-l40s": ("NVIDIA-L40S", "46068", "ada-lovelace", "8", "9", "4", ("550", "127", "08")),
    "it-gfd-l4": ("NVIDIA-L4", "23034", "ada-lovelace", "8", "9", "1", ("550", "127", "08")),
}


def _gfd_node(name):
    product, memory, family, major, minor, count, driver = GFD_NODES[name]
    resources = {"cpu": "32", "memory": "256Gi", "ephemeral-storage": "900Gi", "pods": "110", "nvidia.com/gpu": count}
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
              "type": "kwok", "node-lifecycle": "normal",
              "nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": product,
              "nvidia.com/gpu.memory": memory, "nvidia.com/gpu.family": family,
              "nvidia.com/gpu.compute.major": major, "nvidia.com/gpu.compute.minor": minor,
              "nvidia.com/gpu.count": count, "nvidia.com/gpu.replicas": "1",
              "nvidia.com/gpu.sharing-strategy": "none", "nvidia.com/gpu.mode": "compute",
              "nvidia.com/mig.capable": "true" if "H200" in product else "false",
              "nvidia.com/cuda.driver-version.major": driver[0],
              "nvidia.com/cuda.driver-version.minor": driver[1],
              "nvidia.com/cuda.driver-version.revision": driver[2]}
    node_info = {"kubeletVersion": "v1.34.4", "containerRuntimeVersion": "containerd://1.7.24",
                 "operatingSystem": "linux", "architecture": "amd64"}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake"}, "labels": labels},
            "status": {"capacity": resources, "allocatable": resources, "nodeInfo": node_info}}


@pytest.fixture
def gfd_nodes(sandbox_env, gpu_namespace):
    """H200, L40S and L4 kwok nodes for one test; deleted afterwards (nodes.yaml's counts stay true)."""
    for name in GFD_NODES:
        kubectl("create", "-f", "-", input_text=json.dumps(_gfd_node(name)))
    deadline = time.time() + 60
    while time.time() < deadline:
        ready = [n for n in kubectl_json("get", "nodes")["items"] if n["metadata"]["name"] in GFD_NODES and any(
            c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions") or [])]
        if len(ready) == len(GFD_NODES):
            break
        time.sleep(1)
    try:
        yield sorted(GFD_NODES)
    finally:
        _delete_pods()
        kubectl("delete", "node", *sorted(GFD_NODES), "--wait=true", check=False)


def test_gfd_h200_l40s_l4_nodes_get_an_accepted_type_or_say_why_not(gfd_nodes):
    role_vars = {"gpu_discovery_gpu_type_overrides": OVERRIDES}
    run, facts = run_role(role_vars)
    assert run["rc"] == 0, _fail_text(run)
    labels = node_labels()
    records = dict((r["name"], r) for r in facts["nodes"])
    accepted = upstream_gpu_types()
    # the H200 runs what an H100 runs; the L40S what an A10 runs (an A100 has more memory bandwidth)
    assert (labels["it-gfd-h200"].get(REAL_LABEL), labels["it-gfd-h200"].get(PRODUCT_LABEL)) == (
        "nvidia-hopper-h100", "nvidia-hopper-h200")
    assert (labels["it-gfd-l40s"].get(REAL_LABEL), labels["it-gfd-l40s"].get(PRODUCT_LABEL)) == (
        "nvidia-ampere-a10", "nvidia-ada-l40s")
    assert {labels[n][REAL_LABEL] for n in ("it-gfd-h200", "it-gfd-l40s")} <= accepted
    assert records["it-gfd-h200"]["driver_version"] == "580.159.04"
    # the L4 has less memory bandwidth than a T4: no accelerator label, and discovery says why and how to map it
    assert REAL_LABEL not in labels["it-gfd-l4"] and labels["it-gfd-l4"][PRODUCT_LABEL] == "nvidia-ada-l4"
    l4 = facts["types"]["nvidia-ada-l4"]
    assert (l4["llm_engine_gpu_type"], l4["llm_engine_compatible"]) == (None, False)
    assert "memory bandwidth" in l4["llm_engine_reason"]
    assert "gpu_discovery_llm_engine_gpu_types: {'NVIDIA-L4': nvidia-tesla-t4}" in l4["llm_engine_reason"]
    warned = [m for m in task_results(run, ROLE_PREFIX + "Discover GPU nodes, types and node selectors")[0]
              .get("warnings", []) if "it-gfd-l4" in m]
    assert warned and "no LLM Engine gpu_type fits" in warned[0]
    # recommendedHardware: accepted types only, the H200's real 141 GB, within LLM Engine's limits
    hardware = facts["hardware"]["byGpuMemoryGb"]
    assert set(e["gpu_type"] for e in hardware) <= accepted
    assert any(e["gpu_type"] == "nvidia-hopper-h100" and e["gpu_memory_le"] == 80 * e["gpus"] for e in hardware)
    # LLM Engine-shaped pods asking for those types land on these very nodes
    _llm_engine_pod_round({"nvidia-hopper-h100": ["it-gfd-h200"]}, {"kubernetes.io/hostname": "it-gfd-h200"})
    _llm_engine_pod_round({"nvidia-ampere-a10": ["it-gfd-l40s"]}, {"kubernetes.io/hostname": "it-gfd-l40s"})

    # the mapping the reason names works, and is validated against the enum
    mapped = dict(role_vars, gpu_discovery_llm_engine_gpu_types={"NVIDIA-L4": "nvidia-tesla-t4"})
    run, facts = run_role(mapped)
    assert run["rc"] == 0, _fail_text(run)
    assert node_labels()["it-gfd-l4"].get(REAL_LABEL) == "nvidia-tesla-t4"
    assert facts["types"]["nvidia-ada-l4"]["llm_engine_compatible"] is True
    _llm_engine_pod_round({"nvidia-tesla-t4": ["it-gfd-l4"]}, {"kubernetes.io/hostname": "it-gfd-l4"})
    before = node_labels()
    run, _facts = run_role(dict(role_vars, gpu_discovery_llm_engine_gpu_types={"NVIDIA-L4": "nvidia-ada-l4"}))
    assert run["rc"] != 0
    assert "llm_engine_gpu_types['NVIDIA-L4'] = 'nvidia-ada-l4' is not an LLM Engine gpu_type" in _fail_text(run)
    assert node_labels() == before
    # back without the mapping: our accelerator label leaves the L4 again
    run, _facts = run_role(role_vars)
    assert run["rc"] == 0, _fail_text(run)
    assert REAL_LABEL not in node_labels()["it-gfd-l4"]


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
