# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE)
"""Whole-cluster GPU discovery: one record per GPU node, one aggregate per GPU type with the most
specific node selector that matches exactly that type's nodes (``choose_selector``), the
accelerator-label changes a caller may apply (``plan_label_change``), warnings, and LLM Engine
``recommendedHardware`` entries. Pure functions; ``discover`` is what ``gpu_node_info`` calls.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math

from ansible_collections.llmops.serving.plugins.module_utils.gpu import (
    _MIG_SUFFIX,
    GIB,
    GPU_PRODUCT_LABEL,
    L_AMD_FAMILY,
    L_AMD_PRODUCT,
    L_AMD_PRODUCT_BETA,
    L_AMD_VRAM,
    L_EKS,
    L_GKE,
    L_HOSTNAME,
    L_INTEL_FAMILY,
    L_INTEL_MEMORY,
    L_INTEL_PRODUCT,
    L_KARPENTER_NAME,
    L_NV_FAMILY,
    L_NV_MEMORY,
    L_NV_PRODUCT,
    LLM_ENGINE_FORWARDER_USAGE,
    LLM_ENGINE_GPU_RESOURCE,
    LLM_ENGINE_GPU_TYPES,
    LLM_ENGINE_INSTANCE_LIMITS,
    MANAGED_LABELS_ANNOTATION,
    normalize_product,
)
from ansible_collections.llmops.serving.plugins.module_utils.gpu_node import (
    _is_k3s,
    classify_node,
    managed_label_keys,
)
from ansible_collections.llmops.serving.plugins.module_utils.k8s_quantity import (
    parse_quantity,
)


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
    warnings.extend(_conflict_warnings(conflicts, acc))
    warnings.extend(_mig_mixed_warnings(records))

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


def _conflict_warnings(conflicts, acc):
    """A warning per accelerator label someone else set that disagrees with discovery, with the fix."""
    warnings = []
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
    return warnings


def _mig_mixed_warnings(records):
    warnings = []
    for record in records:
        if record["sharing"]["mode"] == "mig-mixed" and len(record["gpu_types"]) > 1:
            warnings.append({"code": "mig_mixed_node", "node": record["name"], "message": (
                "node %s uses the MIG mixed strategy (%s): one accelerator label cannot name several types, so "
                "it is not labeled, and LLM Engine endpoint pods (which request nvidia.com/gpu) cannot use it. "
                "Use gpu_discovery_types (resource_name, node_selector) or the MIG single strategy"
                % (record["name"], ", ".join(record["gpu_types"])))})
    return warnings


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
