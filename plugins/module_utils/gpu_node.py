# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE)
"""One node's GPUs: options, node facts, ``classify_node`` (which GPU type is this node) and the GPU
requests of pods per node. Pure functions of Kubernetes objects as plain dicts.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.llmops.serving.plugins.module_utils.gpu import (
    _MIG_RESOURCE,
    _MIG_SUFFIX,
    _NVIDIA_DRIVER_LABELS,
    ALIAS_MEANINGS,
    DEFAULT_ACCELERATOR_LABEL,
    KNOWN_GPU_TYPES,
    L_AKS,
    L_AMD_FAMILY,
    L_AMD_PRODUCT,
    L_AMD_PRODUCT_BETA,
    L_AMD_VRAM,
    L_AMD_VRAM_BETA,
    L_EKS,
    L_GKE,
    L_INSTANCE_TYPE,
    L_INSTANCE_TYPE_BETA,
    L_INTEL_COUNT,
    L_INTEL_FAMILY,
    L_INTEL_MEMORY,
    L_INTEL_PRODUCT,
    L_KARPENTER_COUNT,
    L_KARPENTER_MANUFACTURER,
    L_KARPENTER_MEMORY,
    L_KARPENTER_NAME,
    L_NV_COUNT,
    L_NV_FAMILY,
    L_NV_MEMORY,
    L_NV_PRESENT,
    L_NV_PRODUCT,
    L_NV_REPLICAS,
    L_NV_SHARING,
    LLM_ENGINE_GPU_TYPES,
    LLM_ENGINE_GPU_TYPES_REJECTED_ON_CREATE,
    LLM_ENGINE_MIG_TYPES,
    LLM_ENGINE_TOLERATION,
    MANAGED_LABELS_ANNOTATION,
    DiscoveryError,
    _profile_gb,
    _to_int,
    _whole_llm_types,
    decide_llm_engine_type,
    family_memory_type,
    instance_type_product,
    match_product,
    normalize_product,
    profile_slug,
    unknown_product_type,
)
from ansible_collections.llmops.serving.plugins.module_utils.k8s_names import (
    is_valid_label_key,
    is_valid_label_value,
)
from ansible_collections.llmops.serving.plugins.module_utils.k8s_quantity import (
    parse_int_quantity,
    parse_memory_mib,
    parse_millicores,
)


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
                "capacity": parse_int_quantity(capacity.get(name)) or 0,
                "allocatable": parse_int_quantity(allocatable.get(name)) or 0,
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
    Over 80 lines: one ordered chain of evidence (node override, alias label, accelerator / EKS label,
    product override, product table, family + memory, instance type, device plugin only), each step a
    few lines; splitting it would hide the order.
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
    pods were not read. Over 80 lines: a third of it is the record literal, one line per field of
    gpu_node_info's documented ``nodes`` return value.
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

    if mig_mixed:
        gpus = _mig_mixed_gpus(labels, resources, allocated, base_type, mig_mixed)
    else:
        gpus = [_whole_node_gpu(resources, allocated, resolved, vendor, memory_mib, nominal_gb, mode, mig_profile,
                                raw_product)]
    for gpu in gpus:
        gpu["llm_engine_gpu_type"], gpu["llm_engine_reason"] = llm_engine_type_of(
            name, gpu, resolved, base_type, vendor, mode, options)
    primary = max(gpus, key=lambda g: (g["allocatable"], g["gpu_type"]))
    single = len(set(g["gpu_type"] for g in gpus)) == 1
    notes.extend(_llm_engine_type_notes(name, notes, single, vendor, primary))
    count = _to_int(labels.get(alias.get("count")) if alias.get("count") else None) \
        or _to_int(labels.get(L_NV_COUNT)) or _to_int(labels.get(L_KARPENTER_COUNT)) \
        or _to_int(labels.get(L_INTEL_COUNT))
    if count is None and not mig_mixed:
        count = primary["capacity"] // replicas if replicas > 1 else primary["capacity"]
    scheduling = _scheduling_facts(node, vendor)
    notes.extend(_availability_notes(name, has_resource, scheduling))
    primary_res = resources.get(primary["resource_name"]) or {"capacity": 0}

    record = {
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
        "resources": _resource_view(resources, allocated),
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
        "driver_version": _driver_version(labels),
        "accelerator_label_value": all_labels.get(options["accelerator_label"]),
        "accelerator_label_managed": options["accelerator_label"] in managed,
        "_notes": notes,
    }
    record.update(scheduling)
    return record


def _llm_engine_type_notes(name, notes, single, vendor, primary):
    """A note when an NVIDIA node's one GPU type has no LLM Engine gpu_type, unless a note already says why."""
    already_said = set(code for code, _msg in notes) & {"unknown_product", "ambiguous_product", "unlabeled_gpu_node"}
    if single and vendor == "nvidia" and primary["llm_engine_gpu_type"] is None and not already_said:
        return [("no_llm_engine_type", "node %s (%s): no LLM Engine gpu_type fits: %s" % (
            name, primary["gpu_type"], primary["llm_engine_reason"]))]
    return []


def _resource_view(resources, allocated):
    """Per GPU resource name: capacity, allocatable, and (when pods were read) allocated and free."""
    return dict((r, {"capacity": v["capacity"], "allocatable": v["allocatable"],
                     "allocated": None if allocated is None else int(allocated.get(r, 0)),
                     "free": None if allocated is None else max(0, v["allocatable"] - int(allocated.get(r, 0)))})
                for r, v in resources.items())


def _mig_mixed_gpus(labels, resources, allocated, base_type, mig_mixed):
    """One GPU entry per MIG profile a node with the mixed MIG strategy offers."""
    gpus = []
    for profile, resource_name in mig_mixed:
        prof_key = "nvidia.com/mig-%s" % profile
        prof_gb = _profile_gb(profile)
        prof_mem = parse_memory_mib(labels.get(prof_key + ".memory")) or (prof_gb * 1024 if prof_gb else None)
        gpus.append(_gpu_entry("%s-%s" % (base_type, profile_slug(profile)), resource_name, resources,
                               allocated, prof_mem, prof_gb, profile, labels.get(prof_key + ".product")))
    return gpus


def _whole_node_gpu(resources, allocated, resolved, vendor, memory_mib, nominal_gb, mode, mig_profile, raw_product):
    """The GPU entry of a node offering one kind of GPU: whole, one MIG profile (single strategy) or
    shared (time-slicing / MPS get ``-shared``: no memory isolation)."""
    gpu_type = resolved["base_type"]
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
    return _gpu_entry(gpu_type, _primary_resource(resources, vendor), resources, allocated, mem, gb,
                      mig_profile, raw_product or resolved["product"])


def _scheduling_facts(node, vendor):
    """Whether and how pods can land on a node: taints, readiness, cordon, allocatable CPU/memory, k3s."""
    taints, tolerations_needed = _taint_facts(node)
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    allocatable = status.get("allocatable") or {}
    ready = _node_ready(node)
    cordoned = bool(spec.get("unschedulable"))
    is_k3s = _is_k3s(node)
    return {
        "taints": taints,
        "blocks_gpu_pods": any(t["blocks_gpu_pods"] for t in taints),
        "tolerations_needed": tolerations_needed,
        "ready": ready,
        "cordoned": cordoned,
        "schedulable": ready and not cordoned,
        "cpu_allocatable_millicores": parse_millicores(allocatable.get("cpu")),
        "memory_allocatable_bytes": parse_int_quantity(allocatable.get("memory")),
        "ephemeral_storage_allocatable_bytes": parse_int_quantity(allocatable.get("ephemeral-storage")),
        "kubelet_version": (status.get("nodeInfo") or {}).get("kubeletVersion"),
        "is_k3s": is_k3s,
        "runtime_class": "nvidia" if is_k3s and vendor == "nvidia" else None,
    }


def _availability_notes(name, has_resource, scheduling):
    """Notes on why a GPU node's GPUs cannot (all) be used: no device plugin, NotReady, cordoned, taints."""
    notes = []
    if not has_resource:
        notes.append(("no_allocatable_gpu", "node %s carries GPU labels but offers no GPU resource: is the "
                      "device plugin running there?" % name))
    if not scheduling["ready"]:
        notes.append(("node_not_ready", "GPU node %s is NotReady: its GPUs are not counted as schedulable" % name))
    if scheduling["cordoned"]:
        notes.append(("node_cordoned", "GPU node %s is cordoned: its GPUs are not counted as schedulable" % name))
    blocking = [t for t in scheduling["taints"] if t["blocks_gpu_pods"]]
    if blocking:
        notes.append(("blocking_taints", "GPU node %s has taints LLM Engine endpoint pods do not tolerate (%s): "
                      "they cannot land there" % (name, ", ".join(
                          "%s=%s:%s" % (t["key"], t["value"], t["effect"]) for t in blocking))))
    return notes


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


def _container_gpu(container):
    resources = container.get("resources") or {}
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    out = {}
    for name in set(requests) | set(limits):
        if gpu_resource_vendor(name):
            value = requests.get(name, limits.get(name))
            out[name] = parse_int_quantity(value) or 0
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
