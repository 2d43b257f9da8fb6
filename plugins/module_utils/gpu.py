# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE)

"""GPU node classification and aggregation: pure functions, no I/O.

Input is Kubernetes Node objects as plain dicts (the JSON the API returns) and, optionally, the GPU
requests of running pods per node. Output is one record per GPU node, one aggregate per GPU type
(with the most specific node selector that matches exactly that type's nodes), LLM Engine
``recommendedHardware`` entries, the accelerator-label changes a caller may apply, and warnings.

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

import math
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

# --------------------------------------------------------------------------------------------------
# Product table. Patterns match whole dash-separated tokens of the normalized product string
# (upper case, spaces and underscores as "-"), so "A10" never matches "A100" and "H20" never "H200".
# Fields: pattern, gpu_type, vendor, family, nominal memory GB, optional large variant
# (min MiB, gpu_type, GB) for products sold in two memory sizes under one name.
# --------------------------------------------------------------------------------------------------
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
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)([A-Za-z]*)$")
_QUANTITY_SUFFIX = {
    "": 1, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
    "E": 1e18, "Ki": 1024, "Mi": 1024 ** 2, "Gi": 1024 ** 3, "Ti": 1024 ** 4, "Pi": 1024 ** 5,
    "Ei": 1024 ** 6,
}
GIB = 1024 ** 3


class DiscoveryError(ValueError):
    """Bad input to the discovery: the message names the input and the fix."""


# --------------------------------------------------------------------------------------------------
# Small parsers
# --------------------------------------------------------------------------------------------------
@lru_cache(maxsize=4096)
def parse_quantity(value):
    """Kubernetes quantity ("7910m", "31Gi", "1e3") to a float; None when missing or invalid."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    match = _QUANTITY.match(str(value).strip())
    if not match or match.group(2) not in _QUANTITY_SUFFIX:
        return None
    return float(match.group(1)) * _QUANTITY_SUFFIX[match.group(2)]


def _int_quantity(value):
    number = parse_quantity(value)
    return None if number is None else int(number)


def _millicores(value):
    number = parse_quantity(value)
    return None if number is None else int(round(number * 1000))


@lru_cache(maxsize=4096)
def parse_memory_mib(value):
    """GPU memory label to MiB: plain numbers are MiB (GFD, Karpenter), "192G"/"80Gi" are GiB."""
    if value is None:
        return None
    text = str(value).strip()
    match = re.match(r"^(\d+(?:\.\d+)?)\s*([A-Za-z]*)$", text)
    if not match:
        return None
    number = float(match.group(1))
    unit = match.group(2).lower()
    if unit in ("", "mi", "mib", "m", "mb"):
        return int(number)
    if unit in ("g", "gi", "gib", "gb"):
        return int(number * 1024)
    if unit in ("t", "ti", "tib", "tb"):
        return int(number * 1024 * 1024)
    if unit in ("b",):
        return int(number / (1024 * 1024))
    return None


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


def is_valid_label_key(key):
    if not isinstance(key, str) or not key or key.count("/") > 1:
        return False
    if "/" in key:
        prefix, name = key.split("/")
        if not prefix or len(prefix) > 253 or not _LABEL_PREFIX.match(prefix):
            return False
    else:
        name = key
    return bool(_LABEL_NAME.match(name))


def is_valid_label_value(value):
    return isinstance(value, str) and (value == "" or bool(_LABEL_NAME.match(value)))


@lru_cache(maxsize=4096)
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


# --------------------------------------------------------------------------------------------------
# LLM Engine gpu_type
# --------------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------------
def build_options(accelerator_label=DEFAULT_ACCELERATOR_LABEL, gpu_type_overrides=None,
                  label_aliases=None, plan_labels=False, llm_engine_gpu_types=None):
    """Validate the user's options; raise DiscoveryError naming the input and the fix."""
    errors = []
    if not is_valid_label_key(accelerator_label):
        errors.append(
            "accelerator_label %r is not a valid Kubernetes label key: use [prefix/]name with a "
            "DNS-subdomain prefix and a name of at most 63 characters [A-Za-z0-9-_.], e.g. "
            "k8s.amazonaws.com/accelerator" % (accelerator_label,))
    overrides = {}
    for key, value in (gpu_type_overrides or {}).items():
        if not isinstance(value, str) or not value or not is_valid_label_value(value):
            errors.append(
                "gpu_type_overrides[%r] = %r is not a valid gpu_type: it becomes a label value, so use "
                "at most 63 characters [a-z0-9-_.] starting and ending alphanumeric, e.g. "
                "nvidia-ada-l40" % (key, value))
            continue
        overrides[str(key)] = value
    aliases = {}
    for key, meaning in (label_aliases or {}).items():
        if not is_valid_label_key(key):
            errors.append("label_aliases key %r is not a valid Kubernetes label key (e.g. "
                          "example.com/gpu-model)" % (key,))
            continue
        if meaning not in ALIAS_MEANINGS:
            errors.append("label_aliases[%r] = %r: the meaning must be one of %s" % (
                key, meaning, ", ".join(ALIAS_MEANINGS)))
            continue
        aliases[key] = meaning
    llm_types = {}
    for key, value in (llm_engine_gpu_types or {}).items():
        if value in LLM_ENGINE_GPU_TYPES_REJECTED_ON_CREATE:
            usable = [t for t in LLM_ENGINE_GPU_TYPES if t not in LLM_ENGINE_GPU_TYPES_REJECTED_ON_CREATE]
            errors.append(
                "llm_engine_gpu_types[%r] = %r: LLM Engine refuses that type when an endpoint is created "
                "(\"migrated A100 usage to H100\"); use one of %s" % (key, value, ", ".join(usable)))
        elif value not in LLM_ENGINE_GPU_TYPES:
            errors.append(
                "llm_engine_gpu_types[%r] = %r is not an LLM Engine gpu_type: its server accepts only %s" % (
                    key, value, ", ".join(LLM_ENGINE_GPU_TYPES)))
        else:
            llm_types[str(key)] = value
    if errors:
        raise DiscoveryError("; ".join(errors))
    return {
        "accelerator_label": accelerator_label,
        "gpu_type_overrides": overrides,
        "overrides_by_product": dict((normalize_product(k), v) for k, v in overrides.items()),
        "label_aliases": aliases,
        "plan_labels": bool(plan_labels),
        "llm_engine_gpu_types": llm_types,
        "llm_types_by_name": dict((normalize_product(k), v) for k, v in llm_types.items()),
    }


# --------------------------------------------------------------------------------------------------
# Node facts
# --------------------------------------------------------------------------------------------------
def prune_node(node):
    """Keep only what discovery reads (cuts memory for large clusters); result is Node-shaped."""
    meta = node.get("metadata") or {}
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    annotations = meta.get("annotations") or {}
    return {
        "metadata": {
            "name": meta.get("name"),
            "labels": meta.get("labels") or {},
            "annotations": dict((k, v) for k, v in annotations.items()
                                if k == MANAGED_LABELS_ANNOTATION or k.startswith("k3s.io/")),
        },
        "spec": {"taints": spec.get("taints") or [], "unschedulable": bool(spec.get("unschedulable"))},
        "status": {
            "capacity": status.get("capacity") or {},
            "allocatable": status.get("allocatable") or {},
            "conditions": [c for c in status.get("conditions") or [] if c.get("type") == "Ready"],
            "nodeInfo": dict((k, v) for k, v in (status.get("nodeInfo") or {}).items()
                             if k in ("kubeletVersion", "containerRuntimeVersion", "osImage")),
        },
    }


def managed_label_keys(node):
    value = ((node.get("metadata") or {}).get("annotations") or {}).get(MANAGED_LABELS_ANNOTATION)
    if not value:
        return set()
    return set(k.strip() for k in str(value).split(",") if k.strip())


def gpu_resource_vendor(resource_name):
    """Vendor of a GPU extended resource name, or None when it is not a GPU device resource."""
    if resource_name in ("nvidia.com/gpu", "nvidia.com/gpu.shared") or _MIG_RESOURCE.match(resource_name):
        return "nvidia"
    if resource_name == "amd.com/gpu":
        return "amd"
    if resource_name in ("gpu.intel.com/i915", "gpu.intel.com/xe"):
        return "intel"
    if resource_name == "habana.ai/gaudi":
        return "habana"
    return None


def gpu_resources(node):
    """{resource_name: {capacity, allocatable}} for GPU device resources of a node."""
    status = node.get("status") or {}
    capacity = status.get("capacity") or {}
    allocatable = status.get("allocatable") or {}
    out = {}
    for name in set(capacity) | set(allocatable):
        if gpu_resource_vendor(name):
            out[name] = {
                "capacity": _int_quantity(capacity.get(name)) or 0,
                "allocatable": _int_quantity(allocatable.get(name)) or 0,
            }
    return out


def _driver_version(labels):
    for major_key, minor_key, rev_key in _NVIDIA_DRIVER_LABELS:
        if major_key in labels:
            parts = [labels.get(major_key), labels.get(minor_key), labels.get(rev_key)]
            return ".".join(p for p in parts if p)
    return None


def _node_ready(node):
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def _is_k3s(node):
    info = (node.get("status") or {}).get("nodeInfo") or {}
    version = info.get("kubeletVersion") or ""
    return "+k3s" in version or "k3s" in (info.get("containerRuntimeVersion") or "")


def toleration_for(taint):
    tol = {"key": taint.get("key"), "effect": taint.get("effect")}
    if taint.get("value"):
        tol["operator"] = "Equal"
        tol["value"] = taint["value"]
    else:
        tol["operator"] = "Exists"
    return tol


def _tolerated_by(taint, toleration):
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    if toleration.get("key") and toleration["key"] != taint.get("key"):
        return False
    if toleration.get("operator", "Equal") == "Exists":
        return True
    return toleration.get("value", "") == (taint.get("value") or "")


def _taint_facts(node):
    """(taints with blocks_gpu_pods, tolerations a pod needs for this node)."""
    taints = []
    needed = []
    for taint in (node.get("spec") or {}).get("taints") or []:
        key = taint.get("key") or ""
        effect = taint.get("effect")
        # node.kubernetes.io/* taints mirror node conditions (cordon, not-ready): reported as
        # ready/cordoned, never tolerated on purpose.
        condition_taint = key.startswith("node.kubernetes.io/") or key.startswith("node.cloudprovider")
        hard = effect in ("NoSchedule", "NoExecute")
        blocks = hard and not condition_taint and not _tolerated_by(taint, LLM_ENGINE_TOLERATION)
        entry = {"key": key, "value": taint.get("value") or "", "effect": effect,
                 "blocks_gpu_pods": bool(blocks)}
        taints.append(entry)
        if hard and not condition_taint:
            needed.append(toleration_for(taint))
    return taints, needed


def _alias_labels(labels, aliases):
    """{meaning: label key} for the label_aliases present on a node."""
    out = {}
    for key, meaning in aliases.items():
        if labels.get(key):
            out[meaning] = key
    return out


def _first_label(labels, *keys):
    for key in keys:
        if key and labels.get(key):
            return key, labels[key]
    return None, None


_PRODUCT_SCHEMES = (
    (L_NV_PRODUCT, "gpu-feature-discovery"), (L_GKE, "gke"), (L_KARPENTER_NAME, "karpenter"),
    (L_AMD_PRODUCT, "amd-gpu-labeller"), (L_AMD_PRODUCT_BETA, "amd-gpu-labeller"), (L_INTEL_PRODUCT, "intel-nfd"),
)


def _label_vendor(labels):
    if labels.get(L_AMD_PRODUCT) or labels.get(L_AMD_PRODUCT_BETA):
        return "amd"
    if labels.get(L_INTEL_PRODUCT):
        return "intel"
    manufacturer = (labels.get(L_KARPENTER_MANUFACTURER) or "").lower()
    if manufacturer in ("amd", "intel"):
        return manufacturer
    return "nvidia"


def _label_memory_mib(labels, alias):
    for key in (alias.get("memory"), L_NV_MEMORY, L_KARPENTER_MEMORY, L_AMD_VRAM, L_AMD_VRAM_BETA):
        if key and labels.get(key):
            mib = parse_memory_mib(labels[key])
            if mib:
                return mib, key
    intel_bytes = _to_int(labels.get(L_INTEL_MEMORY))
    if intel_bytes:
        return intel_bytes // (1024 * 1024), L_INTEL_MEMORY
    return None, None


def _sharing(labels, resources, raw_product):
    """(mode, replicas, base product, MIG-single profile, MIG-mixed [(profile, resource)])."""
    replicas = _to_int(labels.get(L_NV_REPLICAS)) or 1
    strategy = labels.get(L_NV_SHARING)
    mode = "none"
    base = raw_product
    profile = None
    if raw_product:
        if raw_product.upper().endswith("-SHARED"):
            base = raw_product[: -len("-SHARED")]
            mode = strategy if strategy in ("time-slicing", "mps") else "time-slicing"
        mig = _MIG_SUFFIX.match(base)
        if mig:
            base, profile = mig.group(1), mig.group(2).lower()
    if mode == "none" and (replicas > 1 or strategy in ("time-slicing", "mps")
                           or resources.get("nvidia.com/gpu.shared", {}).get("capacity")):
        mode = strategy if strategy in ("time-slicing", "mps") else "time-slicing"
    mixed = sorted((_MIG_RESOURCE.match(r).group(1), r) for r, v in resources.items()
                   if _MIG_RESOURCE.match(r) and (v["capacity"] > 0 or v["allocatable"] > 0))
    if mixed:
        mode = "mig-mixed"
    elif profile:
        mode = "mig-single"
    return mode, replicas, base, profile, mixed


def _resolve_base_type(name, labels, alias, options, vendor, memory_mib, family):
    """Whole-GPU type of a node and how it was found.

    Returns dict(base_type, table, scheme, raw_product, raw_product_key, product, suffix, notes):
    ``table`` is (gpu_type, vendor, family, GB) when the type is in the product table; ``suffix``
    says whether MIG / shared suffixes still apply (not for types the user or a label gave directly).
    """
    acc = options["accelerator_label"]
    notes = []
    raw_key, raw_product = _first_label(labels, alias.get("product"), *[k for k, _s in _PRODUCT_SCHEMES])
    out = {"raw_product": raw_product, "raw_product_key": raw_key, "product": None, "table": None,
           "suffix": True, "notes": notes}
    scheme = None
    if raw_key:
        scheme = "custom-alias" if raw_key == alias.get("product") else dict(_PRODUCT_SCHEMES)[raw_key]
    direct = None
    if options["gpu_type_overrides"].get(name):
        direct, scheme = options["gpu_type_overrides"][name], "override"
    elif alias.get("gpu_type"):
        direct, scheme = labels[alias["gpu_type"]], "custom-alias"
    elif labels.get(acc) and scheme != "custom-alias":
        direct, scheme = labels[acc], "accelerator-label"
    elif labels.get(L_EKS) and scheme != "custom-alias":
        direct, scheme = labels[L_EKS], "eks"
    out["scheme"] = scheme

    base_product = None
    if raw_product:
        _mode, _replicas, base_product, _profile, _mixed = _sharing(labels, {}, raw_product)
        out["product"] = base_product
    if direct is None and raw_product:
        by_raw = options["overrides_by_product"].get(normalize_product(raw_product))
        by_base = options["overrides_by_product"].get(normalize_product(base_product))
        if by_raw or by_base:
            direct, out["scheme"] = by_raw or by_base, "override"
            out["suffix"] = not by_raw
    elif direct is not None:
        out["suffix"] = False

    if direct is not None:
        out["base_type"] = direct
        if direct in KNOWN_GPU_TYPES:
            out["table"] = (direct,) + KNOWN_GPU_TYPES[direct]
        if out["scheme"] in ("accelerator-label", "eks") and base_product:
            suggested = match_product(base_product, memory_mib)
            if suggested and suggested[0] != direct and raw_product == base_product:
                notes.append(("accelerator_label_disagrees", "node %s: label %s=%s was not set by llmops.serving "
                              "and is kept, but its product %r suggests %s" % (
                                  name, acc if out["scheme"] == "accelerator-label" else L_EKS, direct,
                                  raw_product, suggested[0])))
        return out
    if base_product:
        table = match_product(base_product, memory_mib)
        if table:
            out["base_type"], out["table"] = table[0], table
        else:
            out["base_type"] = unknown_product_type(vendor, base_product)
            notes.append(("unknown_product", "node %s: GPU product %r (label %s) is not in the product table; "
                          "classified as %s. Map it with gpu_type_overrides: {%r: <gpu_type>}" % (
                              name, raw_product, raw_key, out["base_type"], base_product)))
        return out
    if family:
        base_type, ambiguous = family_memory_type(family, memory_mib)
        out["base_type"], out["scheme"] = base_type, "family-only"
        if ambiguous:
            notes.append(("ambiguous_product", "node %s: family %r with %s MiB per GPU matches several products; "
                          "classified as %s. Install GPU Feature Discovery or map it with gpu_type_overrides: "
                          "{%r: <gpu_type>}" % (name, family, memory_mib, base_type, name)))
        elif base_type in KNOWN_GPU_TYPES:
            out["table"] = (base_type,) + KNOWN_GPU_TYPES[base_type]
        return out
    inst_product = instance_type_product(labels.get(L_INSTANCE_TYPE) or labels.get(L_INSTANCE_TYPE_BETA))
    if inst_product:
        table = match_product(inst_product, memory_mib)
        out.update(base_type=table[0], table=table, scheme="instance-type", product=inst_product)
        return out
    out["base_type"], out["scheme"] = "%s-unknown" % vendor, "device-plugin-only"
    notes.append(("unlabeled_gpu_node", "node %s has GPUs but no label tells which: classified as %s. Install "
                  "NVIDIA GPU Feature Discovery (or the GPU Operator), or map it with gpu_type_overrides: "
                  "{%r: <gpu_type>} or label_aliases" % (name, out["base_type"], name)))
    return out


def _has_gpu_labels(labels, alias, options):
    return bool(
        labels.get(L_NV_PRESENT) == "true" or labels.get(L_NV_PRODUCT) or labels.get(L_NV_FAMILY)
        or labels.get(L_GKE) or labels.get(L_AKS) or labels.get(L_KARPENTER_NAME) or labels.get(L_AMD_PRODUCT)
        or labels.get(L_AMD_PRODUCT_BETA) or labels.get(L_INTEL_PRODUCT)
        or labels.get(options["accelerator_label"]) or labels.get(L_EKS) or alias.get("gpu_type")
        or alias.get("product"))


def classify_node(node, options, allocated=None):
    """One node -> GPU record (dict) or None for a CPU-only node.

    ``allocated`` is {resource_name: count} of running pods' requests on this node, or None when
    pods were not read.
    """
    meta = node.get("metadata") or {}
    name = meta.get("name")
    all_labels = meta.get("labels") or {}
    managed = managed_label_keys(node)
    labels = dict((k, v) for k, v in all_labels.items() if k not in managed)
    resources = gpu_resources(node)
    alias = _alias_labels(labels, options["label_aliases"])
    has_resource = any(r["capacity"] > 0 or r["allocatable"] > 0 for r in resources.values())
    if not has_resource and not _has_gpu_labels(labels, alias, options) \
            and name not in options["gpu_type_overrides"]:
        return None

    vendors = sorted(set(gpu_resource_vendor(r) for r, v in resources.items()
                         if v["capacity"] > 0 or v["allocatable"] > 0))
    vendor = vendors[0] if vendors else _label_vendor(labels)
    memory_mib, memory_label = _label_memory_mib(labels, alias)
    family_key, family = _first_label(labels, alias.get("family"), L_NV_FAMILY, L_AMD_FAMILY, L_INTEL_FAMILY)
    resolved = _resolve_base_type(name, labels, alias, options, vendor, memory_mib, family)
    notes = resolved["notes"]
    table = resolved["table"]
    if table is not None:
        if not vendors:
            vendor = table[1]
        family = family or table[2]
    raw_product = resolved["raw_product"]
    mode, replicas, _base, mig_profile, mig_mixed = _sharing(labels, resources, raw_product)
    base_type = resolved["base_type"]
    nominal_gb = table[3] if table else None

    gpus = []
    if mig_mixed:
        for profile, resource_name in mig_mixed:
            prof_key = "nvidia.com/mig-%s" % profile
            prof_gb = _profile_gb(profile)
            prof_mem = parse_memory_mib(labels.get(prof_key + ".memory")) or (prof_gb * 1024 if prof_gb else None)
            gpus.append(_gpu_entry("%s-%s" % (base_type, profile_slug(profile)), resource_name, resources,
                                   allocated, prof_mem, prof_gb, profile, labels.get(prof_key + ".product")))
    else:
        gpu_type = base_type
        gb = nominal_gb
        mem = memory_mib
        if mig_profile:
            gb = _profile_gb(mig_profile)
            if resolved["suffix"]:
                gpu_type = "%s-%s" % (gpu_type, profile_slug(mig_profile))
        if mode in ("time-slicing", "mps") and resolved["suffix"]:
            gpu_type = "%s-shared" % gpu_type
        if mem is None and gb:
            mem = gb * 1024
        gpus.append(_gpu_entry(gpu_type, _primary_resource(resources, vendor), resources, allocated, mem, gb,
                               mig_profile, raw_product or resolved["product"]))

    for gpu in gpus:
        gpu["llm_engine_gpu_type"], gpu["llm_engine_reason"] = llm_engine_type_of(
            name, gpu, resolved, base_type, vendor, mode, options)
    primary = max(gpus, key=lambda g: (g["allocatable"], g["gpu_type"]))
    single = len(set(g["gpu_type"] for g in gpus)) == 1
    already_said = set(code for code, _msg in notes) & {"unknown_product", "ambiguous_product", "unlabeled_gpu_node"}
    if single and vendor == "nvidia" and primary["llm_engine_gpu_type"] is None and not already_said:
        notes.append(("no_llm_engine_type", "node %s (%s): no LLM Engine gpu_type fits: %s" % (
            name, primary["gpu_type"], primary["llm_engine_reason"])))
    taints, tolerations_needed = _taint_facts(node)
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    allocatable = status.get("allocatable") or {}
    ready = _node_ready(node)
    cordoned = bool(spec.get("unschedulable"))
    is_k3s = _is_k3s(node)
    count = _to_int(labels.get(alias.get("count")) if alias.get("count") else None) \
        or _to_int(labels.get(L_NV_COUNT)) or _to_int(labels.get(L_KARPENTER_COUNT)) \
        or _to_int(labels.get(L_INTEL_COUNT))
    if count is None and not mig_mixed:
        count = primary["capacity"] // replicas if replicas > 1 else primary["capacity"]
    if not has_resource:
        notes.append(("no_allocatable_gpu", "node %s carries GPU labels but offers no GPU resource: is the "
                      "device plugin running there?" % name))
    if not ready:
        notes.append(("node_not_ready", "GPU node %s is NotReady: its GPUs are not counted as schedulable" % name))
    if cordoned:
        notes.append(("node_cordoned", "GPU node %s is cordoned: its GPUs are not counted as schedulable" % name))
    blocking = [t for t in taints if t["blocks_gpu_pods"]]
    if blocking:
        notes.append(("blocking_taints", "GPU node %s has taints LLM Engine endpoint pods do not tolerate (%s): "
                      "they cannot land there" % (name, ", ".join(
                          "%s=%s:%s" % (t["key"], t["value"], t["effect"]) for t in blocking))))
    primary_res = resources.get(primary["resource_name"]) or {"capacity": 0}
    node_info = status.get("nodeInfo") or {}

    return {
        "name": name,
        "vendor": vendor,
        "gpu_type": primary["gpu_type"],
        "gpu_types": sorted(set(g["gpu_type"] for g in gpus)),
        "llm_engine_gpu_type": primary["llm_engine_gpu_type"] if single else None,
        "llm_engine_reason": primary["llm_engine_reason"] if single else (
            "the node offers several GPU types (MIG mixed); one accelerator label cannot name them all"),
        "gpus": gpus,
        "product": raw_product or resolved["product"],
        "product_label": resolved["raw_product_key"],
        "family": family,
        "memory_mib": primary["memory_mib"],
        "memory_source": "label" if memory_label and primary["memory_mib"] == memory_mib and not mig_mixed else (
            "mig-profile" if mig_mixed else ("product-table" if primary["memory_mib"] else "unknown")),
        "count": count,
        "resource_name": primary["resource_name"],
        "resources": dict((r, {"capacity": v["capacity"], "allocatable": v["allocatable"],
                               "allocated": None if allocated is None else int(allocated.get(r, 0)),
                               "free": None if allocated is None else max(
                                   0, v["allocatable"] - int(allocated.get(r, 0)))})
                          for r, v in resources.items()),
        "gpus_capacity": primary_res["capacity"],
        "gpus_allocatable": primary["allocatable"],
        "gpus_allocated": primary["allocated"],
        "gpus_free": primary["free"],
        "sharing": {
            "mode": mode,
            "replicas": replicas,
            "mig_profiles": [dict((k, g[k]) for k in _PROFILE_KEYS) for g in gpus if g["profile"]],
        },
        "labeling_scheme": resolved["scheme"],
        "taints": taints,
        "blocks_gpu_pods": bool(blocking),
        "tolerations_needed": tolerations_needed,
        "ready": ready,
        "cordoned": cordoned,
        "schedulable": ready and not cordoned,
        "cpu_allocatable_millicores": _millicores(allocatable.get("cpu")),
        "memory_allocatable_bytes": _int_quantity(allocatable.get("memory")),
        "ephemeral_storage_allocatable_bytes": _int_quantity(allocatable.get("ephemeral-storage")),
        "kubelet_version": node_info.get("kubeletVersion"),
        "is_k3s": is_k3s,
        "runtime_class": "nvidia" if is_k3s and vendor == "nvidia" else None,
        "driver_version": _driver_version(labels),
        "accelerator_label_value": all_labels.get(options["accelerator_label"]),
        "accelerator_label_managed": options["accelerator_label"] in managed,
        "_notes": notes,
    }


_PROFILE_KEYS = ("profile", "gpu_type", "resource_name", "allocatable", "memory_mib", "llm_engine_gpu_type")


def llm_engine_type_of(name, gpu, resolved, base_type, vendor, mode, options):
    """(LLM Engine gpu_type, reason) of one GPU entry of a node: an explicit llm_engine_gpu_types
    mapping (node name, then product label value, then the collection's gpu_type) or the decision."""
    by_name = options.get("llm_types_by_name") or {}
    mapped = (options.get("llm_engine_gpu_types") or {}).get(name)
    for key in (gpu["product"], resolved.get("product"), gpu["gpu_type"], base_type):
        if mapped is None and key:
            mapped = by_name.get(normalize_product(key))
    if mapped is not None:
        return mapped, None
    llm_type, reason, suggestion = decide_llm_engine_type(
        gpu["gpu_type"], base_type, vendor, mode, gpu["profile"] if mode in ("mig-single", "mig-mixed") else None)
    if llm_type is not None or vendor != "nvidia":
        return llm_type, reason
    key = gpu["product"] or name
    if suggestion:
        return None, ("%s. If endpoints that ask for %s may land here anyway, map it: "
                      "gpu_discovery_llm_engine_gpu_types: {%r: %s}" % (reason, suggestion, key, suggestion))
    return None, ("%s. To use it anyway, map it to one of %s: gpu_discovery_llm_engine_gpu_types: {%r: <gpu_type>}"
                  % (reason, ", ".join(_whole_llm_types() + sorted(LLM_ENGINE_MIG_TYPES)), key))


def _profile_gb(profile):
    match = _PROFILE_GB.search("." + profile.split(".", 1)[-1]) if profile else None
    return int(match.group(1)) if match else None


_DEFAULT_RESOURCE = {"nvidia": "nvidia.com/gpu", "amd": "amd.com/gpu", "intel": "gpu.intel.com/i915",
                     "habana": "habana.ai/gaudi"}


def _primary_resource(resources, vendor):
    """The GPU resource pods request on this node (whole GPUs before shared, NVIDIA first).

    A node with GPU labels but no GPU resource (device plugin down) gets its vendor's usual one.
    """
    order = ("nvidia.com/gpu", "nvidia.com/gpu.shared", "amd.com/gpu", "gpu.intel.com/xe",
             "gpu.intel.com/i915", "habana.ai/gaudi")
    present = [r for r in order if r in resources and (resources[r]["capacity"] or resources[r]["allocatable"])]
    if present:
        return present[0]
    return _DEFAULT_RESOURCE.get(vendor, "nvidia.com/gpu")


def _gpu_entry(gpu_type, resource_name, resources, allocated, memory_mib, nominal_gb, profile, product):
    res = resources.get(resource_name) or {"capacity": 0, "allocatable": 0}
    used = None if allocated is None else int(allocated.get(resource_name, 0)) if resource_name else 0
    return {
        "gpu_type": gpu_type,
        "resource_name": resource_name,
        "capacity": res["capacity"],
        "allocatable": res["allocatable"],
        "allocated": used,
        "free": None if used is None else max(0, res["allocatable"] - used),
        "memory_mib": memory_mib,
        "nominal_gb": nominal_gb,
        "profile": profile,
        "product": product,
    }


# --------------------------------------------------------------------------------------------------
# Pods -> allocated GPUs
# --------------------------------------------------------------------------------------------------
def _container_gpu(container):
    resources = container.get("resources") or {}
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    out = {}
    for name in set(requests) | set(limits):
        if gpu_resource_vendor(name):
            value = requests.get(name, limits.get(name))
            out[name] = _int_quantity(value) or 0
    return out


def pod_gpu_requests(pod):
    """(node_name, {resource: count}) of a scheduled, non-terminated pod; None when irrelevant.

    Effective request as the scheduler computes it: max(sum of app containers + sidecars, largest
    init container with the sidecars started before it).
    """
    spec = pod.get("spec") or {}
    node_name = spec.get("nodeName")
    phase = (pod.get("status") or {}).get("phase")
    if not node_name or phase in ("Succeeded", "Failed"):
        return None
    total = {}
    for container in spec.get("containers") or []:
        for name, value in _container_gpu(container).items():
            total[name] = total.get(name, 0) + value
    sidecars = {}
    init_peak = {}
    for container in spec.get("initContainers") or []:
        req = _container_gpu(container)
        if container.get("restartPolicy") == "Always":
            for name, value in req.items():
                sidecars[name] = sidecars.get(name, 0) + value
        else:
            for name, value in req.items():
                init_peak[name] = max(init_peak.get(name, 0), value + sidecars.get(name, 0))
    for name, value in sidecars.items():
        total[name] = total.get(name, 0) + value
    for name, value in init_peak.items():
        total[name] = max(total.get(name, 0), value)
    total = dict((k, v) for k, v in total.items() if v)
    if not total:
        return None
    return node_name, total


def add_pod_allocations(allocations, pods):
    """Accumulate GPU requests of ``pods`` into {node: {resource: count}} (in place)."""
    for pod in pods:
        found = pod_gpu_requests(pod)
        if found is None:
            continue
        node_name, requests = found
        per_node = allocations.setdefault(node_name, {})
        for name, value in requests.items():
            per_node[name] = per_node.get(name, 0) + value
    return allocations


# --------------------------------------------------------------------------------------------------
# Label plan
# --------------------------------------------------------------------------------------------------
def desired_labels(record, options):
    """{label: value or None} a GPU node should carry: the accelerator label with its LLM Engine
    gpu_type and GPU_PRODUCT_LABEL with the collection's gpu_type. None: the label should not be
    there (no LLM Engine type fits, or a MIG mixed node with several types, or not a GPU node)."""
    acc = options["accelerator_label"]
    single = record is not None and len(record["gpu_types"]) == 1
    return {
        acc: record["llm_engine_gpu_type"] if single else None,
        GPU_PRODUCT_LABEL: record["gpu_types"][0] if single else None,
    }


def plan_label_change(node, record, options):
    """The label change for one node as {node, action, label, old_value, new_value, patch}.

    Only the accelerator label and GPU_PRODUCT_LABEL are touched, and each is only changed or
    removed when the managed-labels annotation says we set it; a value set by someone else is a
    conflict (reported, not touched). ``label``, ``old_value`` and ``new_value`` describe the
    accelerator label; ``patch`` holds every change. Returns (change or None, conflict, desired
    accelerator value).
    """
    meta = node.get("metadata") or {}
    name = meta.get("name")
    labels = meta.get("labels") or {}
    acc = options["accelerator_label"]
    managed = managed_label_keys(node)
    wanted = desired_labels(record, options)
    label_patch = {}
    new_managed = set(managed)
    actions = []
    conflict = False
    for key in (acc, GPU_PRODUCT_LABEL):
        desired = wanted[key]
        current = labels.get(key)
        if desired is not None:
            if current == desired:
                continue
            if current is None:
                label_patch[key] = desired
                new_managed.add(key)
                actions.append("add")
            elif key in managed:
                label_patch[key] = desired
                actions.append("update")
            elif key == acc:
                conflict = True
        elif current is not None and key in managed:
            label_patch[key] = None
            new_managed.discard(key)
            actions.append("remove")
        elif current is not None and key == acc and record is not None:
            conflict = True  # someone else's value where no LLM Engine type fits
    # Other keys in the annotation (set under another accelerator_label) are kept as they are:
    # another play may still rely on them.
    if not label_patch and new_managed == managed:
        return None, conflict, wanted[acc]
    annotations = {MANAGED_LABELS_ANNOTATION: ",".join(sorted(new_managed)) if new_managed else None}
    current = labels.get(acc)
    change = {
        "node": name,
        "action": actions[0] if len(set(actions)) == 1 else "update",
        "label": acc,
        "old_value": current,
        "new_value": label_patch.get(acc, current),
        "labels": dict((k, {"old_value": labels.get(k), "new_value": v}) for k, v in sorted(label_patch.items())),
        "patch": {"metadata": {"labels": label_patch, "annotations": annotations}},
    }
    return change, conflict, wanted[acc]


# --------------------------------------------------------------------------------------------------
# Selectors
# --------------------------------------------------------------------------------------------------
class LabelIndex(object):
    """(label, value) -> set of node names, for exactness checks over the whole cluster."""

    def __init__(self, labels_by_node):
        self.all_nodes = set(labels_by_node)
        self._index = {}
        for node_name, labels in labels_by_node.items():
            for key, value in labels.items():
                self._index.setdefault((key, value), set()).add(node_name)

    def matching(self, selector):
        result = None
        for key, value in selector.items():
            nodes = self._index.get((key, value), set())
            result = nodes if result is None else result & nodes
            if not result:
                return set()
        return set(self.all_nodes) if result is None else set(result)


# Tiers in order of preference: labels that identify the GPU model, then family + memory, then our
# GPU_PRODUCT_LABEL (existing or applied by the role), then the accelerator label where it names
# this very type, then the hostname of a single node.
SELECTOR_TIERS = ("product", "family-memory", "gpu-product-label", "accelerator-label", "hostname")


def _selector_candidates(record, gpu, labels, options, planned_value):
    """{tier: [selector dicts]} this node offers for one of its GPU types."""
    aliases = options["label_aliases"]
    alias_keys = dict((m, k) for k, m in aliases.items() if k in labels)
    cands = dict((tier, []) for tier in SELECTOR_TIERS)
    if gpu["profile"] and record["sharing"]["mode"] == "mig-mixed":
        key = "nvidia.com/mig-%s.product" % gpu["profile"]
        if labels.get(key):
            cands["product"].append({key: labels[key]})
    else:
        eks = L_EKS if L_EKS != options["accelerator_label"] else None
        for key in (L_NV_PRODUCT, alias_keys.get("product"), alias_keys.get("gpu_type"), L_GKE,
                    L_KARPENTER_NAME, L_AMD_PRODUCT, L_AMD_PRODUCT_BETA, L_INTEL_PRODUCT, eks):
            if key and labels.get(key):
                cands["product"].append({key: labels[key]})
    for fam_key, mem_key in ((L_NV_FAMILY, L_NV_MEMORY), (alias_keys.get("family"), alias_keys.get("memory")),
                             (L_AMD_FAMILY, L_AMD_VRAM), (L_INTEL_FAMILY, L_INTEL_MEMORY)):
        if fam_key and mem_key and labels.get(fam_key) and labels.get(mem_key):
            cands["family-memory"].append({fam_key: labels[fam_key], mem_key: labels[mem_key]})
    acc = options["accelerator_label"]
    if labels.get(GPU_PRODUCT_LABEL) == gpu["gpu_type"]:
        cands["gpu-product-label"].append({GPU_PRODUCT_LABEL: gpu["gpu_type"]})
    if planned_value == gpu["gpu_type"]:
        cands["accelerator-label"].append({acc: gpu["gpu_type"]})
    if labels.get(L_HOSTNAME):
        cands["hostname"].append({L_HOSTNAME: labels[L_HOSTNAME]})
    return cands


def choose_selector(type_nodes, per_node_candidates, index):
    """Most specific exact selector for a set of nodes.

    Walks the tiers in order; within a tier, the first selector offered identically by every node of
    the type and matching no other node wins. Returns (selector, exact, tier). Without an exact one,
    returns the common candidate with the fewest extra nodes (exact False), or ({}, False, None).
    """
    type_nodes = set(type_nodes)
    best = None
    for tier in SELECTOR_TIERS:
        common = None
        for node_name in sorted(type_nodes):
            offered = [tuple(sorted(s.items())) for s in per_node_candidates[node_name].get(tier, [])]
            if common is None:
                common = list(offered)
            else:
                common = [s for s in common if s in offered]
        for sel in common or []:
            selector = dict(sel)
            matched = index.matching(selector)
            if matched == type_nodes:
                return selector, True, tier
            if type_nodes <= matched:
                extra = len(matched - type_nodes)
                if best is None or extra < best[0]:
                    best = (extra, selector, tier)
    if best is not None:
        return best[1], False, best[2]
    return {}, False, None


# --------------------------------------------------------------------------------------------------
# Whole-cluster discovery
# --------------------------------------------------------------------------------------------------
def discover(nodes, options, allocations=None):
    """Classify every node and aggregate. ``nodes`` are Node dicts (pruned or not)."""
    acc = options["accelerator_label"]
    records = []
    record_by_name = {}
    warnings = []
    label_changes = []
    post_labels = {}
    planned_values = {}
    conflicts = []
    nodes_total = 0
    all_k3s = True
    for node in nodes:
        nodes_total += 1
        name = (node.get("metadata") or {}).get("name")
        node_alloc = None if allocations is None else allocations.get(name, {})
        record = classify_node(node, options, node_alloc)
        labels = dict((node.get("metadata") or {}).get("labels") or {})
        if not _is_k3s(node):
            all_k3s = False
        change, conflict, desired = plan_label_change(node, record, options)
        if options["plan_labels"]:
            if change is not None:
                label_changes.append(change)
                for key, value in change["patch"]["metadata"]["labels"].items():
                    if value is None:
                        labels.pop(key, None)
                    else:
                        labels[key] = value
            if conflict:
                conflicts.append((name, labels.get(acc), desired))
        post_labels[name] = labels
        if record is not None:
            planned_values[name] = labels.get(acc)
            warnings.extend({"code": code, "node": name, "message": msg} for code, msg in record.pop("_notes"))
            record["accelerator_label_desired"] = desired
            records.append(record)
            record_by_name[name] = record
    for name, current, desired in conflicts:
        if current in LLM_ENGINE_GPU_TYPES:
            fix = "Remove the label, or set gpu_discovery_llm_engine_gpu_types: {%r: %r} to agree with it" % (
                name, current)
        else:
            fix = ("LLM Engine accepts only %s, so endpoints can never ask for %s: remove the label and let the "
                   "role set it" % (", ".join(LLM_ENGINE_GPU_TYPES), current))
        says = desired or "no LLM Engine type fits (see llm_engine_reason)"
        warnings.append({"code": "accelerator_label_conflict", "node": name, "message": (
            "node %s: label %s=%s was not set by llmops.serving, so it is left alone; discovery says %s. %s" % (
                name, acc, current, says, fix))})
    for record in records:
        if record["sharing"]["mode"] == "mig-mixed" and len(record["gpu_types"]) > 1:
            warnings.append({"code": "mig_mixed_node", "node": record["name"], "message": (
                "node %s uses the MIG mixed strategy (%s): one accelerator label cannot name several types, so "
                "it is not labeled, and LLM Engine endpoint pods (which request nvidia.com/gpu) cannot use it. "
                "Use gpu_discovery_types (resource_name, node_selector) or the MIG single strategy"
                % (record["name"], ", ".join(record["gpu_types"])))})

    index = LabelIndex(post_labels)
    types = _aggregate_types(records, post_labels, planned_values, options, index, warnings)
    _driver_warnings(records, warnings)
    _override_warnings(records, options, warnings)
    recommended = recommended_hardware(types, records, planned_values)
    schedulable = sum(t["gpus_schedulable"] for t in types.values())
    summary = {
        "nodes_total": nodes_total,
        "gpu_nodes": len(records),
        "cpu_nodes": nodes_total - len(records),
        "gpu_types": sorted(types),
        "gpus_total": sum(t["gpus_total"] for t in types.values()),
        "gpus_schedulable": schedulable,
        "gpus_free": None if allocations is None else sum(t["gpus_free"] for t in types.values()),
        "vendors": sorted(set(r["vendor"] for r in records)),
        "k3s_nodes": sorted(r["name"] for r in records if r["is_k3s"]),
        "allocations_read": allocations is not None,
    }
    return {
        "nodes": records,
        "gpu_types": types,
        "recommended_hardware": recommended,
        "label_changes": label_changes,
        "warnings": warnings,
        "summary": summary,
        "is_k3s": bool(nodes_total) and all_k3s,
        "accelerator_label": acc,
    }


def _aggregate_types(records, post_labels, planned_values, options, index, warnings):
    members = {}
    for record in records:
        for gpu in record["gpus"]:
            members.setdefault(gpu["gpu_type"], []).append((record, gpu))
    candidates = {}
    types = {}
    for gpu_type in sorted(members):
        entries = members[gpu_type]
        per_node = {}
        for record, gpu in entries:
            per_node[record["name"]] = _selector_candidates(
                record, gpu, post_labels[record["name"]], options, planned_values.get(record["name"]))
        candidates[gpu_type] = per_node
        node_names = sorted(set(r["name"] for r, _g in entries))
        selector, exact, tier = choose_selector(node_names, per_node, index)
        if not exact:
            warnings.append({"code": "selector_not_exact", "node": None, "message": (
                "gpu type %s: no label selects exactly its nodes (%s); node_selector %s also matches other "
                "nodes. Let the role label nodes (gpu_discovery_label_nodes: true) or add a distinguishing "
                "label" % (gpu_type, ", ".join(node_names), selector))})
        tolerations = []
        for record, _gpu in entries:
            for tol in record["tolerations_needed"]:
                if tol not in tolerations:
                    tolerations.append(tol)
        resource_counts = {}
        for _record, gpu in entries:
            resource_counts[gpu["resource_name"]] = resource_counts.get(gpu["resource_name"], 0) + 1
        resource_name = sorted(resource_counts.items(), key=lambda kv: (-kv[1], kv[0] or ""))[0][0]
        sched = [(r, g) for r, g in entries if r["schedulable"]]
        allocations_known = all(g["allocated"] is not None for _r, g in entries)
        memories = [g["memory_mib"] for _r, g in entries if g["memory_mib"]]
        nominal = [g["nominal_gb"] for _r, g in entries if g["nominal_gb"]]
        ephemeral = [r["ephemeral_storage_allocatable_bytes"] for r, _g in entries
                     if r["ephemeral_storage_allocatable_bytes"] is not None]
        vendors = sorted(set(r["vendor"] for r, _g in entries))
        products = sorted(set(g["product"] for _r, g in entries if g["product"]))
        families = sorted(set(r["family"] for r, _g in entries if r["family"]))
        modes = sorted(set(r["sharing"]["mode"] for r, _g in entries))
        llm_types = sorted(set(g["llm_engine_gpu_type"] for _r, g in entries), key=lambda t: t or "")
        types[gpu_type] = {
            "nodes": node_names,
            "gpus_total": sum(g["allocatable"] for _r, g in entries),
            "gpus_schedulable": sum(g["allocatable"] for _r, g in sched),
            "gpus_free": sum(g["free"] for _r, g in sched) if allocations_known else None,
            "gpus_per_node_max": max(g["allocatable"] for _r, g in entries),
            "gpu_memory_mib": min(memories) if memories else None,
            "gpu_memory_gb": min(nominal) if nominal else (int(min(memories) // 1024) if memories else None),
            "resource_name": resource_name,
            "node_selector": selector,
            "node_selector_exact": exact,
            "node_selector_source": tier,
            "tolerations": tolerations,
            "vendor": vendors[0] if len(vendors) == 1 else ",".join(vendors),
            "products": products,
            "family": families[0] if len(families) == 1 else (",".join(families) or None),
            "sharing": modes[0] if len(modes) == 1 else ",".join(modes),
            "ephemeral_storage_bytes_min": min(ephemeral) if ephemeral else None,
            "runtime_class": "nvidia" if any(r["runtime_class"] for r, _g in entries) else None,
            "llm_engine_gpu_type": llm_types[0] if len(llm_types) == 1 else None,
            "labeled_nodes": sorted(r["name"] for r, g in entries if g["llm_engine_gpu_type"]
                                    and planned_values.get(r["name"]) == g["llm_engine_gpu_type"]),
            "llm_engine_compatible": False,
            "llm_engine_reason": None,
        }
        if len(resource_counts) > 1:
            warnings.append({"code": "mixed_resource_names", "node": None, "message": (
                "gpu type %s is exposed under several resources (%s); resource_name is %s" % (
                    gpu_type, ", ".join(sorted(r or "none" for r in resource_counts)), resource_name))})
    return types


def _driver_warnings(records, warnings):
    versions = {}
    for record in records:
        if record["driver_version"]:
            versions.setdefault(record["driver_version"], []).append(record["name"])
    if len(versions) > 1:
        warnings.append({"code": "mixed_driver_versions", "node": None, "message": (
            "GPU nodes run different NVIDIA driver versions (%s): CUDA images built for the newest may fail on "
            "the oldest" % "; ".join("%s on %s" % (v, ", ".join(sorted(n))) for v, n in sorted(versions.items())))})


def _override_warnings(records, options, warnings):
    names = set(r["name"] for r in records)
    products = set()
    for record in records:
        for gpu in record["gpus"]:
            if gpu["product"]:
                products.add(normalize_product(gpu["product"]))
                base = _MIG_SUFFIX.match(normalize_product(gpu["product"]).replace("-SHARED", ""))
                products.add(normalize_product(gpu["product"]).replace("-SHARED", ""))
                if base:
                    products.add(base.group(1))
    for key in options["gpu_type_overrides"]:
        if key not in names and normalize_product(key) not in products:
            warnings.append({"code": "unused_override", "node": None, "message": (
                "gpu_type_overrides key %r matches no GPU node name and no GPU product label: check the "
                "spelling (node names: %s)" % (key, ", ".join(sorted(names)) or "none"))})


# --------------------------------------------------------------------------------------------------
# LLM Engine recommended hardware
# --------------------------------------------------------------------------------------------------
def _type_reason(info, entries):
    """Why LLM Engine endpoint pods cannot use a GPU type at all, or None."""
    llm_types = sorted(set(g["llm_engine_gpu_type"] for _r, g in entries), key=lambda t: t or "")
    if info["resource_name"] != LLM_ENGINE_GPU_RESOURCE:
        return "exposed as %s; LLM Engine endpoint pods request %s" % (info["resource_name"], LLM_ENGINE_GPU_RESOURCE)
    if None in llm_types:
        return [g["llm_engine_reason"] for _r, g in entries if g["llm_engine_gpu_type"] is None][0]
    if len(llm_types) > 1:
        return ("its nodes map to different LLM Engine types (%s): map them alike with "
                "gpu_discovery_llm_engine_gpu_types" % ", ".join(llm_types))
    if info["sharing"] not in ("none", "mig-single"):
        return "GPUs are shared (%s) without memory isolation" % info["sharing"]
    if not info["gpu_memory_gb"]:
        return "GPU memory unknown"
    return None


def _usable_limits(llm_type):
    """(cpus, memory GiB, storage GiB) a worker of ``llm_type`` may request: LLM Engine's limit for
    the type minus what its forwarder sidecar takes (LLM_ENGINE_INSTANCE_LIMITS)."""
    limits = LLM_ENGINE_INSTANCE_LIMITS[llm_type]
    usable = [parse_quantity(limits[i]) - parse_quantity(LLM_ENGINE_FORWARDER_USAGE[i]) for i in range(3)]
    return int(math.floor(usable[0])), int(math.floor(usable[1] / GIB)), int(math.floor(usable[2] / GIB))


def recommended_hardware(types, records, planned_values):
    """``recommendedHardware`` for the LLM Engine chart: {byGpuMemoryGb: [...], byModelName: []}.

    Rows name LLM Engine gpu_types only. A GPU type qualifies when LLM Engine can place pods on it:
    an LLM Engine gpu_type fits it (or is mapped), whole (not time-sliced) GPUs exposed as
    ``nvidia.com/gpu``, nodes that carry (or will carry) ``<accelerator_label>=<llm_engine_gpu_type>``,
    are Ready, uncordoned and have no taint the endpoint pods do not tolerate, and a known memory
    size. Nodes are then pooled per LLM Engine gpu_type (an endpoint asking for it may land on any
    of them): ``gpu_memory_le`` counts the smallest real GPU memory of the pool (an H200 pooled as
    ``nvidia-hopper-h100`` counts 141 GB). For each GPU count (1, 2, 4, ... up to the largest node),
    cpus and memory are the share of the smallest such node (90%, one CPU kept back for the
    forwarder and daemons) and storage what the model needs (1.25 x GPU memory) but never more than
    90% of the smallest node's ephemeral storage; each is capped at what LLM Engine allows per
    worker of that type. Entries are sorted by gpu_memory_le; for equal memory fewer GPUs win.
    """
    by_name = dict((r["name"], r) for r in records)
    pools = {}
    for gpu_type, info in sorted(types.items()):
        entries = [(by_name[n], g) for n in info["nodes"] for g in by_name[n]["gpus"] if g["gpu_type"] == gpu_type]
        reason = _type_reason(info, entries)
        hosts = []
        if reason is None:
            for record, gpu in entries:
                if planned_values.get(record["name"]) != gpu["llm_engine_gpu_type"]:
                    continue
                if record["schedulable"] and not record["blocks_gpu_pods"] and gpu["allocatable"] > 0:
                    hosts.append((record, gpu))
            if not hosts:
                reason = "no Ready, uncordoned node without blocking taints carries the accelerator label %s" % (
                    info["llm_engine_gpu_type"])
        info["llm_engine_compatible"] = reason is None
        info["llm_engine_reason"] = reason
        if reason is None:
            pools.setdefault(info["llm_engine_gpu_type"], []).extend(
                (record, gpu, info["gpu_memory_gb"]) for record, gpu in hosts)
    entries = []
    for llm_type, hosts in sorted(pools.items()):
        max_cpus, max_memory_gib, max_storage_gib = _usable_limits(llm_type)
        memory_gb = min(gb for _r, _g, gb in hosts)
        max_gpus = max(g["allocatable"] for _r, g, _gb in hosts)
        capacity = sum(g["allocatable"] for _r, g, _gb in hosts)
        count = 1
        while count <= max_gpus:
            fit = [(r, g) for r, g, _gb in hosts if g["allocatable"] >= count]
            cpus = min(max(1, int(math.floor((r["cpu_allocatable_millicores"] or 0) / 1000.0
                                             * count / g["allocatable"] * 0.9)) - 1) for r, g in fit)
            memory_gib = min(int(math.floor((r["memory_allocatable_bytes"] or 0) / float(GIB)
                                            * count / g["allocatable"] * 0.9)) for r, g in fit)
            ephemeral_gib = min(int(math.floor((r["ephemeral_storage_allocatable_bytes"] or 0) / float(GIB) * 0.9))
                                for r, _g in fit)
            gpu_memory_le = memory_gb * count
            storage_gib = min(int(math.ceil(gpu_memory_le * 1.25)), ephemeral_gib, max_storage_gib)
            entries.append(((gpu_memory_le, count, -capacity, llm_type), {
                "gpu_memory_le": gpu_memory_le,
                "cpus": max(1, min(cpus, max_cpus)),
                "gpus": count,
                "memory": "%dGi" % max(1, min(memory_gib, max_memory_gib)),
                "storage": "%dGi" % max(1, storage_gib),
                "gpu_type": llm_type,
                "nodes_per_worker": 1,
            }))
            count *= 2
    entries.sort(key=lambda e: e[0])
    out = []
    seen = set()
    for _key, entry in entries:
        if entry["gpu_memory_le"] in seen:
            continue
        seen.add(entry["gpu_memory_le"])
        out.append(entry)
    return {"byGpuMemoryGb": out, "byModelName": []}
