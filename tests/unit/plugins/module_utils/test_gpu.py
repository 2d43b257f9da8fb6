"""Unit tests for plugins/module_utils/gpu.py: classification, selectors, label plan, hardware.

The table in tests/unit/fixtures/gpu/nodes.yaml holds one real-world node object per labeling
scheme with the classification each must get; selectors are proven exact against that whole table
with a matcher independent of the module's own index.
"""

import copy
import os

import pytest
import yaml
from ansible_collections.llmops.serving.plugins.module_utils import (
    gpu,
    gpu_discovery,
    gpu_node,
    k8s_names,
    k8s_quantity,
)

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "gpu", "nodes.yaml")

with open(FIXTURE, encoding="utf-8") as _handle:
    TABLE = yaml.safe_load(_handle)
NODES = [entry["node"] for entry in TABLE["nodes"]]
ENTRIES = dict((entry["node"]["metadata"]["name"], entry) for entry in TABLE["nodes"])


def options(**overrides):
    opts = dict(TABLE["options"])
    opts.update(overrides)
    return gpu_node.build_options(**opts)


@pytest.fixture(scope="module")
def planned():
    return gpu_discovery.discover(copy.deepcopy(NODES), options(), allocations={})


@pytest.fixture(scope="module")
def unplanned():
    return gpu_discovery.discover(copy.deepcopy(NODES), options(plan_labels=False))


def _labels_after(result):
    """Node labels after applying the result's label_changes (what the cluster will hold)."""
    labels = dict((n["metadata"]["name"], dict(n["metadata"].get("labels") or {})) for n in NODES)
    for change in result["label_changes"]:
        for key, value in change["patch"]["metadata"]["labels"].items():
            if value is None:
                labels[change["node"]].pop(key, None)
            else:
                labels[change["node"]][key] = value
    return labels


def _matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


# ------------------------------------------------------------------------------------------ per node
@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_node_classification_matches_table(planned, name):
    expect = ENTRIES[name]["expect"]
    records = dict((r["name"], r) for r in planned["nodes"])
    if expect is None:
        assert name not in records
        return
    record = records[name]
    fields = {
        "gpu_type": "gpu_type", "gpu_types": "gpu_types", "scheme": "labeling_scheme", "vendor": "vendor",
        "count": "count", "memory_mib": "memory_mib", "resource_name": "resource_name",
        "gpus_allocatable": "gpus_allocatable", "driver_version": "driver_version", "ready": "ready",
        "cordoned": "cordoned", "schedulable": "schedulable", "blocks_gpu_pods": "blocks_gpu_pods",
        "is_k3s": "is_k3s", "runtime_class": "runtime_class", "family": "family",
        "llm_engine_gpu_type": "llm_engine_gpu_type",
    }
    for key, value in expect.items():
        if key in fields:
            assert record[fields[key]] == value, (name, key)
    if "sharing" in expect:
        assert record["sharing"]["mode"] == expect["sharing"]
    if "replicas" in expect:
        assert record["sharing"]["replicas"] == expect["replicas"]
    codes = sorted(set(w["code"] for w in planned["warnings"] if w["node"] == name))
    assert codes == sorted(expect.get("warnings", [])), name


@pytest.mark.parametrize("name", sorted(n for n, e in ENTRIES.items() if "label_action" in e or e["expect"]))
def test_label_plan_per_node(planned, name):
    entry = ENTRIES[name]
    changes = dict((c["node"], c) for c in planned["label_changes"])
    expected = entry.get("label_action", "add")
    if expected is None:
        assert name not in changes
    else:
        assert changes[name]["action"] == expected


# ------------------------------------------------------------------------------------------ types
def test_types_are_exactly_the_table_types(planned):
    assert sorted(planned["gpu_types"]) == sorted(TABLE["types"])


@pytest.mark.parametrize("gpu_type", sorted(TABLE["types"]))
def test_type_aggregate_matches_table(planned, gpu_type):
    expect = TABLE["types"][gpu_type]
    info = planned["gpu_types"][gpu_type]
    assert info["nodes"] == sorted(expect["nodes"])
    for key, value in expect.items():
        if key == "tolerations":
            assert sorted(map(sorted, (t.items() for t in info[key]))) == sorted(
                map(sorted, (t.items() for t in value)))
        elif key != "nodes":
            assert info[key] == value, (gpu_type, key)
    if "tolerations" not in expect:
        assert info["tolerations"] == []


@pytest.mark.parametrize("gpu_type", sorted(TABLE["types"]))
def test_selector_is_exact_against_whole_table(planned, gpu_type):
    """Each type's selector matches its nodes and no other node of the table (after labeling)."""
    labels = _labels_after(planned)
    info = planned["gpu_types"][gpu_type]
    assert info["node_selector"], gpu_type
    assert info["node_selector_exact"] is True
    matched = sorted(name for name, node_labels in labels.items() if _matches(info["node_selector"], node_labels))
    assert matched == info["nodes"]


def test_selectors_prefer_product_then_family_then_our_product_label(planned):
    sources = dict((t, i["node_selector_source"]) for t, i in planned["gpu_types"].items())
    assert sources["nvidia-hopper-h100"] == "product"
    assert sources["nvidia-ampere-a100"] == "family-memory"
    assert sources["nvidia-unknown"] == "gpu-product-label"
    # without our product label, an accelerator label that names the type itself is used
    unplanned = gpu_discovery.discover(
        [copy.deepcopy(ENTRIES["eks-a10g"]["node"]), copy.deepcopy(ENTRIES["gfd-t4"]["node"])],
        options(plan_labels=False))
    a10 = unplanned["gpu_types"]["nvidia-ampere-a10"]
    assert (a10["node_selector"], a10["node_selector_source"]) == (
        {"k8s.amazonaws.com/accelerator": "nvidia-ampere-a10"}, "accelerator-label")


def test_without_label_plan_selectors_use_only_existing_labels(unplanned):
    """No planned labels: exact where real labels allow, else flagged not exact with a warning."""
    labels = dict((n["metadata"]["name"], n["metadata"].get("labels") or {}) for n in NODES)
    assert unplanned["label_changes"] == []
    for gpu_type, info in unplanned["gpu_types"].items():
        matched = sorted(name for name, lab in labels.items() if _matches(info["node_selector"], lab))
        if info["node_selector_exact"]:
            assert matched == info["nodes"], gpu_type
        else:
            assert set(info["nodes"]) <= set(matched) or not info["node_selector"]
            assert any(w["code"] == "selector_not_exact" and gpu_type in w["message"]
                       for w in unplanned["warnings"])
    # a single unlabeled node falls back to its hostname label
    assert unplanned["gpu_types"]["nvidia-unknown"]["node_selector"] == {"kubernetes.io/hostname": "k3s-gpu"}
    assert unplanned["gpu_types"]["nvidia-unknown"]["node_selector_exact"] is True
    # two A10 nodes labeled by different schemes have no common label without the role's label
    assert unplanned["gpu_types"]["nvidia-ampere-a10"]["node_selector_exact"] is False


def test_choose_selector_falls_back_to_fewest_extra_nodes():
    index = gpu_discovery.LabelIndex({"a": {"x": "1", "y": "1"}, "b": {"x": "1", "y": "1"}, "c": {"x": "1", "y": "2"}})
    cands = {"a": {"product": [{"x": "1"}], "family-memory": [{"y": "1"}]},
             "b": {"product": [{"x": "1"}], "family-memory": [{"y": "1"}]}}
    assert gpu_discovery.choose_selector(["a", "b"], cands, index) == ({"y": "1"}, True, "family-memory")
    cands = {"a": {"product": [{"x": "1"}]}, "b": {"product": [{"x": "1"}]}}
    assert gpu_discovery.choose_selector(["a"], {"a": cands["a"]}, index) == ({"x": "1"}, False, "product")
    assert gpu_discovery.choose_selector(["a"], {"a": {}}, index) == ({}, False, None)


# ------------------------------------------------------------------------------------------ labels
def test_label_patches_only_touch_our_labels_and_annotation(planned):
    acc = "k8s.amazonaws.com/accelerator"
    for change in planned["label_changes"]:
        labels = change["patch"]["metadata"]["labels"]
        assert set(labels) <= {acc, gpu.GPU_PRODUCT_LABEL}
        assert set(change["patch"]["metadata"]["annotations"]) == {gpu.MANAGED_LABELS_ANNOTATION}
        # every accelerator value written is one LLM Engine accepts on create
        if labels.get(acc):
            assert labels[acc] in gpu.LLM_ENGINE_GPU_TYPES
            assert labels[acc] not in gpu.LLM_ENGINE_GPU_TYPES_REJECTED_ON_CREATE
    by_node = dict((c["node"], c) for c in planned["label_changes"])
    assert by_node["gfd-t4"]["patch"] == {"metadata": {
        "labels": {acc: "nvidia-tesla-t4", gpu.GPU_PRODUCT_LABEL: "nvidia-tesla-t4"},
        "annotations": {gpu.MANAGED_LABELS_ANNOTATION: "k8s.amazonaws.com/accelerator,llmops.serving/gpu-product"}}}
    assert by_node["gfd-h200"]["patch"]["metadata"]["labels"] == {
        acc: "nvidia-hopper-h100", gpu.GPU_PRODUCT_LABEL: "nvidia-hopper-h200"}
    assert by_node["cpu-stale"]["patch"] == {"metadata": {
        "labels": {acc: None},
        "annotations": {gpu.MANAGED_LABELS_ANNOTATION: None}}}
    # the L4 lost its old (managed) accelerator label: no LLM Engine type fits it
    assert (by_node["gfd-l4"]["old_value"], by_node["gfd-l4"]["new_value"]) == ("nvidia-tesla-t4", None)
    assert by_node["gfd-l4"]["patch"]["metadata"]["labels"] == {acc: None, gpu.GPU_PRODUCT_LABEL: "nvidia-ada-l4"}
    # foreign labels (EKS node group, an operator's own value) are never in a patch
    assert acc not in by_node["eks-a10g"]["patch"]["metadata"]["labels"]
    assert acc not in by_node["eks-conflict"]["patch"]["metadata"]["labels"]


def _apply(nodes, changes):
    nodes = copy.deepcopy(nodes)
    by_name = dict((n["metadata"]["name"], n) for n in nodes)
    for change in changes:
        meta = by_name[change["node"]]["metadata"]
        for section in ("labels", "annotations"):
            target = meta.setdefault(section, {})
            for key, value in change["patch"]["metadata"][section].items():
                if value is None:
                    target.pop(key, None)
                else:
                    target[key] = value
    return nodes


def test_second_run_after_labeling_changes_nothing_and_classifies_the_same(planned):
    relabeled = _apply(NODES, planned["label_changes"])
    again = gpu_discovery.discover(relabeled, options(), allocations={})
    assert again["label_changes"] == []
    assert [(r["name"], r["gpu_types"]) for r in again["nodes"]] == \
        [(r["name"], r["gpu_types"]) for r in planned["nodes"]]
    assert dict((t, i["node_selector"]) for t, i in again["gpu_types"].items()) == \
        dict((t, i["node_selector"]) for t, i in planned["gpu_types"].items())
    assert again["recommended_hardware"] == planned["recommended_hardware"]


def test_managed_label_is_not_evidence():
    node = copy.deepcopy(ENTRIES["k3s-gpu"]["node"])
    node["metadata"]["labels"]["k8s.amazonaws.com/accelerator"] = "nvidia-hopper-h100"
    node["metadata"]["annotations"] = {gpu.MANAGED_LABELS_ANNOTATION: "k8s.amazonaws.com/accelerator"}
    result = gpu_discovery.discover([node], options())
    assert result["nodes"][0]["gpu_type"] == "nvidia-unknown"
    assert result["label_changes"][0]["action"] == "update"
    # the same label set by someone else is evidence
    del node["metadata"]["annotations"]
    result = gpu_discovery.discover([node], options())
    assert result["nodes"][0]["gpu_type"] == "nvidia-hopper-h100"
    assert result["nodes"][0]["labeling_scheme"] == "accelerator-label"
    assert result["label_changes"][0]["patch"]["metadata"]["labels"] == {gpu.GPU_PRODUCT_LABEL: "nvidia-hopper-h100"}


def test_override_conflicting_with_foreign_label_is_reported_not_applied():
    node = copy.deepcopy(ENTRIES["eks-a10g"]["node"])
    result = gpu_discovery.discover([node], options(gpu_type_overrides={"eks-a10g": "nvidia-ada-l4"}))
    assert result["nodes"][0]["gpu_type"] == "nvidia-ada-l4"
    assert result["label_changes"][0]["patch"]["metadata"]["labels"] == {gpu.GPU_PRODUCT_LABEL: "nvidia-ada-l4"}
    assert sorted(w["code"] for w in result["warnings"]) == ["accelerator_label_conflict", "no_llm_engine_type"]
    conflict = [w for w in result["warnings"] if w["code"] == "accelerator_label_conflict"][0]["message"]
    assert "gpu_discovery_llm_engine_gpu_types: {'eks-a10g': 'nvidia-ampere-a10'}" in conflict
    assert result["gpu_types"]["nvidia-ada-l4"]["llm_engine_compatible"] is False


def test_other_managed_keys_are_kept_when_the_label_name_changes():
    node = copy.deepcopy(ENTRIES["gfd-t4"]["node"])
    node["metadata"]["labels"]["example.com/accel"] = "nvidia-tesla-t4"
    node["metadata"]["annotations"] = {gpu.MANAGED_LABELS_ANNOTATION: "example.com/accel"}
    result = gpu_discovery.discover([node], options(accelerator_label="k8s.amazonaws.com/accelerator"))
    patch = result["label_changes"][0]["patch"]["metadata"]
    assert patch["labels"] == {"k8s.amazonaws.com/accelerator": "nvidia-tesla-t4",
                               gpu.GPU_PRODUCT_LABEL: "nvidia-tesla-t4"}
    assert patch["annotations"] == {
        gpu.MANAGED_LABELS_ANNOTATION: "example.com/accel,k8s.amazonaws.com/accelerator,llmops.serving/gpu-product"}
    # and the other key is still recognised as ours when that label name is used again
    node["metadata"]["labels"]["example.com/accel"] = "nvidia-ada-l4"
    result = gpu_discovery.discover([node], options(accelerator_label="example.com/accel"))
    assert result["label_changes"][0]["action"] == "update"


def test_existing_correct_foreign_label_is_not_claimed():
    node = copy.deepcopy(ENTRIES["gfd-t4"]["node"])
    node["metadata"]["labels"]["k8s.amazonaws.com/accelerator"] = "nvidia-tesla-t4"
    result = gpu_discovery.discover([node], options())
    assert [c["patch"]["metadata"]["labels"] for c in result["label_changes"]] == [
        {gpu.GPU_PRODUCT_LABEL: "nvidia-tesla-t4"}]
    assert result["nodes"][0]["accelerator_label_managed"] is False


# ------------------------------------------------------------------------------------------ overrides
def test_override_by_node_name_maps_device_plugin_only_node():
    node = copy.deepcopy(ENTRIES["k3s-gpu"]["node"])
    result = gpu_discovery.discover([node], options(gpu_type_overrides={"k3s-gpu": "nvidia-ada-l40"}))
    record = result["nodes"][0]
    assert (record["gpu_type"], record["labeling_scheme"], record["memory_mib"]) == (
        "nvidia-ada-l40", "override", 49152)
    assert result["warnings"] == []
    assert result["gpu_types"]["nvidia-ada-l40"]["gpu_memory_gb"] == 48


def test_override_by_product_keeps_sharing_suffix():
    node = copy.deepcopy(ENTRIES["timeslice-t4"]["node"])
    result = gpu_discovery.discover([node], options(gpu_type_overrides={"Tesla-T4": "gpu-small"}))
    assert result["nodes"][0]["gpu_type"] == "gpu-small-shared"
    result = gpu_discovery.discover([node], options(gpu_type_overrides={"tesla t4 shared": "gpu-small"}))
    assert result["nodes"][0]["gpu_type"] == "gpu-small"


def test_unknown_product_mapped_by_override_has_no_warning():
    node = copy.deepcopy(ENTRIES["gfd-gtx"]["node"])
    overrides = {"NVIDIA-GeForce-GTX-1080-Ti": "nvidia-pascal-1080ti"}
    result = gpu_discovery.discover([node], options(gpu_type_overrides=overrides))
    assert result["nodes"][0]["gpu_type"] == "nvidia-pascal-1080ti"
    # the product is known now, but no LLM Engine type is known to fit it ...
    assert [w["code"] for w in result["warnings"]] == ["no_llm_engine_type"]
    # ... until that is mapped too
    result = gpu_discovery.discover([node], options(gpu_type_overrides=overrides,
                                                    llm_engine_gpu_types={"nvidia-pascal-1080ti": "nvidia-tesla-t4"}))
    assert [w["code"] for w in result["warnings"]] == []
    assert result["nodes"][0]["llm_engine_gpu_type"] == "nvidia-tesla-t4"


def test_unused_override_is_reported():
    result = gpu_discovery.discover(copy.deepcopy(NODES), options(gpu_type_overrides={"k3s-gpuu": "nvidia-ada-l40"}))
    assert [w for w in result["warnings"] if w["code"] == "unused_override" and "k3s-gpuu" in w["message"]]


@pytest.mark.parametrize("kwargs, needle", [
    ({"accelerator_label": "not a label"}, "accelerator_label 'not a label'"),
    ({"accelerator_label": "a/b/c"}, "accelerator_label"),
    ({"gpu_type_overrides": {"n1": "Has Spaces"}}, "gpu_type_overrides['n1']"),
    ({"gpu_type_overrides": {"n1": "x" * 64}}, "at most 63"),
    ({"gpu_type_overrides": {"n1": None}}, "gpu_type_overrides['n1']"),
    ({"label_aliases": {"example.com/gpu": "model"}}, "must be one of gpu_type, product, family, memory, count"),
    ({"label_aliases": {"bad key!": "product"}}, "label_aliases key 'bad key!'"),
])
def test_bad_options_raise_with_the_input_named(kwargs, needle):
    with pytest.raises(gpu.DiscoveryError) as err:
        gpu_node.build_options(**kwargs)
    assert needle in str(err.value)


# ------------------------------------------------------------------------------------------ products
@pytest.mark.parametrize("product, memory, expected", [
    ("Tesla-T4", None, "nvidia-tesla-t4"),
    ("NVIDIA-A10", None, "nvidia-ampere-a10"),
    ("NVIDIA-A10G", None, "nvidia-ampere-a10"),
    ("NVIDIA-A100-PCIE-40GB", None, "nvidia-ampere-a100"),
    ("NVIDIA-A100-SXM4-40GB", None, "nvidia-ampere-a100"),
    ("NVIDIA-A100-SXM4-80GB", None, "nvidia-ampere-a100-80gb"),
    ("NVIDIA-A100-80GB-PCIe", None, "nvidia-ampere-a100-80gb"),
    ("a100", 81920, "nvidia-ampere-a100-80gb"),
    ("a100", 40960, "nvidia-ampere-a100"),
    ("nvidia-tesla-a100", None, "nvidia-ampere-a100"),
    ("nvidia-a100-80gb", None, "nvidia-ampere-a100-80gb"),
    ("NVIDIA-H100-80GB-HBM3", None, "nvidia-hopper-h100"),
    ("NVIDIA-H100-PCIe", None, "nvidia-hopper-h100-pcie"),
    ("NVIDIA-H100-NVL", None, "nvidia-hopper-h100-nvl"),
    ("nvidia-h100-mega-80gb", None, "nvidia-hopper-h100"),
    ("NVIDIA-H200", None, "nvidia-hopper-h200"),
    ("nvidia-h200-141gb", None, "nvidia-hopper-h200"),
    ("NVIDIA-GH200-480GB", None, "nvidia-hopper-gh200"),
    ("NVIDIA-H20", None, "nvidia-hopper-h20"),
    ("NVIDIA-L4", None, "nvidia-ada-l4"),
    ("NVIDIA-L40", None, "nvidia-ada-l40"),
    ("NVIDIA-L40S", None, "nvidia-ada-l40s"),
    ("nvidia-l4", None, "nvidia-ada-l4"),
    ("NVIDIA RTX 6000 Ada Generation", None, "nvidia-ada-rtx-6000"),
    ("NVIDIA-RTX-A6000", None, "nvidia-ampere-rtx-a6000"),
    ("NVIDIA-GeForce-RTX-4090", None, "nvidia-ada-rtx-4090"),
    ("Tesla-V100-SXM2-16GB", None, "nvidia-tesla-v100"),
    ("Tesla-V100-SXM2-32GB", 32510, "nvidia-tesla-v100-32gb"),
    ("NVIDIA-B200", None, "nvidia-blackwell-b200"),
    ("NVIDIA-GB200", None, "nvidia-blackwell-gb200"),
    ("AMD_Instinct_MI300X_OAM", None, "amd-instinct-mi300x"),
    ("AMD Instinct MI250X", None, "amd-instinct-mi250x"),
    ("Max_1550", None, "intel-max-1550"),
    ("Flex_170", None, "intel-flex-170"),
    ("NVIDIA-RTX-A1000", None, None),   # "A10" must not match inside "A1000"
    ("NVIDIA-A1000-6GB", None, None),
    ("NVIDIA-GeForce-GTX-1080-Ti", None, None),
])
def test_product_table(product, memory, expected):
    found = gpu.match_product(product, memory)
    assert (found[0] if found else None) == expected


@pytest.mark.parametrize("family, memory, expected, ambiguous", [
    ("turing", 15360, "nvidia-tesla-t4", False),
    ("turing", 15109, "nvidia-tesla-t4", False),
    ("ampere", 40960, "nvidia-ampere-a100", False),
    ("ampere", 81920, "nvidia-ampere-a100-80gb", False),
    ("ampere", 23028, "nvidia-ampere-a10", False),
    ("hopper", 81559, "nvidia-hopper-80gb", True),  # SXM or PCIe,
    ("hopper", 143771, "nvidia-hopper-h200", False),
    ("ada-lovelace", 23034, "nvidia-ada-l4", False),
    ("ada-lovelace", 46068, "nvidia-ada-45gb", True),
    ("ampere", 49140, "nvidia-ampere-48gb", True),
    ("hopper", None, "nvidia-hopper", True),
])
def test_family_memory_table(family, memory, expected, ambiguous):
    assert gpu.family_memory_type(family, memory) == (expected, ambiguous)


@pytest.mark.parametrize("instance_type, expected", [
    ("g4dn.xlarge", "nvidia-tesla-t4"), ("g5.12xlarge", "nvidia-ampere-a10"), ("g6.xlarge", "nvidia-ada-l4"),
    ("g6e.2xlarge", "nvidia-ada-l40s"), ("p4d.24xlarge", "nvidia-ampere-a100"),
    ("p4de.24xlarge", "nvidia-ampere-a100-80gb"), ("p5.48xlarge", "nvidia-hopper-h100"),
    ("p5e.48xlarge", "nvidia-hopper-h200"), ("a2-ultragpu-1g", "nvidia-ampere-a100-80gb"),
    ("a3-highgpu-8g", "nvidia-hopper-h100"), ("Standard_ND96isr_H100_v5", "nvidia-hopper-h100"),
    ("m5.large", None), ("k3s", None),
])
def test_instance_type_table(instance_type, expected):
    product = gpu.instance_type_product(instance_type)
    found = gpu.match_product(product) if product else None
    assert (found[0] if found else None) == expected


def test_every_table_type_is_a_valid_label_value():
    for gpu_type in gpu.KNOWN_GPU_TYPES:
        assert k8s_names.is_valid_label_value(gpu_type), gpu_type
    assert gpu.unknown_product_type("nvidia", "NVIDIA GeForce RTX 2080 SUPER (rev a1)") == \
        "nvidia-geforce-rtx-2080-super-rev-a1"
    assert len(gpu.unknown_product_type("nvidia", "X" * 200)) <= 63


def test_llm_engine_names_are_used_where_they_exist():
    names = set(gpu.KNOWN_GPU_TYPES)
    for name in ("nvidia-tesla-t4", "nvidia-ampere-a10", "nvidia-ampere-a100", "nvidia-ampere-a100e",
                 "nvidia-hopper-h100"):
        assert name in names
    node = copy.deepcopy(ENTRIES["mig-single-h100"]["node"])
    node["metadata"]["labels"]["nvidia.com/gpu.product"] = "NVIDIA-H100-80GB-HBM3-MIG-3g.40gb"
    assert gpu_discovery.discover([node], options())["nodes"][0]["gpu_type"] == "nvidia-hopper-h100-3g40gb"


# ------------------------------------------------------------------------------------------ warnings
def test_mixed_driver_versions_warn_once(planned):
    found = [w for w in planned["warnings"] if w["code"] == "mixed_driver_versions"]
    assert len(found) == 1
    assert "535.216.03 on gfd-gtx, timeslice-t4" in found[0]["message"]
    single = gpu_discovery.discover(
        [copy.deepcopy(ENTRIES["gfd-t4"]["node"]), copy.deepcopy(ENTRIES["gfd-a10g"]["node"])], options())
    assert not [w for w in single["warnings"] if w["code"] == "mixed_driver_versions"]


def test_cpu_only_cluster_has_no_gpu_types():
    result = gpu_discovery.discover([copy.deepcopy(ENTRIES["cpu-1"]["node"])], options())
    assert result["nodes"] == [] and result["gpu_types"] == {}
    assert result["summary"]["gpus_schedulable"] == 0
    assert result["recommended_hardware"] == {"byGpuMemoryGb": [], "byModelName": []}


def test_summary_counts(planned):
    summary = planned["summary"]
    assert summary["nodes_total"] == len(NODES)
    assert summary["cpu_nodes"] == 2
    assert summary["gpu_nodes"] == len(NODES) - 2
    assert summary["vendors"] == ["amd", "habana", "intel", "nvidia"]
    assert summary["k3s_nodes"] == ["k3s-gpu"]
    assert planned["is_k3s"] is False
    k3s_only = gpu_discovery.discover([copy.deepcopy(ENTRIES["k3s-gpu"]["node"])], options())
    assert k3s_only["is_k3s"] is True


# ------------------------------------------------------------------------------------------ allocations
def _pod(node, gpus=None, phase="Running", init=None, sidecar=None, resource="nvidia.com/gpu", limits_only=False):
    containers = [{"name": "main", "resources": {}}]
    if gpus is not None:
        res = {resource: str(gpus)}
        containers[0]["resources"] = {"limits": res} if limits_only else {"limits": res, "requests": res}
    spec = {"nodeName": node, "containers": containers}
    inits = []
    if init is not None:
        inits.append({"name": "init", "resources": {"limits": {resource: str(init)}}})
    if sidecar is not None:
        inits.insert(0, {"name": "side", "restartPolicy": "Always", "resources": {"limits": {resource: str(sidecar)}}})
    if inits:
        spec["initContainers"] = inits
    return {"metadata": {"name": "p"}, "spec": spec, "status": {"phase": phase}}


def test_pod_gpu_requests_follow_scheduler_rules():
    assert gpu_node.pod_gpu_requests(_pod("n", 2)) == ("n", {"nvidia.com/gpu": 2})
    assert gpu_node.pod_gpu_requests(_pod("n", 2, limits_only=True)) == ("n", {"nvidia.com/gpu": 2})
    assert gpu_node.pod_gpu_requests(_pod("n", 1, init=4)) == ("n", {"nvidia.com/gpu": 4})
    assert gpu_node.pod_gpu_requests(_pod("n", 1, sidecar=1)) == ("n", {"nvidia.com/gpu": 2})
    assert gpu_node.pod_gpu_requests(_pod("n", 1, sidecar=1, init=2)) == ("n", {"nvidia.com/gpu": 3})
    assert gpu_node.pod_gpu_requests(_pod("n", 2, phase="Succeeded")) is None
    assert gpu_node.pod_gpu_requests(_pod(None, 2)) is None
    assert gpu_node.pod_gpu_requests(_pod("n")) is None
    assert gpu_node.pod_gpu_requests(_pod("n", 1, resource="nvidia.com/mig-1g.10gb")) == \
        ("n", {"nvidia.com/mig-1g.10gb": 1})


def test_allocations_give_free_gpus_per_node_and_type():
    pods = [_pod("gfd-h100-a", 3), _pod("gfd-h100-a", 1), _pod("gfd-h100-b", 8), _pod("gfd-h100-down", 2),
            _pod("mig-mixed-a100", 2, resource="nvidia.com/mig-1g.10gb"), _pod("gfd-h100-a", 8, phase="Failed")]
    allocations = gpu_node.add_pod_allocations({}, pods)
    result = gpu_discovery.discover(copy.deepcopy(NODES), options(), allocations=allocations)
    records = dict((r["name"], r) for r in result["nodes"])
    assert (records["gfd-h100-a"]["gpus_allocated"], records["gfd-h100-a"]["gpus_free"]) == (4, 4)
    assert records["gfd-h100-b"]["gpus_free"] == 0
    h100 = result["gpu_types"]["nvidia-hopper-h100"]
    assert (h100["gpus_total"], h100["gpus_schedulable"], h100["gpus_free"]) == (24, 16, 4)
    assert result["gpu_types"]["nvidia-ampere-a100-80gb-1g10gb"]["gpus_free"] == 5
    assert result["gpu_types"]["nvidia-ampere-a100-80gb-3g40gb"]["gpus_free"] == 2
    assert records["mig-mixed-a100"]["resources"]["nvidia.com/mig-1g.10gb"] == {
        "capacity": 7, "allocatable": 7, "allocated": 2, "free": 5}


def test_without_allocations_free_is_unknown(unplanned):
    assert all(r["gpus_free"] is None and r["gpus_allocated"] is None for r in unplanned["nodes"])
    assert all(t["gpus_free"] is None for t in unplanned["gpu_types"].values())
    assert unplanned["summary"]["gpus_free"] is None


# ------------------------------------------------------------------------------------------ hardware
def test_recommended_hardware_shape_and_order(planned):
    entries = planned["recommended_hardware"]["byGpuMemoryGb"]
    assert planned["recommended_hardware"]["byModelName"] == []
    assert entries
    keys = {"gpu_memory_le", "cpus", "gpus", "memory", "storage", "gpu_type", "nodes_per_worker"}
    les = [e["gpu_memory_le"] for e in entries]
    assert les == sorted(set(les))
    for entry in entries:
        assert set(entry) == keys
        assert entry["memory"].endswith("Gi") and entry["storage"].endswith("Gi")
        assert entry["nodes_per_worker"] == 1
        assert planned["gpu_types"][entry["gpu_type"]]["llm_engine_compatible"] is True


def test_recommended_hardware_excludes_what_llm_engine_cannot_place(planned):
    used = set(e["gpu_type"] for e in planned["recommended_hardware"]["byGpuMemoryGb"])
    types = planned["gpu_types"]
    for name in ("nvidia-tesla-t4-shared", "nvidia-ampere-a10-shared", "nvidia-ampere-a100-80gb-1g10gb",
                 "amd-instinct-mi300x", "nvidia-ada-l40s", "nvidia-unknown", "habana-unknown"):
        assert name not in used
        assert types[name]["llm_engine_compatible"] is False
        assert types[name]["llm_engine_reason"]
    assert "taints" in types["nvidia-ada-l40s"]["llm_engine_reason"]
    assert "shared" in types["nvidia-tesla-t4-shared"]["llm_engine_reason"]


def test_recommended_storage_never_exceeds_node_ephemeral_storage():
    """The 189Gi A100 node: storage is capped at 90% of it even for 8 GPUs (320 GB of GPU memory)."""
    node = copy.deepcopy(ENTRIES["family-a100"]["node"])
    entries = gpu_discovery.discover([node], options())["recommended_hardware"]["byGpuMemoryGb"]
    assert [(e["gpus"], e["gpu_memory_le"], e["storage"]) for e in entries] == [
        (1, 40, "50Gi"), (2, 80, "100Gi"), (4, 160, "170Gi"), (8, 320, "170Gi")]
    for entry in entries:
        assert int(entry["storage"][:-2]) * gpu.GIB <= 189 * gpu.GIB
    # cpus and memory are the node's share per GPU count (95 CPUs, 1120Gi, 8 GPUs)
    # memory is capped at LLM Engine's per-worker limit for nvidia-ampere-a100 (1000Gi - 2Gi forwarder)
    assert [(e["cpus"], e["memory"]) for e in entries] == [
        (9, "126Gi"), (20, "252Gi"), (41, "504Gi"), (84, "998Gi")]


def test_recommended_hardware_needs_the_accelerator_label():
    node = copy.deepcopy(ENTRIES["gfd-t4"]["node"])
    assert gpu_discovery.discover([node], options(plan_labels=False))["recommended_hardware"]["byGpuMemoryGb"] == []
    entries = gpu_discovery.discover([node], options())["recommended_hardware"]["byGpuMemoryGb"]
    assert entries == [{"gpu_memory_le": 16, "cpus": 2, "gpus": 1, "memory": "13Gi", "storage": "20Gi",
                        "gpu_type": "nvidia-tesla-t4", "nodes_per_worker": 1}]


def test_recommended_hardware_prefers_fewer_gpus_for_equal_memory(planned):
    entries = dict((e["gpu_memory_le"], e) for e in planned["recommended_hardware"]["byGpuMemoryGb"])
    # 80 GB: one H100/A100-80GB beats two A100-40GB
    assert entries[80]["gpus"] == 1
    assert entries[16]["gpu_type"] == "nvidia-tesla-t4"


# ------------------------------------------------------------------------------------------ parsers
@pytest.mark.parametrize("value, expected", [
    ("7910m", 7.91), ("31Gi", 31 * 1024 ** 3), ("100M", 1e8), ("1e3", 1000.0), ("8", 8.0), ("0.5", 0.5),
    ("189Gi", 189 * 1024 ** 3), ("12Ki", 12 * 1024), (None, None), ("junk", None), ("5Xi", None),
])
def test_parse_quantity(value, expected):
    assert k8s_quantity.parse_quantity(value) == expected


@pytest.mark.parametrize("value, expected", [
    ("15360", 15360), ("192G", 196608), ("80Gi", 81920), ("48GB", 49152), ("1T", 1048576), ("x", None),
    (None, None),
])
def test_parse_memory_mib(value, expected):
    assert k8s_quantity.parse_memory_mib(value) == expected


def test_prune_node_keeps_what_discovery_reads():
    node = copy.deepcopy(ENTRIES["k3s-gpu"]["node"])
    node["metadata"]["managedFields"] = [{"manager": "kubelet"}] * 10
    node["metadata"]["annotations"] = {"node.alpha.kubernetes.io/ttl": "0", "k3s.io/node-args": "[]",
                                       gpu.MANAGED_LABELS_ANNOTATION: "x"}
    node["status"]["images"] = [{"names": ["a"], "sizeBytes": 1}] * 50
    pruned = gpu_node.prune_node(node)
    assert "managedFields" not in pruned["metadata"] and "images" not in pruned["status"]
    assert set(pruned["metadata"]["annotations"]) == {"k3s.io/node-args", gpu.MANAGED_LABELS_ANNOTATION}
    opts = options()
    assert gpu_node.classify_node(pruned, opts, None) == gpu_node.classify_node(node, opts, None)


def test_eks_label_is_evidence_under_another_accelerator_label_name():
    node = copy.deepcopy(ENTRIES["eks-a10g"]["node"])
    result = gpu_discovery.discover([node], options(accelerator_label="example.com/accelerator"))
    record = result["nodes"][0]
    assert (record["gpu_type"], record["labeling_scheme"]) == ("nvidia-ampere-a10", "eks")
    assert result["label_changes"][0]["patch"]["metadata"]["labels"] == {
        "example.com/accelerator": "nvidia-ampere-a10", gpu.GPU_PRODUCT_LABEL: "nvidia-ampere-a10"}
    # ... but not when we set it ourselves
    node["metadata"]["annotations"] = {gpu.MANAGED_LABELS_ANNOTATION: "k8s.amazonaws.com/accelerator"}
    record = gpu_discovery.discover([node], options(accelerator_label="example.com/accelerator"))["nodes"][0]
    assert (record["gpu_type"], record["labeling_scheme"]) == ("nvidia-ampere-a10", "instance-type")
