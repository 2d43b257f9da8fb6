# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE)
"""GPU facts and names: pure tables and functions, no I/O.

What the collection knows about GPUs: LLM Engine's ``GpuType`` values and limits, the node labels
that describe a GPU, the product / family-memory / instance-type tables and the specs that decide
which LLM Engine type a GPU may claim (``decide_llm_engine_type``). Node classification lives in
gpu_node.py, whole-cluster discovery (aggregates, selectors, label plan, recommended hardware) in
gpu_discovery.py.

Decisions documented here are the contract of ``llmops.serving.gpu_node_info``:

* ``gpu_type`` names the real product: LLM Engine's names where the product is the one LLM Engine
  means by them (``nvidia-tesla-t4``, ``nvidia-ampere-a10``, ``nvidia-ampere-a100``,
  ``nvidia-hopper-h100``, ``nvidia-hopper-h100-1g20gb``, ``nvidia-hopper-h100-3g40gb``) and
  ``<vendor>-<family>-<model>`` names of our own for the rest. MIG slices append the profile
  (``-1g20gb``); time-sliced or MPS shared GPUs append ``-shared`` (no memory isolation, so they
  never stand in for a whole GPU). It is written to the node label ``llmops.serving/gpu-product``.
* ``llm_engine_gpu_type`` is what the accelerator label carries: a value of LLM Engine's closed
  ``GpuType`` enum (``LLM_ENGINE_GPU_TYPES``) that never overstates the GPU (``decide_llm_engine_type``),
  an explicit ``llm_engine_gpu_types`` mapping, or None with the reason and the mapping that would work.
* A GPU node without any product information (device plugin only) is ``<vendor>-unknown`` with a
  warning; ``gpu_type_overrides`` (by node name or product) or ``label_aliases`` map it.
* Labels listed in the node annotation ``llmops.serving/managed-labels`` were written by us and are
  never used as evidence, so a second run classifies exactly like the first.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
from functools import lru_cache

MANAGED_LABELS_ANNOTATION = "llmops.serving/managed-labels"
DEFAULT_ACCELERATOR_LABEL = "k8s.amazonaws.com/accelerator"
# Our own label with the real product (the collection's gpu_type), next to the accelerator label.
GPU_PRODUCT_LABEL = "llmops.serving/gpu-product"
# LLM Engine's GpuType enum, in its order (pinned upstream
# model-engine/model_engine_server/domain/entities/gpu_type.py:7-13): the only values its API and
# its recommended-hardware ConfigMap accept. tests/contract/test_llm_engine_gpu_contract.py parses
# that file and fails when this list disagrees.
LLM_ENGINE_GPU_TYPES = (
    "nvidia-tesla-t4",
    "nvidia-ampere-a10",
    "nvidia-ampere-a100",
    "nvidia-ampere-a100e",
    "nvidia-hopper-h100",
    "nvidia-hopper-h100-1g20gb",
    "nvidia-hopper-h100-3g40gb",
)
# Values the LLM endpoint create use case refuses, with the value its message suggests
# (domain/use_cases/llm_model_endpoint_use_cases.py:1816-1819).
LLM_ENGINE_GPU_TYPES_REJECTED_ON_CREATE = {"nvidia-ampere-a100e": "nvidia-hopper-h100"}
# Per-worker limits (cpus, memory, storage) per gpu_type, and what the forwarder sidecar takes from
# them (common/resource_limits.py:27-54; storage defaults to STORAGE_LIMIT 640Gi there).
LLM_ENGINE_INSTANCE_LIMITS = {
    "nvidia-tesla-t4": ("63", "250Gi", "640Gi"),
    "nvidia-ampere-a10": ("63", "250Gi", "640Gi"),
    "nvidia-ampere-a100": ("95", "1000Gi", "640Gi"),
    "nvidia-ampere-a100e": ("95", "1000Gi", "640Gi"),
    "nvidia-hopper-h100": ("191", "2000Gi", "1300Gi"),
    "nvidia-hopper-h100-1g20gb": ("47", "500Gi", "640Gi"),
    "nvidia-hopper-h100-3g40gb": ("95", "1000Gi", "640Gi"),
}
LLM_ENGINE_FORWARDER_USAGE = ("1", "2Gi", "1G")
# The MIG enum values: (whole-GPU type they are slices of, compute slices, memory GB).
LLM_ENGINE_MIG_TYPES = {
    "nvidia-hopper-h100-1g20gb": ("nvidia-hopper-h100", 1, 20),
    "nvidia-hopper-h100-3g40gb": ("nvidia-hopper-h100", 3, 40),
}
# The toleration LLM Engine puts on every GPU endpoint pod (service template of the chart).
LLM_ENGINE_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
# The extended resource LLM Engine endpoint pods request, whatever the gpu_type.
LLM_ENGINE_GPU_RESOURCE = "nvidia.com/gpu"
# Well-known labels.
L_HOSTNAME = "kubernetes.io/hostname"
L_INSTANCE_TYPE = "node.kubernetes.io/instance-type"
L_INSTANCE_TYPE_BETA = "beta.kubernetes.io/instance-type"
L_NV_PRESENT = "nvidia.com/gpu.present"
L_NV_PRODUCT = "nvidia.com/gpu.product"
L_NV_FAMILY = "nvidia.com/gpu.family"
L_NV_MEMORY = "nvidia.com/gpu.memory"
L_NV_COUNT = "nvidia.com/gpu.count"
L_NV_REPLICAS = "nvidia.com/gpu.replicas"
L_NV_SHARING = "nvidia.com/gpu.sharing-strategy"
L_NV_MIG_STRATEGY = "nvidia.com/mig.strategy"
L_EKS = "k8s.amazonaws.com/accelerator"  # EKS, and LLM Engine's own convention
L_GKE = "cloud.google.com/gke-accelerator"
L_KARPENTER_NAME = "karpenter.k8s.aws/instance-gpu-name"
L_KARPENTER_MEMORY = "karpenter.k8s.aws/instance-gpu-memory"
L_KARPENTER_COUNT = "karpenter.k8s.aws/instance-gpu-count"
L_KARPENTER_MANUFACTURER = "karpenter.k8s.aws/instance-gpu-manufacturer"
L_AKS = "kubernetes.azure.com/accelerator"
L_AMD_PRODUCT = "amd.com/gpu.product-name"
L_AMD_VRAM = "amd.com/gpu.vram"
L_AMD_FAMILY = "amd.com/gpu.family"
L_AMD_PRODUCT_BETA = "beta.amd.com/gpu.product-name"
L_AMD_VRAM_BETA = "beta.amd.com/gpu.vram"
L_INTEL_PRODUCT = "gpu.intel.com/product"
L_INTEL_FAMILY = "gpu.intel.com/family"
L_INTEL_COUNT = "gpu.intel.com/device.count"
L_INTEL_MEMORY = "gpu.intel.com/memory.max"
# Meanings a custom label can be given through label_aliases.
ALIAS_MEANINGS = ("gpu_type", "product", "family", "memory", "count")
_NVIDIA_DRIVER_LABELS = (
    ("nvidia.com/cuda.driver-version.major", "nvidia.com/cuda.driver-version.minor",
     "nvidia.com/cuda.driver-version.revision"),
    ("nvidia.com/cuda.driver.major", "nvidia.com/cuda.driver.minor", "nvidia.com/cuda.driver.rev"),
)
_PRODUCT_TABLE = (
    # NVIDIA Blackwell
    (r"GB200", "nvidia-blackwell-gb200", "nvidia", "blackwell", 186, None),
    (r"B300", "nvidia-blackwell-b300", "nvidia", "blackwell", 288, None),
    (r"B200", "nvidia-blackwell-b200", "nvidia", "blackwell", 180, None),
    (r"B100", "nvidia-blackwell-b100", "nvidia", "blackwell", 180, None),
    (r"RTX-PRO-6000", "nvidia-blackwell-rtx-pro-6000", "nvidia", "blackwell", 96, None),
    (r"RTX-5090", "nvidia-blackwell-rtx-5090", "nvidia", "blackwell", 32, None),
    # NVIDIA Hopper
    (r"GH200", "nvidia-hopper-gh200", "nvidia", "hopper", 96, None),
    (r"H200", "nvidia-hopper-h200", "nvidia", "hopper", 141, None),
    (r"H100-NVL", "nvidia-hopper-h100-nvl", "nvidia", "hopper", 94, None),
    (r"H100-PCIE|H100-\d+GB-PCIE|H100-PCIE-\d+GB", "nvidia-hopper-h100-pcie", "nvidia", "hopper", 80, None),
    # Any other H100 name (GFD "NVIDIA-H100-80GB-HBM3", GKE/Karpenter "h100", p5/a3/ND H100 v5) is SXM.
    (r"H100", "nvidia-hopper-h100", "nvidia", "hopper", 80, None),
    (r"H800", "nvidia-hopper-h800", "nvidia", "hopper", 80, None),
    (r"H20", "nvidia-hopper-h20", "nvidia", "hopper", 96, None),
    # NVIDIA Ada Lovelace
    (r"L40S", "nvidia-ada-l40s", "nvidia", "ada-lovelace", 48, None),
    (r"L40", "nvidia-ada-l40", "nvidia", "ada-lovelace", 48, None),
    (r"L20", "nvidia-ada-l20", "nvidia", "ada-lovelace", 48, None),
    (r"L4", "nvidia-ada-l4", "nvidia", "ada-lovelace", 24, None),
    (r"RTX-6000-ADA", "nvidia-ada-rtx-6000", "nvidia", "ada-lovelace", 48, None),
    (r"RTX-4090", "nvidia-ada-rtx-4090", "nvidia", "ada-lovelace", 24, None),
    # NVIDIA Ampere
    (r"A100-80GB|A100-SXM4-80GB|A100E", "nvidia-ampere-a100-80gb", "nvidia", "ampere", 80, None),
    (r"A100", "nvidia-ampere-a100", "nvidia", "ampere", 40, (61440, "nvidia-ampere-a100-80gb", 80)),
    (r"A800", "nvidia-ampere-a800", "nvidia", "ampere", 80, None),
    (r"A10G?", "nvidia-ampere-a10", "nvidia", "ampere", 24, None),
    (r"A30", "nvidia-ampere-a30", "nvidia", "ampere", 24, None),
    (r"A40", "nvidia-ampere-a40", "nvidia", "ampere", 48, None),
    (r"RTX-A6000", "nvidia-ampere-rtx-a6000", "nvidia", "ampere", 48, None),
    (r"RTX-3090", "nvidia-ampere-rtx-3090", "nvidia", "ampere", 24, None),
    # NVIDIA Turing / Volta / Pascal
    (r"T4G?", "nvidia-tesla-t4", "nvidia", "turing", 16, None),
    (r"V100", "nvidia-tesla-v100", "nvidia", "volta", 16, (30720, "nvidia-tesla-v100-32gb", 32)),
    (r"P100", "nvidia-tesla-p100", "nvidia", "pascal", 16, None),
    # AMD Instinct
    (r"MI325X", "amd-instinct-mi325x", "amd", "cdna3", 256, None),
    (r"MI300X", "amd-instinct-mi300x", "amd", "cdna3", 192, None),
    (r"MI300A", "amd-instinct-mi300a", "amd", "cdna3", 128, None),
    (r"MI250X", "amd-instinct-mi250x", "amd", "cdna2", 128, None),
    (r"MI250", "amd-instinct-mi250", "amd", "cdna2", 128, None),
    (r"MI210", "amd-instinct-mi210", "amd", "cdna2", 64, None),
    (r"MI100", "amd-instinct-mi100", "amd", "cdna", 32, None),
    # Intel data-center GPUs and Gaudi
    (r"MAX-1550", "intel-max-1550", "intel", "max-series", 128, None),
    (r"MAX-1100", "intel-max-1100", "intel", "max-series", 48, None),
    (r"FLEX-170", "intel-flex-170", "intel", "flex-series", 16, None),
    (r"FLEX-140", "intel-flex-140", "intel", "flex-series", 12, None),
    (r"GAUDI3", "habana-gaudi3", "habana", "gaudi", 128, None),
    (r"GAUDI2", "habana-gaudi2", "habana", "gaudi", 96, None),
    (r"GAUDI", "habana-gaudi", "habana", "gaudi", 32, None),
)
_PRODUCT_RULES = tuple(
    (re.compile(r"(?:^|-)(?:%s)(?=-|$)" % pattern), gpu_type, vendor, family, gb, large)
    for pattern, gpu_type, vendor, family, gb, large in _PRODUCT_TABLE
)
# gpu_type -> (vendor, family, nominal GB) for every type the table can produce.
KNOWN_GPU_TYPES = {}


for _pattern, _type, _vendor, _family, _gb, _large in _PRODUCT_TABLE:
    KNOWN_GPU_TYPES.setdefault(_type, (_vendor, _family, _gb))
    if _large:
        KNOWN_GPU_TYPES.setdefault(_large[1], (_vendor, _family, _large[2]))


# An accelerator label set by someone else may hold LLM Engine's name for the A100 80GB (AWS p4de).
KNOWN_GPU_TYPES.setdefault("nvidia-ampere-a100e", ("nvidia", "ampere", 80))


# What a GPU can do, for the LLM Engine mapping: (memory GB, CUDA compute capability, memory
# bandwidth GB/s, dense FP16/BF16 Tensor Core TFLOPS), NVIDIA datasheet figures (sparsity figures
# halved). A name sold in several variants gets its weakest variant's figures. Types without an
# entry (unknown products, ambiguous family-only labels, other vendors) are never mapped on their own.
# LLM Engine's whole-GPU names carry the figures of the GPUs its limits were written for
# (common/resource_limits.py:26-36 names the g4dn (T4), "g5dn" (A10G) and p4d/p4de (A100 SXM4)
# instance types; its H100 limits, 191 CPUs and 2000Gi, are those of a p5.48xlarge (H100 SXM5)).
GPU_SPECS = {
    "nvidia-blackwell-gb200": (186, (10, 0), 8000, 2500),
    "nvidia-blackwell-b300": (288, (10, 3), 8000, 2250),
    "nvidia-blackwell-b200": (180, (10, 0), 8000, 2250),
    "nvidia-blackwell-b100": (180, (10, 0), 8000, 1750),
    "nvidia-hopper-gh200": (96, (9, 0), 4000, 989),
    "nvidia-hopper-h200": (141, (9, 0), 4800, 989),
    "nvidia-hopper-h100": (80, (9, 0), 3350, 989),
    "nvidia-hopper-h100-nvl": (94, (9, 0), 3900, 835),
    "nvidia-hopper-h100-pcie": (80, (9, 0), 2000, 756),
    "nvidia-hopper-h800": (80, (9, 0), 2000, 756),
    "nvidia-hopper-h20": (96, (9, 0), 4000, 148),
    "nvidia-ada-l40s": (48, (8, 9), 864, 362),
    "nvidia-ada-l40": (48, (8, 9), 864, 181),
    "nvidia-ada-l20": (48, (8, 9), 864, 119),
    "nvidia-ada-l4": (24, (8, 9), 300, 121),
    "nvidia-ada-rtx-6000": (48, (8, 9), 960, 364),
    "nvidia-ada-rtx-4090": (24, (8, 9), 1008, 165),
    "nvidia-ampere-a100-80gb": (80, (8, 0), 1935, 312),
    "nvidia-ampere-a100e": (80, (8, 0), 2039, 312),
    "nvidia-ampere-a100": (40, (8, 0), 1555, 312),
    "nvidia-ampere-a800": (80, (8, 0), 1935, 312),
    "nvidia-ampere-a10": (24, (8, 6), 600, 125),
    "nvidia-ampere-a30": (24, (8, 0), 933, 165),
    "nvidia-ampere-a40": (48, (8, 6), 696, 150),
    "nvidia-ampere-rtx-a6000": (48, (8, 6), 768, 155),
    "nvidia-ampere-rtx-3090": (24, (8, 6), 936, 71),
    "nvidia-tesla-t4": (16, (7, 5), 320, 65),
    "nvidia-tesla-v100": (16, (7, 0), 900, 125),
    "nvidia-tesla-v100-32gb": (32, (7, 0), 900, 125),
    "nvidia-tesla-p100": (16, (6, 0), 732, 19),
}
_SPEC_NAMES = ("memory", "compute capability", "memory bandwidth", "FP16 Tensor throughput")
# Family + per-GPU memory (MiB, label values are minimums that vary with the driver) to a type,
# only where one data-center product owns the range. Other combinations are ambiguous.
_FAMILY_MEMORY_TABLE = (
    ("turing", 14000, 16384, "nvidia-tesla-t4"),
    ("volta", 15000, 16384, "nvidia-tesla-v100"),
    ("volta", 30720, 32768, "nvidia-tesla-v100-32gb"),
    ("ampere", 21500, 23552, "nvidia-ampere-a10"),
    ("ampere", 38000, 41000, "nvidia-ampere-a100"),
    ("ampere", 76000, 82000, "nvidia-ampere-a100-80gb"),
    ("ada-lovelace", 21500, 23552, "nvidia-ada-l4"),
    # Hopper with 80 GB may be SXM or PCIe, with 94-96 GB an H100 NVL or a GH200: ambiguous.
    ("hopper", 138000, 145000, "nvidia-hopper-h200"),
    ("blackwell", 176000, 186000, "nvidia-blackwell-b200"),
)
_FAMILY_SHORT = {"ada-lovelace": "ada", "ada": "ada"}
# Cloud instance types whose GPU is fixed (fallback when no GPU label exists).
_INSTANCE_TYPE_TABLE = (
    (r"^g4dn\.", "T4"), (r"^g5g\.", "T4G"), (r"^g5\.", "A10G"), (r"^g6e\.", "L40S"),
    (r"^g6\.", "L4"), (r"^gr6\.", "L4"), (r"^p3dn\.", "V100-32GB"), (r"^p3\.", "V100"),
    (r"^p4de\.", "A100-80GB"), (r"^p4d\.", "A100-40GB"), (r"^p5e[n]?\.", "H200"), (r"^p5\.", "H100"),
    (r"^p6-b200\.", "B200"),
    (r"^a2-ultragpu-", "A100-80GB"), (r"^a2-highgpu-", "A100-40GB"), (r"^a2-megagpu-", "A100-40GB"),
    (r"^a3-ultragpu-", "H200"), (r"^a3-", "H100"), (r"^g2-standard-", "L4"),
    (r"^standard_nc\d+as_t4_v3$", "T4"), (r"^standard_nc\d+ads_a100_v4$", "A100-80GB"),
    (r"^standard_nd96asr_v4$", "A100-40GB"), (r"^standard_nd96amsr_a100_v4$", "A100-80GB"),
    (r"^standard_nc\d+ads_h100_v5$", "H100-NVL"), (r"^standard_nd96isr_h100_v5$", "H100"),
    (r"^standard_nd96isr_h200_v5$", "H200"),
)
_INSTANCE_TYPE_RULES = tuple((re.compile(p), product) for p, product in _INSTANCE_TYPE_TABLE)
_MIG_RESOURCE = re.compile(r"^nvidia\.com/mig-(\d+g\.\d+gb(?:\+me)?)$")
_MIG_SUFFIX = re.compile(r"^(.*)-MIG-(\d+g\.\d+gb(?:\+me)?)$", re.IGNORECASE)
_PROFILE_GB = re.compile(r"\.(\d+)gb", re.IGNORECASE)
GIB = 1024 ** 3


class DiscoveryError(ValueError):
    """Bad input to the discovery: the message names the input and the fix."""


def _to_int(value):
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


@lru_cache(maxsize=4096)
def normalize_product(value):
    """Product string to the form the product table matches: upper case, "-" separated."""
    text = re.sub(r"[\s_/]+", "-", str(value).strip()).upper()
    return re.sub(r"-{2,}", "-", text).strip("-")


def slug(value, limit=63):
    """A valid Kubernetes label value made of [a-z0-9-]."""
    text = re.sub(r"[^a-z0-9]+", "-", str(value).lower()).strip("-")
    return text[:limit].strip("-")


def profile_slug(profile):
    """MIG profile "1g.20gb" -> "1g20gb" (LLM Engine's spelling)."""
    return re.sub(r"[^a-z0-9]", "", profile.lower())


def match_product(product, memory_mib=None):
    """Product string -> (gpu_type, vendor, family, nominal GB) from the table, or None."""
    norm = normalize_product(product)
    for regex, gpu_type, vendor, family, gb, large in _PRODUCT_RULES:
        if regex.search(norm):
            if large and memory_mib and memory_mib >= large[0]:
                return large[1], vendor, family, large[2]
            return gpu_type, vendor, family, gb
    return None


def unknown_product_type(vendor, product):
    """Consistent name for a product the table does not know: "<vendor>-<product slug>"."""
    text = slug(product)
    for prefix in ("nvidia-", "amd-", "intel-", "habana-"):
        if text.startswith(prefix):
            text = text[len(prefix):]
    return slug("%s-%s" % (vendor or "gpu", text)) or "%s-unknown" % (vendor or "gpu")


def family_memory_type(family, memory_mib):
    """(gpu_type, ambiguous) from a GFD family and per-GPU memory."""
    fam = (family or "").lower()
    if memory_mib:
        for table_family, low, high, gpu_type in _FAMILY_MEMORY_TABLE:
            if fam == table_family and low <= memory_mib <= high:
                return gpu_type, False
    short = _FAMILY_SHORT.get(fam, slug(fam) or "unknown")
    if memory_mib:
        return "nvidia-%s-%dgb" % (short, int(round(memory_mib / 1024.0))), True
    return "nvidia-%s" % short, True


def instance_type_product(instance_type):
    text = (instance_type or "").lower()
    for regex, product in _INSTANCE_TYPE_RULES:
        if regex.search(text):
            return product
    return None


def _shortfalls(specs, reference):
    """Names of the figures in which ``specs`` fall short of ``reference`` (empty: it dominates)."""
    return [_SPEC_NAMES[i] for i in range(len(_SPEC_NAMES)) if specs[i] < reference[i]]


def _spec_text(specs):
    return "%d GB, compute %d.%d, %d GB/s, %d FP16 TFLOPS" % (specs[0], specs[1][0], specs[1][1], specs[2], specs[3])


def _whole_llm_types():
    """LLM Engine's whole-GPU types an endpoint can be created on, most capable first."""
    names = [t for t in LLM_ENGINE_GPU_TYPES
             if t not in LLM_ENGINE_MIG_TYPES and t not in LLM_ENGINE_GPU_TYPES_REJECTED_ON_CREATE]
    return sorted(names, key=lambda t: (GPU_SPECS[t][3], GPU_SPECS[t][2], GPU_SPECS[t][0]), reverse=True)


def decide_llm_engine_type(gpu_type, base_type=None, vendor="nvidia", sharing="none", profile=None):
    """The LLM Engine gpu_type that never overstates a GPU: (llm_type, reason, suggestion).

    ``gpu_type`` is the collection's name of the GPU (or MIG slice), ``base_type`` the whole GPU's
    name for a MIG slice, ``profile`` the MIG profile ("3g.71gb"). A whole GPU gets the most capable
    of LLM Engine's whole-GPU types whose reference GPU it matches or beats in memory, compute
    capability, memory bandwidth and FP16 Tensor throughput (GPU_SPECS), so an endpoint sized for
    that type runs at least as well on it: an H200 is an H100, an L40S an A10 (an A100 has more
    bandwidth). A MIG slice gets an H100 MIG type only when its GPU is at least an H100 and the slice
    has at least that type's compute slices and memory. Types LLM Engine refuses on create
    (``nvidia-ampere-a100e``) are never chosen. Without a fit, llm_type is None, ``reason`` says why
    and ``suggestion`` names the closest type for an explicit mapping (or None).
    """
    if vendor != "nvidia":
        return None, ("LLM Engine endpoint pods request nvidia.com/gpu and run CUDA images; %s GPUs cannot "
                      "serve them" % vendor), None
    if sharing in ("time-slicing", "mps"):
        return None, ("the GPUs are shared (%s) without memory isolation, so an endpoint would not get the "
                      "memory its gpu_type promises; turn sharing off for LLM Engine nodes" % sharing), None
    if gpu_type in LLM_ENGINE_GPU_TYPES and gpu_type not in LLM_ENGINE_GPU_TYPES_REJECTED_ON_CREATE:
        return gpu_type, None, None
    if profile:
        parent = GPU_SPECS.get(base_type)
        slices = _to_int(profile.split("g.", 1)[0])
        slice_gb = _profile_gb(profile)
        if parent is None or not slices or not slice_gb:
            return None, "MIG slice %s of %s: the GPU's figures are unknown" % (profile, base_type), None
        fits = []
        by_size = sorted(LLM_ENGINE_MIG_TYPES.items(), key=lambda kv: kv[1][1:], reverse=True)
        for mig_type, (whole, need_slices, need_gb) in by_size:
            short = _shortfalls(parent, GPU_SPECS[whole])
            if short:
                return None, ("MIG slice %s of %s: LLM Engine's MIG types are slices of an %s, and this GPU has "
                              "less %s (%s against %s)" % (profile, base_type, whole, ", ".join(short),
                                                           _spec_text(parent), _spec_text(GPU_SPECS[whole]))), None
            if slices >= need_slices and slice_gb >= need_gb:
                fits.append(mig_type)
        if fits:
            return fits[0], None, None
        known = ", ".join("%s = %dg.%dgb" % (t, v[1], v[2]) for t, v in sorted(LLM_ENGINE_MIG_TYPES.items()))
        return None, "MIG slice %s is smaller than every LLM Engine MIG type (%s)" % (profile, known), None
    specs = GPU_SPECS.get(gpu_type)
    if specs is None:
        return None, ("%s is not a GPU whose figures this collection knows, so no LLM Engine type is known "
                      "not to overstate it" % gpu_type), None
    candidates = _whole_llm_types()
    for llm_type in candidates:
        if not _shortfalls(specs, GPU_SPECS[llm_type]):
            return llm_type, None, None
    closest = min(candidates, key=lambda t: (len(_shortfalls(specs, GPU_SPECS[t])), -GPU_SPECS[t][3]))
    return None, ("%s (%s) falls short of every LLM Engine type; the closest, %s (%s), has more %s" % (
        gpu_type, _spec_text(specs), closest, _spec_text(GPU_SPECS[closest]),
        ", ".join(_shortfalls(specs, GPU_SPECS[closest])))), closest


def _profile_gb(profile):
    match = _PROFILE_GB.search("." + profile.split(".", 1)[-1]) if profile else None
    return int(match.group(1)) if match else None
