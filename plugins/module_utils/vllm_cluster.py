# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE)
"""The ``vllm`` role's models against what it read from the cluster (``cluster_checks``): placement and
GPU capacity, node resources, storage, Secrets, PriorityClasses, and the decisions that depend on the
cluster, each in its own function: ``decide_runtime_class``, ``decide_service_monitor``,
``decide_middleware``, ``decide_network_policy``. Pure functions of the listed objects.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re

from ansible_collections.llmops.serving.plugins.module_utils.vllm_inputs import (
    MODEL_LABEL,
    VllmInputError,
    _labels_match,
    format_bytes,
    parse_bytes,
    parse_cpu,
)

# Provisioners that can only give ReadWriteOnce volumes: a shared RWX cache cannot bind on them.
RWO_ONLY_PROVISIONERS = (
    "rancher.io/local-path",
    "kubernetes.io/no-provisioner",
    "kubernetes.io/host-path",
    "ebs.csi.aws.com",
    "kubernetes.io/aws-ebs",
    "pd.csi.storage.gke.io",
    "kubernetes.io/gce-pd",
    "disk.csi.azure.com",
    "kubernetes.io/azure-disk",
    "topolvm.io",
    "local.csi.openebs.io",
    "openebs.io/local",
)
SERVICE_MONITOR_CRD = "servicemonitors.monitoring.coreos.com"
TRAEFIK_MIDDLEWARE_CRDS = (
    ("middlewares.traefik.io", "traefik.io/v1alpha1"),
    ("middlewares.traefik.containo.us", "traefik.containo.us/v1alpha1"),
)


def node_gpu_allocatable(node, resource_name):
    value = ((node.get("status") or {}).get("allocatable") or {}).get(resource_name)
    if value is None:
        return 0
    try:
        return int(str(value))
    except ValueError:
        return 0


def node_allocatable_bytes(node, key):
    value = ((node.get("status") or {}).get("allocatable") or {}).get(key)
    if value is None:
        return None
    try:
        return parse_bytes(value, "node %s %s" % (node.get("metadata", {}).get("name"), key))
    except VllmInputError:
        return None


def _node_name(node):
    return (node.get("metadata") or {}).get("name")


def _node_labels(node):
    return (node.get("metadata") or {}).get("labels") or {}


def pod_gpu_holdings(pods, resource_names):
    """Pods (raw objects) -> {(model, node): {resource: count}} for bound, non-finished pods."""
    held = {}
    for pod in pods or []:
        status = pod.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            continue
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        node = (pod.get("spec") or {}).get("nodeName")
        if not node:
            continue
        model = ((pod.get("metadata") or {}).get("labels") or {}).get(MODEL_LABEL)
        for container in (pod.get("spec") or {}).get("containers") or []:
            resources = container.get("resources") or {}
            amounts = dict(resources.get("requests") or {})
            amounts.update(resources.get("limits") or {})
            for name in resource_names:
                if name in amounts:
                    try:
                        count = int(str(amounts[name]))
                    except ValueError:
                        continue
                    key = (model, node)
                    held.setdefault(key, {})
                    held[key][name] = held[key].get(name, 0) + count
    return held


def default_storage_class(storage_classes):
    for item in storage_classes or []:
        annotations = (item.get("metadata") or {}).get("annotations") or {}
        for key in ("storageclass.kubernetes.io/is-default-class", "storageclass.beta.kubernetes.io/is-default-class"):
            if str(annotations.get(key, "")).lower() == "true":
                return item
    return None


def cluster_checks(report, specs, settings, cluster, prune):
    """Check every model against what the role read from the cluster, and make the decisions that
    depend on it: runtime_class_name (``decide_runtime_class``), service_monitor
    (``decide_service_monitor``), middleware (``decide_middleware``) and network_policy
    (``decide_network_policy``)."""
    view = _cluster_view(cluster)
    for spec in specs:
        type_info = spec.get("gpu_type_info")
        candidates = _candidate_nodes(spec, type_info, view)
        _check_gpu_fit(report, spec, type_info, candidates)
        if candidates:
            _check_node_resources(report, spec, candidates, settings)
        spec["runtime_class_name"] = decide_runtime_class(report, spec, type_info, settings, view["runtime_classes"])
        _check_priority_class(report, spec, cluster.get("priority_classes"))
        _check_secrets(report, spec, view["secrets"])
        spec["service_monitor"] = decide_service_monitor(report, settings, view["crds"])
        spec["middleware"] = decide_middleware(report, spec, view["crds"])
        spec["network_policy"] = decide_network_policy(spec, settings) if settings["network_policy_enabled"] else None
        if spec["pvc"]:
            _check_pvc(report, spec, view["classes_by_name"], view["storage_classes"], view["pvcs"])
    _check_gpu_capacity(report, specs, settings["gpu_types"] or {}, cluster.get("pods"), prune)
    _check_shared_cache(report, specs)


def _cluster_view(cluster):
    """What the role read from the cluster, indexed for the checks."""
    nodes = cluster.get("nodes") or []
    storage_classes = cluster.get("storage_classes") or []
    return {
        "nodes": nodes,
        "nodes_by_name": dict((_node_name(node), node) for node in nodes),
        "crds": set(cluster.get("crds") or []),
        "runtime_classes": set(cluster.get("runtime_classes") or []),
        "storage_classes": storage_classes,
        "classes_by_name": dict(((item.get("metadata") or {}).get("name"), item) for item in storage_classes),
        "pvcs": dict(((item.get("metadata") or {}).get("name"), item) for item in cluster.get("pvcs") or []),
        "secrets": cluster.get("secrets"),
    }


def _candidate_nodes(spec, type_info, view):
    """Nodes this model can land on: its GPU type's nodes, else those matching its selector with the GPU resource."""
    if type_info is not None:
        return [view["nodes_by_name"][item] for item in type_info.get("nodes") or [] if item in view["nodes_by_name"]]
    return [
        node
        for node in view["nodes"]
        if _labels_match(spec["node_selector"], _node_labels(node))
        and node_gpu_allocatable(node, spec["resource_name"]) > 0
    ]


def _check_gpu_fit(report, spec, type_info, candidates):
    """A replica's GPUs must fit on one candidate node; marks the spec ``gpu_impossible`` when not."""
    name = spec["name"]
    if spec["gpus"] <= 0 or spec["gpu_impossible"]:
        return
    if not candidates:
        if type_info is None:
            report.error(
                "vllm_models[%s]: no node matches node_selector %s with allocatable %s; fix the "
                "selector or gpu_resource_name"
                % (name, json.dumps(spec["node_selector"], sort_keys=True), spec["resource_name"])
            )
        else:
            report.error(
                "vllm_models[%s]: none of the nodes of GPU type %s (%s) exists any more; re-run "
                "gpu_discovery" % (name, spec["gpu_type"], ", ".join(type_info.get("nodes") or []))
            )
        return
    largest = max(candidates, key=lambda node: node_gpu_allocatable(node, spec["resource_name"]))
    most = node_gpu_allocatable(largest, spec["resource_name"])
    if spec["gpus"] > most:
        spec["gpu_impossible"] = True
        report.error(
            "vllm_models[%s]: asks %d %s per replica but the largest matching node (%s) has %d; a "
            "replica cannot span nodes, so lower gpus/tensor_parallel_size to %d or less"
            % (name, spec["gpus"], spec["resource_name"], _node_name(largest), most, most)
        )


def _check_node_resources(report, spec, candidates, settings):
    """Memory and CPU requests against the largest candidate node; an emptyDir or hostPath cache against
    the smallest candidate's ephemeral storage."""
    name = spec["name"]
    wanted = spec.get("memory_request_bytes")
    sizes = [size for size in (node_allocatable_bytes(node, "memory") for node in candidates) if size is not None]
    if wanted and sizes and wanted > max(sizes):
        report.error(
            "vllm_models[%s]: requests %s of memory but the largest matching node has %s "
            "allocatable; lower resources.requests.memory"
            % (name, format_bytes(wanted), format_bytes(max(sizes)))
        )
    cpus = [
        parse_cpu(((node.get("status") or {}).get("allocatable") or {}).get("cpu", "0"), "node cpu")
        for node in candidates
    ]
    if spec.get("cpu_request_milli") and cpus and spec["cpu_request_milli"] > max(cpus):
        report.error(
            "vllm_models[%s]: requests %sm CPU but the largest matching node has %sm allocatable; "
            "lower resources.requests.cpu" % (name, spec["cpu_request_milli"], max(cpus))
        )
    disks = [size for size in (node_allocatable_bytes(node, "ephemeral-storage") for node in candidates)
             if size is not None]
    cache_bytes = spec["cache_size_bytes"]
    if spec["cache_type"] == "emptyDir" and cache_bytes and disks and cache_bytes > min(disks):
        report.error(
            "vllm_models[%s]: emptyDir cache of %s is larger than the %s of ephemeral storage on "
            "the smallest matching node, so the kubelet would evict the pod; lower cache_size or "
            "use a PVC / hostPath cache" % (name, spec["cache_size"], format_bytes(min(disks)))
        )
    if spec["cache_type"] == "hostPath" and spec.get("model_bytes") and disks and spec["model_bytes"] > min(disks):
        report.warn(
            "vllm_models[%s]: the model (%s) is larger than the node's ephemeral storage (%s); "
            "make sure %s is on a larger disk"
            % (name, format_bytes(spec["model_bytes"]), format_bytes(min(disks)), settings["cache_host_path"])
        )


def decide_runtime_class(report, spec, type_info, settings, runtime_classes):
    """The pod's runtimeClassName: ``auto`` takes gpu_discovery's choice for the GPU type (without it, k3s
    means nvidia) when that RuntimeClass exists; an explicit name must exist; '' means none."""
    name = spec["name"]
    request = spec["runtime_class_request"]
    if request == "auto":
        if type_info is not None and "runtime_class" in type_info:
            candidate = type_info["runtime_class"]
        else:
            candidate = "nvidia" if settings["is_k3s"] else None
        if candidate and candidate in runtime_classes:
            return candidate
        if candidate:
            report.warn(
                "vllm_models[%s]: RuntimeClass %r does not exist, so pods use the default runtime and may "
                "not see the GPU on k3s; install the NVIDIA container toolkit (k3s then creates it) or set "
                "vllm_runtime_class" % (name, candidate)
            )
        return None
    if request:
        if request not in runtime_classes:
            report.error(
                "vllm_models[%s]: RuntimeClass %r does not exist; create it or set runtime_class_name "
                "to '' (none) or auto" % (name, request)
            )
        return request
    return None


def _check_priority_class(report, spec, priority_classes):
    if spec["priority_class_name"] and priority_classes is not None:
        if spec["priority_class_name"] not in priority_classes:
            report.error(
                "vllm_models[%s]: PriorityClass %r does not exist (known: %s); create it or change "
                "priority_class_name / vllm_priority_class_name"
                % (spec["name"], spec["priority_class_name"], ", ".join(sorted(priority_classes)) or "none")
            )


def _check_secrets(report, spec, secrets):
    """Secrets the pod references (env, image pull) must exist when the role could list them."""
    if secrets is None:
        return
    for secret in spec["secrets"]:
        if secret not in secrets:
            report.error(
                "vllm_models[%s]: Secret %r does not exist in namespace %s; create it first (the "
                "cluster_prereqs role creates the object-storage Secret)" % (spec["name"], secret, spec["namespace"])
            )


def decide_service_monitor(report, settings, crds):
    """The ServiceMonitor of a model ({interval, labels}) or None: ``true`` wants one (and errors
    without the Prometheus operator's CRD), ``auto`` makes one where the CRD exists, ``false`` none."""
    mode = settings["service_monitor"]
    has_crd = SERVICE_MONITOR_CRD in crds
    wanted = {
        "interval": settings["service_monitor_interval"],
        "labels": dict(settings["service_monitor_labels"] or {}),
    }
    if mode is True:
        if not has_crd:
            report.error(
                "vllm_service_monitor is true but the ServiceMonitor CRD (%s) is not installed; install "
                "the Prometheus operator or set vllm_service_monitor: auto" % SERVICE_MONITOR_CRD
            )
        return wanted
    if str(mode).lower() == "auto" and has_crd:
        return wanted
    return None


def decide_middleware(report, spec, crds):
    """The Traefik Middleware that strips a model's ingress path prefix ({name, api_version, prefix}) or
    None. Where one is made, the ingress gets the annotation that uses it."""
    ingress = spec.get("ingress")
    if not ingress or ingress["strip_with"] != "traefik":
        return None
    name = spec["name"]
    api = None
    for crd, api_version in TRAEFIK_MIDDLEWARE_CRDS:
        if crd in crds:
            api = api_version
            break
    if not api:
        report.warn(
            "vllm_models[%s]: Traefik's Middleware CRD is not installed, so the ingress path %s is "
            "not stripped; give each model its own host instead" % (name, ingress["path"])
        )
        return None
    ingress["annotations"]["traefik.ingress.kubernetes.io/router.middlewares"] = (
        "%s-%s-strip@kubernetescrd" % (spec["namespace"], name)
    )
    return {"name": name + "-strip", "api_version": api, "prefix": ingress["strip_prefix"]}


def _check_pvc(report, spec, classes_by_name, storage_classes, pvcs):
    name = spec["name"]
    pvc = spec["pvc"]
    class_name = pvc["storage_class"]
    if class_name:
        storage_class = classes_by_name.get(class_name)
        if storage_class is None:
            report.error(
                "vllm_models[%s]: StorageClass %r does not exist (known: %s); set vllm_cache_storage_class"
                % (name, class_name, ", ".join(sorted(key for key in classes_by_name if key)) or "none")
            )
            return
    else:
        storage_class = default_storage_class(storage_classes)
        if storage_class is None:
            report.error(
                "vllm_models[%s]: the %s cache needs a StorageClass and the cluster has no default one; set "
                "vllm_cache_storage_class" % (name, spec["cache_type"])
            )
            return
    provisioner = storage_class.get("provisioner")
    if pvc["access_mode"] == "ReadWriteMany" and provisioner in RWO_ONLY_PROVISIONERS:
        report.error(
            "vllm_models[%s]: StorageClass %r (provisioner %s) only gives ReadWriteOnce volumes, so the shared "
            "ReadWriteMany cache cannot bind; use a RWX class (Longhorn, NFS, CephFS), cache_type pvc, or "
            "hostPath on a single node" % (name, storage_class["metadata"]["name"], provisioner)
        )
    existing = pvcs.get(pvc["name"])
    if not existing:
        return
    current_class = (existing.get("spec") or {}).get("storageClassName")
    if class_name and current_class and current_class != class_name:
        report.error(
            "vllm_models[%s]: PVC %s already exists with StorageClass %s, not %s; the class of a PVC cannot "
            "change: delete the PVC (its cached weights go with it) or keep the old class"
            % (name, pvc["name"], current_class, class_name)
        )
    modes = (existing.get("spec") or {}).get("accessModes") or []
    if modes and pvc["access_mode"] not in modes:
        report.error(
            "vllm_models[%s]: PVC %s already exists with access modes %s, not %s; delete it or change "
            "the cache type back" % (name, pvc["name"], ", ".join(modes), pvc["access_mode"])
        )
    current = ((existing.get("spec") or {}).get("resources") or {}).get("requests", {}).get("storage")
    if current:
        current_bytes = parse_bytes(current, "PVC %s size" % pvc["name"])
        wanted = parse_bytes(pvc["size"], "cache size")
        if wanted < current_bytes:
            pvc["size"] = current  # PVCs cannot shrink; keep what exists
        elif wanted > current_bytes and not storage_class.get("allowVolumeExpansion"):
            report.error(
                "vllm_models[%s]: PVC %s is %s and cannot grow to %s because StorageClass %s does not allow "
                "volume expansion; keep the size, or delete the PVC"
                % (name, pvc["name"], current, pvc["size"], storage_class["metadata"]["name"])
            )


def _check_shared_cache(report, specs):
    shared = [spec for spec in specs if spec["cache_type"] == "rwx"]
    if not shared:
        return
    sizes = set(spec["pvc"]["size"] for spec in shared)
    if len(sizes) > 1:
        report.error(
            "models on the shared rwx cache ask for different sizes (%s); the shared PVC has one size: set "
            "vllm_cache_size instead of cache_size on those models" % ", ".join(sorted(sizes))
        )
    size = parse_bytes(shared[0]["pvc"]["size"], "vllm_cache_size")
    seen = set()
    total = 0
    for spec in shared:
        key = spec.get("s3_uri") or spec.get("model_ref")
        if spec.get("model_bytes") and key not in seen:
            seen.add(key)
            total += spec["model_bytes"]
    if total > size:
        report.error(
            "the models on the shared rwx cache need %s together but vllm_cache_size is %s; raise "
            "vllm_cache_size" % (format_bytes(total), shared[0]["pvc"]["size"])
        )


def _check_gpu_capacity(report, specs, gpu_types, pods, prune):
    """GPUs wanted per type vs GPUs free, counting back what this role's own pods already hold."""
    listed = set(spec["name"] for spec in specs)
    resources = set(spec["resource_name"] for spec in specs)
    for info in gpu_types.values():
        if info.get("resource_name"):
            resources.add(info["resource_name"])
    held = pod_gpu_holdings(pods, sorted(resources)) if pods is not None else {}
    demand = {}
    for spec in specs:
        usable = spec["gpu_type_info"] is not None and not spec["gpu_impossible"]
        if spec["gpu_type"] and usable and spec["gpus"] > 0:
            demand.setdefault(spec["gpu_type"], []).append(spec)
    for gpu_type in sorted(demand):
        info = gpu_types[gpu_type]
        wanted = sum(spec["replicas"] * spec["gpus"] for spec in demand[gpu_type])
        if info.get("gpus_free") is None:
            continue
        nodes = set(info.get("nodes") or [])
        resource = info.get("resource_name") or "nvidia.com/gpu"
        returned = 0
        for (model, node), amounts in held.items():
            if node in nodes and (model in listed or prune):
                returned += amounts.get(resource, 0)
        available = int(info["gpus_free"]) + returned
        if wanted > available:
            parts = ", ".join(
                "%s (%d x %d)" % (spec["name"], spec["replicas"], spec["gpus"]) for spec in demand[gpu_type]
            )
            report.error(
                "GPU type %s: the models %s need %d GPUs but only %d are free (%s in total%s); lower replicas "
                "or gpus, move a model to another gpu_type, or free GPUs"
                % (
                    gpu_type,
                    parts,
                    wanted,
                    available,
                    info.get("gpus_total", "?"),
                    ", %d of them held by this role's pods" % returned if returned else "",
                )
            )


def decide_network_policy(spec, settings):
    """The model's NetworkPolicy rules: who may reach it (same namespace, listed namespaces and pod labels,
    the ingress controller, the ServiceMonitor's Prometheus) and where it may connect (DNS, and the
    egress CIDRs / ports when it downloads weights)."""
    sources = []
    if settings["network_policy_allow_same_namespace"]:
        sources.append({"podSelector": {}})
    namespaces = list(settings["network_policy_allowed_namespaces"] or [])
    if spec.get("ingress"):
        controller_ns = settings["ingress_controller_namespace"] or (
            "kube-system" if settings["is_k3s"] else "ingress-nginx"
        )
        namespaces.append(controller_ns)
    if spec.get("service_monitor"):
        namespaces.append(settings["service_monitor_namespace"])
    for namespace in namespaces:
        item = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}
        if item not in sources:
            sources.append(item)
    for labels in settings["network_policy_allowed_pod_labels"] or []:
        sources.append({"podSelector": {"matchLabels": dict(labels)}})
    egress = [
        {"to": [{"namespaceSelector": {}}], "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    ]
    ports = [int(port) for port in settings["network_policy_egress_ports"] or []]
    endpoint_port = _url_port(settings["s3_endpoint_url"])
    if endpoint_port and endpoint_port not in ports:
        ports.append(endpoint_port)
    if settings["network_policy_egress_cidrs"] and ports and spec["egress_needed"]:
        egress.append(
            {
                "to": [{"ipBlock": {"cidr": cidr}} for cidr in settings["network_policy_egress_cidrs"]],
                "ports": [{"protocol": "TCP", "port": port} for port in ports],
            }
        )
    return {
        "ingress": [{"from": sources, "ports": [{"protocol": "TCP", "port": "http"}]}] if sources else [],
        "egress": egress,
    }


def _url_port(url):
    match = re.match(r"^(https?)://[^/:]+(?::([0-9]+))?", url or "")
    if not match:
        return None
    if match.group(2):
        return int(match.group(2))
    return 443 if match.group(1) == "https" else 80
