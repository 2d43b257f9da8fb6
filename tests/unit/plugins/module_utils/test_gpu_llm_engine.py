"""Unit tests for the LLM Engine gpu_type decision in plugins/module_utils/gpu.py.

Nodes carry GPU Feature Discovery labels: the H200 node has the labels GFD v0.18.0 put on a real H200
(shared/design/FACTS.md section 0); L40S and L4 carry GFD's product names and memory figures. What
LLM Engine accepts is checked against the pinned upstream source in
tests/contract/test_llm_engine_gpu_contract.py; here the decision itself is pinned down.
"""

import copy

import pytest
from ansible_collections.llmops.serving.plugins.module_utils import gpu, gpu_discovery, gpu_node
from ansible_collections.llmops.serving.plugins.module_utils import model_engine_values as me

ACC = gpu.DEFAULT_ACCELERATOR_LABEL
WHOLE = ("nvidia-tesla-t4", "nvidia-ampere-a10", "nvidia-ampere-a100", "nvidia-hopper-h100")


def gfd_node(name, product, memory, family, major, minor, gpus=1, cpu="32", mem="256Gi", disk="1000Gi",
             driver=("550", "127", "08"), extra=None):
    labels = {
        "kubernetes.io/hostname": name,
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": product,
        "nvidia.com/gpu.memory": str(memory),
        "nvidia.com/gpu.family": family,
        "nvidia.com/gpu.compute.major": str(major),
        "nvidia.com/gpu.compute.minor": str(minor),
        "nvidia.com/gpu.count": str(gpus),
        "nvidia.com/gpu.replicas": "1",
        "nvidia.com/gpu.sharing-strategy": "none",
        "nvidia.com/gpu.mode": "compute",
        "nvidia.com/cuda.driver-version.major": driver[0],
        "nvidia.com/cuda.driver-version.minor": driver[1],
        "nvidia.com/cuda.driver-version.revision": driver[2],
    }
    labels.update(extra or {})
    resources = {"cpu": cpu, "memory": mem, "ephemeral-storage": disk, "nvidia.com/gpu": str(gpus)}
    return {"metadata": {"name": name, "labels": labels},
            "status": {"capacity": dict(resources), "allocatable": dict(resources),
                       "conditions": [{"type": "Ready", "status": "True"}],
                       "nodeInfo": {"kubeletVersion": "v1.34.4"}}}


def h200():
    """GFD v0.18.0 on an NVIDIA H200, driver 580.159.04 (FACTS.md section 0)."""
    return gfd_node("gfd-h200", "NVIDIA-H200", 143771, "hopper", 9, 0, driver=("580", "159", "04"),
                    extra={"nvidia.com/mig.capable": "true"})


def l40s():
    return gfd_node("gfd-l40s", "NVIDIA-L40S", 46068, "ada-lovelace", 8, 9, gpus=4)


def l4():
    return gfd_node("gfd-l4", "NVIDIA-L4", 23034, "ada-lovelace", 8, 9)


def h100(gpus=8, cpu="223", mem="2000Gi"):
    return gfd_node("gfd-h100", "NVIDIA-H100-80GB-HBM3", 81559, "hopper", 9, 0, gpus=gpus, cpu=cpu, mem=mem,
                    disk="3300Gi")


def discover(nodes, **kwargs):
    kwargs.setdefault("plan_labels", True)
    return gpu_discovery.discover([copy.deepcopy(n) for n in nodes], gpu_node.build_options(**kwargs), allocations={})


def patch_labels(result, node):
    return [c for c in result["label_changes"] if c["node"] == node][0]["patch"]["metadata"]["labels"]


# ------------------------------------------------------------------------------------------ real products
def test_h200_carries_h100_and_keeps_its_product():
    result = discover([h200()])
    record = result["nodes"][0]
    assert (record["gpu_type"], record["llm_engine_gpu_type"], record["memory_mib"]) == (
        "nvidia-hopper-h200", "nvidia-hopper-h100", 143771)
    assert record["driver_version"] == "580.159.04"
    assert patch_labels(result, "gfd-h200") == {ACC: "nvidia-hopper-h100", gpu.GPU_PRODUCT_LABEL: "nvidia-hopper-h200"}
    info = result["gpu_types"]["nvidia-hopper-h200"]
    assert (info["llm_engine_gpu_type"], info["llm_engine_compatible"], info["llm_engine_reason"]) == (
        "nvidia-hopper-h100", True, None)
    # the row names the accepted type with the H200's real memory, not an H100's 80 GB
    assert [(r["gpu_type"], r["gpus"], r["gpu_memory_le"]) for r in result["recommended_hardware"]["byGpuMemoryGb"]] \
        == [("nvidia-hopper-h100", 1, 141)]
    assert result["warnings"] == []


def test_l40s_carries_a10_not_a100():
    result = discover([l40s()])
    record = result["nodes"][0]
    assert (record["gpu_type"], record["llm_engine_gpu_type"]) == ("nvidia-ada-l40s", "nvidia-ampere-a10")
    assert patch_labels(result, "gfd-l40s")[ACC] == "nvidia-ampere-a10"
    rows = result["recommended_hardware"]["byGpuMemoryGb"]
    assert [(r["gpu_type"], r["gpus"], r["gpu_memory_le"]) for r in rows] == [
        ("nvidia-ampere-a10", 1, 48), ("nvidia-ampere-a10", 2, 96), ("nvidia-ampere-a10", 4, 192)]
    # an A100 has more memory bandwidth (1555 against 864 GB/s)
    assert "memory bandwidth" in gpu._shortfalls(gpu.GPU_SPECS["nvidia-ada-l40s"], gpu.GPU_SPECS["nvidia-ampere-a100"])


def test_l4_has_no_type_and_discovery_says_why_and_how_to_map_it():
    result = discover([l4()])
    record = result["nodes"][0]
    assert (record["gpu_type"], record["llm_engine_gpu_type"]) == ("nvidia-ada-l4", None)
    assert patch_labels(result, "gfd-l4") == {gpu.GPU_PRODUCT_LABEL: "nvidia-ada-l4"}  # no accelerator label
    info = result["gpu_types"]["nvidia-ada-l4"]
    assert info["llm_engine_compatible"] is False
    assert "300 GB/s" in info["llm_engine_reason"] and "memory bandwidth" in info["llm_engine_reason"]
    assert "gpu_discovery_llm_engine_gpu_types: {'NVIDIA-L4': nvidia-tesla-t4}" in info["llm_engine_reason"]
    assert result["recommended_hardware"]["byGpuMemoryGb"] == []
    assert [w["code"] for w in result["warnings"]] == ["no_llm_engine_type"]
    # the mapping the reason names works
    mapped = discover([l4()], llm_engine_gpu_types={"NVIDIA-L4": "nvidia-tesla-t4"})
    assert patch_labels(mapped, "gfd-l4")[ACC] == "nvidia-tesla-t4"
    assert mapped["gpu_types"]["nvidia-ada-l4"]["llm_engine_compatible"] is True
    assert [(r["gpu_type"], r["gpu_memory_le"]) for r in mapped["recommended_hardware"]["byGpuMemoryGb"]] == [
        ("nvidia-tesla-t4", 24)]
    assert mapped["warnings"] == []


@pytest.mark.parametrize("key", ["gfd-l4", "NVIDIA-L4", "nvidia l4", "nvidia-ada-l4"])
def test_mapping_by_node_product_or_gpu_type(key):
    result = discover([l4()], llm_engine_gpu_types={key: "nvidia-tesla-t4"})
    assert result["nodes"][0]["llm_engine_gpu_type"] == "nvidia-tesla-t4"


def test_node_name_mapping_wins_over_product_mapping():
    mapping = {"NVIDIA-L40S": "nvidia-tesla-t4", "gfd-l40s": "nvidia-ampere-a10"}
    result = discover([l40s()], llm_engine_gpu_types=mapping)
    assert result["nodes"][0]["llm_engine_gpu_type"] == "nvidia-ampere-a10"


@pytest.mark.parametrize("value, needle", [
    ("nvidia-hopper-h200", "is not an LLM Engine gpu_type: its server accepts only nvidia-tesla-t4"),
    ("nvidia-ampere-a100e", "refuses that type when an endpoint is created"),
    ("", "is not an LLM Engine gpu_type"),
])
def test_mapping_values_are_validated_against_the_enum(value, needle):
    with pytest.raises(gpu.DiscoveryError) as err:
        gpu_node.build_options(llm_engine_gpu_types={"NVIDIA-L4": value})
    assert needle in str(err.value) and "llm_engine_gpu_types['NVIDIA-L4']" in str(err.value)


# ------------------------------------------------------------------------------------------ pooling and limits
def test_h100_and_h200_nodes_pool_under_h100_with_the_smaller_memory():
    """An endpoint asking for nvidia-hopper-h100 may land on either node: rows count 80 GB per GPU."""
    result = discover([h100(), h200()])
    rows = result["recommended_hardware"]["byGpuMemoryGb"]
    assert set(r["gpu_type"] for r in rows) == {"nvidia-hopper-h100"}
    assert [(r["gpus"], r["gpu_memory_le"]) for r in rows] == [(1, 80), (2, 160), (4, 320), (8, 640)]
    assert result["gpu_types"]["nvidia-hopper-h100"]["node_selector"] == {
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert result["gpu_types"]["nvidia-hopper-h200"]["node_selector"] == {"nvidia.com/gpu.product": "NVIDIA-H200"}


def test_rows_stay_within_llm_engine_per_worker_limits():
    """A 223-CPU, 2000Gi H100 node: 8 GPUs would get 199 CPUs and 1800Gi; LLM Engine allows 191 CPUs and
    2000Gi per nvidia-hopper-h100 worker, less 1 CPU and 2Gi for its forwarder."""
    rows = discover([h100()])["recommended_hardware"]["byGpuMemoryGb"]
    eight = [r for r in rows if r["gpus"] == 8][0]
    assert (eight["cpus"], eight["memory"]) == (190, "1800Gi")
    big = discover([h100(cpu="256", mem="4000Gi")])["recommended_hardware"]["byGpuMemoryGb"]
    eight = [r for r in big if r["gpus"] == 8][0]
    assert (eight["cpus"], eight["memory"], eight["storage"]) == (190, "1998Gi", "800Gi")
    for row in rows + big:
        cpus, memory, storage = gpu_discovery._usable_limits(row["gpu_type"])
        assert row["cpus"] <= cpus and int(row["memory"][:-2]) <= memory and int(row["storage"][:-2]) <= storage


def test_every_row_and_label_uses_an_accepted_type():
    nodes = [h200(), l40s(), l4(), h100()]
    result = discover(nodes)
    for row in result["recommended_hardware"]["byGpuMemoryGb"]:
        assert row["gpu_type"] in gpu.LLM_ENGINE_GPU_TYPES
        assert row["gpu_type"] not in gpu.LLM_ENGINE_GPU_TYPES_REJECTED_ON_CREATE
    for change in result["label_changes"]:
        value = change["patch"]["metadata"]["labels"].get(ACC)
        assert value is None or value in gpu.LLM_ENGINE_GPU_TYPES


def test_model_engine_values_take_the_accelerator_types_from_discovery():
    """The chart values built from this discovery: image cache devices and recommendedHardware rows name
    the accelerator label values (LLM Engine types), never the product names."""
    result = discover([h200(), l40s(), l4()])
    types = result["gpu_types"]
    assert me.llm_engine_gpu_types(types) == {"nvidia-ampere-a10": ["nvidia-ada-l40s"],
                                              "nvidia-hopper-h100": ["nvidia-hopper-h200"]}
    devices = me.image_cache_devices(types)
    assert [(d["name"], d["nodeSelector"]) for d in devices] == [
        ("nvidia-ampere-a10", {ACC: "nvidia-ampere-a10"}), ("nvidia-hopper-h100", {ACC: "nvidia-hopper-h100"})]
    errors = []
    me.validate_recommended_hardware(result["recommended_hardware"], types, errors)
    assert errors == []
    bad = {"byGpuMemoryGb": [{"gpu_memory_le": 141, "cpus": 1, "gpus": 1, "memory": "1Gi", "storage": "1Gi",
                              "gpu_type": "nvidia-hopper-h200"}], "byModelName": []}
    me.validate_recommended_hardware(bad, types, errors)
    assert len(errors) == 1 and "'nvidia-hopper-h200'" in errors[0]


# ------------------------------------------------------------------------------------------ MIG
@pytest.mark.parametrize("profile, expected", [
    ("1g.18gb", None), ("1g.35gb", "nvidia-hopper-h100-1g20gb"), ("2g.35gb", "nvidia-hopper-h100-1g20gb"),
    ("3g.71gb", "nvidia-hopper-h100-3g40gb"), ("4g.71gb", "nvidia-hopper-h100-3g40gb"),
    ("7g.141gb", "nvidia-hopper-h100-3g40gb"),
])
def test_h200_mig_slices_map_only_to_h100_mig_types_at_most_their_size(profile, expected):
    """H200 MIG profiles (FACTS.md section 0), MIG single strategy."""
    node = h200()
    node["metadata"]["labels"]["nvidia.com/gpu.product"] = "NVIDIA-H200-MIG-%s" % profile
    node["metadata"]["labels"]["nvidia.com/mig.strategy"] = "single"
    record = discover([node])["nodes"][0]
    assert record["sharing"]["mode"] == "mig-single"
    assert record["gpu_type"] == "nvidia-hopper-h200-%s" % gpu.profile_slug(profile)
    assert record["llm_engine_gpu_type"] == expected
    if expected is None:
        assert "smaller than every LLM Engine MIG type" in record["llm_engine_reason"]


@pytest.mark.parametrize("base, profile", [
    ("nvidia-hopper-h100-pcie", "3g.40gb"), ("nvidia-ampere-a100-80gb", "3g.40gb"),
    ("nvidia-hopper-h100-nvl", "3g.47gb"),
])
def test_mig_slices_of_gpus_below_an_h100_get_no_h100_mig_type(base, profile):
    llm_type, reason, _suggestion = gpu.decide_llm_engine_type("x", base, "nvidia", "mig-single", profile)
    assert llm_type is None and "slices of an nvidia-hopper-h100" in reason


def test_h100_mig_profiles():
    decide = gpu.decide_llm_engine_type
    assert decide("nvidia-hopper-h100-1g20gb", "nvidia-hopper-h100", "nvidia", "mig-single", "1g.20gb")[0] == \
        "nvidia-hopper-h100-1g20gb"
    assert decide("nvidia-hopper-h100-1g10gb", "nvidia-hopper-h100", "nvidia", "mig-single", "1g.10gb")[0] is None
    assert decide("nvidia-hopper-h100-2g20gb", "nvidia-hopper-h100", "nvidia", "mig-mixed", "2g.20gb")[0] == \
        "nvidia-hopper-h100-1g20gb"
    assert decide("nvidia-hopper-h100-4g40gb", "nvidia-hopper-h100", "nvidia", "mig-mixed", "4g.40gb")[0] == \
        "nvidia-hopper-h100-3g40gb"


# ------------------------------------------------------------------------------------------ the decision
@pytest.mark.parametrize("gpu_type, expected", [
    ("nvidia-tesla-t4", "nvidia-tesla-t4"),
    ("nvidia-ampere-a10", "nvidia-ampere-a10"),
    ("nvidia-ampere-a100", "nvidia-ampere-a100"),
    ("nvidia-ampere-a100-80gb", "nvidia-ampere-a100"),   # a100e is refused on create
    ("nvidia-ampere-a100e", "nvidia-ampere-a100"),
    ("nvidia-hopper-h100", "nvidia-hopper-h100"),
    ("nvidia-hopper-h100-pcie", "nvidia-ampere-a100"),   # 2000 GB/s, 756 TFLOPS: less than an H100 SXM
    ("nvidia-hopper-h100-nvl", "nvidia-ampere-a100"),    # 835 TFLOPS
    ("nvidia-hopper-h200", "nvidia-hopper-h100"),
    ("nvidia-hopper-gh200", "nvidia-hopper-h100"),
    ("nvidia-blackwell-b200", "nvidia-hopper-h100"),
    ("nvidia-hopper-h20", "nvidia-ampere-a10"),          # 148 TFLOPS
    ("nvidia-ada-l40s", "nvidia-ampere-a10"),
    ("nvidia-ada-l40", "nvidia-ampere-a10"),
    ("nvidia-ada-l4", None),                             # 300 GB/s against a T4's 320
    ("nvidia-ampere-a30", "nvidia-tesla-t4"),            # compute 8.0 against an A10's 8.6
    ("nvidia-tesla-v100", None),                         # compute 7.0
    ("nvidia-tesla-p100", None),
    ("nvidia-geforce-gtx-1080-ti", None),                # figures unknown
    ("nvidia-unknown", None),
])
def test_decision_table(gpu_type, expected):
    assert gpu.decide_llm_engine_type(gpu_type)[0] == expected


@pytest.mark.parametrize("gpu_type", sorted(gpu.GPU_SPECS))
def test_decision_never_overstates_and_picks_the_most_capable_fit(gpu_type):
    """Independent of the decision's own loop: the chosen type's reference figures are all <= the GPU's,
    and no whole type with higher FP16 throughput also fits (a100e excepted: refused on create)."""
    specs = gpu.GPU_SPECS[gpu_type]
    chosen = gpu.decide_llm_engine_type(gpu_type)[0]
    fitting = [t for t in WHOLE if all(have >= need for have, need in zip(specs, gpu.GPU_SPECS[t], strict=True))]
    if gpu_type in WHOLE:
        assert chosen == gpu_type
    elif chosen is None:
        assert fitting == []
    else:
        assert chosen in fitting
        assert gpu.GPU_SPECS[chosen][3] == max(gpu.GPU_SPECS[t][3] for t in fitting)


@pytest.mark.parametrize("vendor, sharing, needle", [
    ("amd", "none", "CUDA"), ("nvidia", "time-slicing", "without memory isolation"),
    ("nvidia", "mps", "without memory isolation"),
])
def test_other_vendors_and_shared_gpus_get_no_type(vendor, sharing, needle):
    llm_type, reason, _suggestion = gpu.decide_llm_engine_type("nvidia-hopper-h200", None, vendor, sharing)
    assert llm_type is None and needle in reason


def test_accelerator_label_set_by_someone_else_to_a_product_name_is_reported():
    node = l40s()
    node["metadata"]["labels"][ACC] = "nvidia-ada-l40s"
    result = discover([node])
    assert ACC not in patch_labels(result, "gfd-l40s")
    conflict = [w for w in result["warnings"] if w["code"] == "accelerator_label_conflict"][0]["message"]
    assert "endpoints can never ask for nvidia-ada-l40s" in conflict and "nvidia-ampere-a10" in conflict
