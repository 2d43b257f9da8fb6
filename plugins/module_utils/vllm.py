# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE)
"""Decisions of the ``vllm`` role: pure functions, no I/O.

``plan()`` turns the role's model list, its settings and (optionally) what the role read from the
cluster into fully resolved model records that the role's templates print as plain Kubernetes YAML,
plus every problem found, so the role can fail before it changes anything. ``prune_targets()``
decides which of the role's own objects are no longer wanted.

The decisions are split by job: vllm_model (one model entry), vllm_source (weights source and
cache), vllm_pod (vLLM arguments, probes, init steps), vllm_cluster (checks and decisions against
the cluster), vllm_inputs (shared names and input checks).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.llmops.serving.plugins.module_utils.vllm_cluster import (
    cluster_checks,
)
from ansible_collections.llmops.serving.plugins.module_utils.vllm_inputs import (
    MANAGED_BY,
    MODEL_LABEL,
    _truthy,
)
from ansible_collections.llmops.serving.plugins.module_utils.vllm_model import (
    resolve_model,
)


class _Plan(object):
    def __init__(self):
        self.errors = []
        self.warnings = []

    def error(self, message):
        if message not in self.errors:
            self.errors.append(message)

    def warn(self, message):
        if message not in self.warnings:
            self.warnings.append(message)


def _settings_defaults(settings):
    out = {
        "namespace": "vllm",
        "image_repository": "vllm/vllm-openai",
        "image_tag": "v0.10.2",
        "image_pull_policy": "IfNotPresent",
        "image_pull_secrets": [],
        "command": ["vllm", "serve"],
        "port": 8000,
        "replicas": 1,
        "gpus": 1,
        "gpu_type": "",
        "gpu_types": {},
        "is_k3s": False,
        "checkpoints": {},
        "runtime_class": "auto",
        "resources": {},
        "shm_size": "8Gi",
        "env": {},
        "cache_type": "hostPath",
        "cache_host_path": "/var/lib/llmops/vllm-cache",
        "cache_size": "100Gi",
        "cache_storage_class": "",
        "cache_shared_pvc_name": "vllm-model-cache",
        "cache_mount_path": "/models",
        "hf_token_secret_name": "",
        "hf_token_secret_key": "token",
        "s3_mode": "pull",
        "s3_endpoint_url": "",
        "s3_credentials_secret_name": "",
        "s3_puller_image": "",
        "s3_puller_configmap": "vllm-s3-puller",
        "s3_puller_resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "4Gi"}},
        "s3_puller_run_as_user": 1000,
        "s3_puller_run_as_group": 1000,
        "api_key_secret_name": "",
        "api_key_secret_key": "api-key",
        "service_type": "ClusterIP",
        "service_session_affinity": False,
        "service_session_affinity_timeout": 10800,
        "pdb": "auto",
        "pdb_max_unavailable": 1,
        "max_surge": 0,
        "max_unavailable": 1,
        "network_policy_enabled": True,
        "network_policy_allow_same_namespace": True,
        "network_policy_allowed_namespaces": [],
        "network_policy_allowed_pod_labels": [],
        "network_policy_egress_cidrs": ["0.0.0.0/0"],
        "network_policy_egress_ports": [443, 80],
        "service_monitor": "auto",
        "service_monitor_interval": "30s",
        "service_monitor_labels": {},
        "service_monitor_namespace": "monitoring",
        "ingress_enabled": False,
        "ingress_class_name": "",
        "ingress_host": "",
        "ingress_path_prefix": "/",
        "ingress_strip_prefix": True,
        "ingress_tls_secret": "",
        "ingress_annotations": {},
        "ingress_controller_namespace": "",
        "service_account_name": "",
        "priority_class_name": "",
        "labels": {},
    }
    for key, value in (settings or {}).items():
        if value is not None:
            out[key] = value
    for key in BOOL_SETTINGS:
        out[key] = _truthy(out[key])
    for key in ("service_monitor", "pdb"):
        if str(out[key]).lower() != "auto":
            out[key] = _truthy(out[key])
    return out


BOOL_SETTINGS = (
    "is_k3s",
    "service_session_affinity",
    "network_policy_enabled",
    "network_policy_allow_same_namespace",
    "ingress_enabled",
    "ingress_strip_prefix",
)


def plan(models, settings, cluster=None, prune=False):
    """Resolve the role's model list.

    ``settings`` holds the role's variables without the ``vllm_`` prefix (``namespace``,
    ``gpu_types`` from gpu_discovery, ``checkpoints`` from model_staging, ...). ``cluster`` is what
    the role read (``nodes``, ``runtime_classes``, ``crds``, ``storage_classes``, ``pvcs``,
    ``secrets`` (names), ``pods`` (this role's pods)); without it only the input checks run.

    Returns ``{"models": [...], "errors": [...], "warnings": [...], "uses_puller": bool,
    "shared_pvc": {...} or None}``.
    """
    settings = _settings_defaults(settings)
    result = _Plan()
    if models is None:
        models = []
    if not isinstance(models, list):
        return {
            "models": [],
            "servers": {},
            "errors": ["vllm_models: must be a list of model dicts (got %s)" % type(models).__name__],
            "warnings": [],
            "uses_puller": False,
            "shared_pvc": None,
        }
    specs = []
    seen = set()
    for model in models:
        spec = resolve_model(result, model, settings, seen)
        if spec is not None:
            specs.append(spec)
    if cluster is not None:
        # Free GPUs are only comparable once this role's own pods are known (a re-run must count
        # the GPUs its pods already hold as available).
        cluster_checks(result, specs, settings, cluster, prune)
    shared = [spec["pvc"] for spec in specs if spec["pvc"] and spec["pvc"]["shared"]]
    for spec in specs:
        spec.pop("gpu_type_info", None)
        spec.pop("gpu_impossible", None)
    servers = {}
    for spec in specs:
        servers[spec["name"]] = {
            "namespace": spec["namespace"],
            "service": spec["name"],
            "url": "http://%s.%s.svc:%d/v1" % (spec["name"], spec["namespace"], spec["port"]),
            "served_model_name": spec["served_model_name"],
            "image": spec["image"],
            "gpu_type": spec["gpu_type"],
            "gpus": spec["gpus"],
            "replicas": spec["replicas"],
            "ingress_path": (spec["ingress"] or {}).get("path"),
        }
    return {
        "models": specs,
        "servers": servers,
        "errors": result.errors,
        "warnings": result.warnings,
        "uses_puller": any(spec["uses_puller"] for spec in specs),
        "shared_pvc": shared[0] if shared else None,
    }


def object_key(obj):
    metadata = obj.get("metadata") or {}
    return (obj.get("kind"), metadata.get("namespace"), metadata.get("name"))


def _flatten_listing(existing):
    """Objects from a flat list, or from the results of a looped k8s_info (``item`` has the kind)."""
    for entry in existing or []:
        if isinstance(entry, dict) and "resources" in entry and "item" in entry:
            item = entry.get("item") or {}
            for obj in entry.get("resources") or []:
                obj = dict(obj)
                obj.setdefault("kind", item.get("kind"))
                obj.setdefault("apiVersion", item.get("api_version") or item.get("apiVersion"))
                yield obj
        elif isinstance(entry, dict) and "metadata" in entry:
            yield entry


def prune_targets(existing, desired, models, prune=False, purge=False):
    """Objects to delete: this role's objects (by managed-by label) that are not desired.

    - Objects of a listed model that the current settings no longer render (HPA turned off, ...) are
      always removed: they would fight the desired state.
    - Objects of models no longer listed are removed only with ``prune``.
    - Objects of no model (the S3 puller ConfigMap, the shared cache PVC) are removed only with
      ``prune``, once nothing uses them.
    - PersistentVolumeClaims are kept unless ``purge`` (cached weights are expensive to re-fetch).
    """
    wanted = set(object_key(obj) for obj in desired or [])
    listed = set(models or [])
    out = []
    for obj in _flatten_listing(existing):
        metadata = obj.get("metadata") or {}
        labels = metadata.get("labels") or {}
        if labels.get("app.kubernetes.io/managed-by") != MANAGED_BY:
            continue
        if object_key(obj) in wanted:
            continue
        model = labels.get(MODEL_LABEL)
        if obj.get("kind") == "PersistentVolumeClaim" and not purge:
            continue
        if model in listed or prune:
            out.append(
                {
                    "apiVersion": obj.get("apiVersion"),
                    "kind": obj.get("kind"),
                    "metadata": {"name": metadata.get("name"), "namespace": metadata.get("namespace")},
                }
            )
    out.sort(key=lambda item: (item["kind"] == "PersistentVolumeClaim", item["kind"], item["metadata"]["name"]))
    return out


def pod_problems(pods):
    """Pods of a model that did not roll out -> one line each saying why (for the role's failure)."""
    out = []
    for pod in pods or []:
        metadata = pod.get("metadata") or {}
        status = pod.get("status") or {}
        name = metadata.get("name")
        reasons = []
        for condition in status.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                reasons.append("not scheduled: %s" % (condition.get("message") or condition.get("reason")))
        for key, kind in (("initContainerStatuses", "init container"), ("containerStatuses", "container")):
            for container in status.get(key) or []:
                state = container.get("state") or {}
                waiting = state.get("waiting")
                terminated = state.get("terminated")
                if waiting and waiting.get("reason") not in (None, "PodInitializing", "ContainerCreating"):
                    reasons.append(
                        "%s %s %s: %s"
                        % (kind, container.get("name"), waiting.get("reason"), waiting.get("message") or "")
                    )
                elif terminated and terminated.get("exitCode", 0) != 0:
                    reasons.append(
                        "%s %s exited %s (%s)"
                        % (kind, container.get("name"), terminated.get("exitCode"), terminated.get("reason") or "")
                    )
                elif key == "containerStatuses" and not container.get("ready") and "running" in state:
                    reasons.append(
                        "container %s runs but is not ready yet (startup or readiness probe on /health)"
                        % container.get("name")
                    )
        if metadata.get("deletionTimestamp"):
            reasons.append("terminating")
        out.append(
            "%s: %s%s"
            % (
                name,
                status.get("phase", "Unknown"),
                (" - " + "; ".join(item.strip() for item in reasons)) if reasons else "",
            )
        )
    if not out:
        out.append("no pods exist (check the ReplicaSet events: quota, admission, missing ServiceAccount)")
    return out
