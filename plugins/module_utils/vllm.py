# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE)
"""Decisions of the ``vllm`` role: pure functions, no I/O.

``plan()`` turns the role's model list, its settings and (optionally) what the role read from the
cluster into fully resolved model records that the role's templates print as plain Kubernetes YAML,
plus every problem found, so the role can fail before it changes anything. ``prune_targets()``
decides which of the role's own objects are no longer wanted.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import math
import re

from ansible_collections.llmops.serving.plugins.module_utils import vllm_cli
from ansible_collections.llmops.serving.plugins.module_utils.k8s_names import is_dns1035_label, is_valid_label_value
from ansible_collections.llmops.serving.plugins.module_utils.k8s_quantity import (
    parse_cpu_millicores,
    parse_size_bytes,
)

MANAGED_BY = "llmops.serving.vllm"
MODEL_LABEL = "llmops.serving/model"
PART_OF = "llmops-serving"

NAME_MAX = 50  # leaves room for the "-cache" / "-strip" suffixes within 63 characters

# Quantization values that force a slower kernel where vLLM would pick a faster one by itself: with the
# method left unset vLLM reads it from the checkpoint and converts AWQ / GPTQ checkpoints to the Marlin
# kernels when the GPU supports them; an explicit "awq"/"gptq" keeps the plain kernels (vLLM 0.10.2
# vllm/model_executor/layers/quantization/awq_marlin.py:108-125, gptq_marlin.py:163-181, and the
# "not fully optimized" warning in vllm/config/__init__.py:1216-1220).
SLOWER_WHEN_FORCED = {"awq": "awq_marlin", "gptq": "gptq_marlin"}
# What an Ingress routes to vLLM: the OpenAI API under /v1, which VLLM_API_KEY guards, and /health.
# vLLM 0.10.2 asks for the key only on paths that start with /v1 (AuthenticationMiddleware,
# vllm/entrypoints/openai/api_server.py:1326-1358); every other route it serves answers without the key
# (/invocations, /tokenize, /detokenize, /pooling, /classify, /score, /rerank, /v2/rerank,
# /scale_elastic_ep, /docs, ...: the "routes" of vllm_releases/vllm-0.10.2.json), so none of them is
# published. /metrics is scraped inside the cluster (ServiceMonitor), not through the Ingress.
INGRESS_ROUTES = (("/v1", "Prefix"), ("/health", "Exact"))
NGINX_ROUTES_REGEX = "/(v1|v1/.*|health)$"
SOURCE_TYPES = ("huggingface", "s3", "path")
S3_MODES = ("pull", "stream")
CACHE_TYPES = ("hostPath", "pvc", "rwx", "emptyDir")
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")

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

# vLLM options (argparse dests) the role renders itself, and the setting that sets each one.
OWNED_OPTIONS = {
    "model": "source",
    "host": "(fixed: 0.0.0.0)",
    "port": "vllm_port",
    "served_model_name": "served_model_name",
    "tensor_parallel_size": "tensor_parallel_size",
    "pipeline_parallel_size": "pipeline_parallel_size",
    "max_model_len": "max_model_len",
    "gpu_memory_utilization": "gpu_memory_utilization",
    "dtype": "dtype",
    "quantization": "quantization",
    "enable_prefix_caching": "enable_prefix_caching",
    "max_num_seqs": "max_num_seqs",
    "max_num_batched_tokens": "max_num_batched_tokens",
    "revision": "source.revision",
    "load_format": "source.mode",
    "trust_remote_code": "trust_remote_code",
    "enforce_eager": "enforce_eager",
    "download_dir": "the cache settings (vllm_cache_*)",
    "api_key": "api_key_secret",
    # --config reads options from a YAML file, which could set any of the above behind the role's back.
    "config": "the model's own fields and extra_args (give the flags themselves, not a config file)",
}

MODEL_KEYS = (
    "name",
    "source",
    "served_model_name",
    "image_repository",
    "image_tag",
    "replicas",
    "gpus",
    "gpu_type",
    "gpu_resource_name",
    "node_selector",
    "tolerations",
    "affinity",
    "runtime_class_name",
    "priority_class_name",
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "max_model_len",
    "gpu_memory_utilization",
    "dtype",
    "quantization",
    "enable_prefix_caching",
    "max_num_seqs",
    "max_num_batched_tokens",
    "trust_remote_code",
    "enforce_eager",
    "extra_args",
    "env",
    "resources",
    "shm_size",
    "cache_type",
    "cache_size",
    "cache_storage_class",
    "startup_probe_seconds",
    "autoscaling",
    "pdb",
    "ingress",
    "service_type",
    "api_key_secret",
    "labels",
    "annotations",
)
SOURCE_KEYS = (
    "type",
    "repo",
    "revision",
    "token_secret",
    "token_secret_key",
    "uri",
    "checkpoint",
    "mode",
    "path",
    "bytes",
)

class VllmInputError(ValueError):
    """A user input the role cannot work with; the message names the input and the fix."""


# --------------------------------------------------------------------------- small helpers


def parse_bytes(value, what):
    """Kubernetes quantity or integer -> bytes (int). ``what`` names the input in errors."""
    if isinstance(value, bool) or value is None:
        raise VllmInputError("%s: %r is not a size; use bytes or a Kubernetes quantity such as 40Gi" % (what, value))
    if isinstance(value, int):
        if value < 0:
            raise VllmInputError("%s: %r is negative" % (what, value))
        return value
    if isinstance(value, float):
        if value < 0:
            raise VllmInputError("%s: %r is negative" % (what, value))
        return int(value)
    size = parse_size_bytes(str(value))
    if size is None:
        raise VllmInputError("%s: %r is not a size; use bytes or a Kubernetes quantity such as 40Gi" % (what, value))
    return size


def parse_cpu(value, what):
    """CPU quantity -> millicores (int)."""
    if isinstance(value, bool) or value is None:
        raise VllmInputError(
            "%s: %r is not a CPU amount; use cores such as 4 or millicores such as 500m" % (what, value)
        )
    if isinstance(value, (int, float)):
        return int(round(value * 1000))
    millicores = parse_cpu_millicores(str(value))
    if millicores is None:
        raise VllmInputError(
            "%s: %r is not a CPU amount; use cores such as 4 or millicores such as 500m" % (what, value)
        )
    return millicores


def format_bytes(value):
    """Bytes -> short human string (GiB with one decimal, or MiB)."""
    if value >= 1024**3:
        return "%.1fGi" % (value / float(1024**3))
    return "%.0fMi" % (value / float(1024**2))


def whole_number(value, what, minimum=0):
    """Accept an int (or a string of digits); reject fractions and booleans with a clear message."""
    if isinstance(value, bool):
        raise VllmInputError("%s: %r is not a whole number" % (what, value))
    if isinstance(value, float):
        if value != int(value):
            raise VllmInputError(
                "%s: %r is not a whole number; GPUs are allocated whole (use MIG or time-slicing resources "
                "for fractions)" % (what, value)
            )
        value = int(value)
    elif not isinstance(value, int):
        text = str(value).strip()
        if not text.isdigit():
            raise VllmInputError("%s: %r is not a whole number" % (what, value))
        value = int(text)
    if value < minimum:
        raise VllmInputError("%s: %r must be at least %d" % (what, value, minimum))
    return value


def _as_env_list(env, what):
    """env given as a dict (name: value) or a Kubernetes env list -> list of env dicts."""
    if env is None:
        return []
    if isinstance(env, dict):
        out = []
        for key in sorted(env):
            value = env[key]
            if isinstance(value, dict):
                out.append(dict(value, name=key))
            else:
                out.append({"name": key, "value": _env_value(value)})
        return out
    if isinstance(env, list):
        out = []
        for item in env:
            if not isinstance(item, dict) or not item.get("name"):
                raise VllmInputError("%s: every entry needs a name (got %r)" % (what, item))
            item = dict(item)
            if "value" in item:
                item["value"] = _env_value(item["value"])
            out.append(item)
        return out
    raise VllmInputError("%s: use a dict of NAME: value or a Kubernetes env list (got %r)" % (what, env))


def _env_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def merge_env(*lists):
    """Merge env lists by name, later lists win, first position kept (SSA keys env by name)."""
    order = []
    by_name = {}
    for env in lists:
        for item in env:
            if item["name"] not in by_name:
                order.append(item["name"])
            by_name[item["name"]] = item
    return [by_name[name] for name in order]


def _merge_tolerations(*lists):
    out = []
    for tolerations in lists:
        for item in tolerations or []:
            if item not in out:
                out.append(item)
    return out


def _labels_match(selector, labels):
    return all(labels.get(key) == value for key, value in (selector or {}).items())


# --------------------------------------------------------------------------- vLLM arguments


def render_extra_args(extra_args, what, release):
    """extra_args as a list of strings or a dict of flag: value -> (CLI strings, problems).

    In the dict form ``false`` writes the ``--no-`` form of vLLM's boolean options; ``problems`` holds
    entries that cannot be written for this release (``false`` for an on-only flag, true/false for an
    option that takes a value).
    """
    if extra_args is None:
        return [], []
    if isinstance(extra_args, dict):
        out, problems = [], []
        for key in extra_args:
            args, problem = vllm_cli.render_dict_entry(key, extra_args[key], release)
            out.extend(args)
            if problem:
                problems.append("%s.%s" % (what, problem))
        return out, problems
    if isinstance(extra_args, list):
        return [str(item) for item in extra_args], []
    raise VllmInputError("%s: use a list of strings or a dict of flag: value (got %r)" % (what, extra_args))


def extra_arg_conflicts(extra_args, release):
    """Tokens of extra_args that set an option the role renders itself -> list of (token, option, setting).

    Resolved the way ``vllm serve`` resolves them (vllm_cli.resolve): short forms (-tp), NAME=VALUE,
    underscores, dotted keys and unique abbreviations (--tensor-parallel) all count.
    """
    conflicts = []
    items, _strays = vllm_cli.walk(extra_args, release)
    for item in items:
        option = item["option"]
        if item["status"] == "ok" and option["dest"] in OWNED_OPTIONS:
            conflicts.append((item["token"], release.flag(option["dest"]), OWNED_OPTIONS[option["dest"]]))
        elif item["status"] == "ambiguous":
            owned = sorted(set(release.by_string[text]["dest"] for text in item["matches"]) & set(OWNED_OPTIONS))
            for dest in owned:
                conflicts.append((item["token"], release.flag(dest), OWNED_OPTIONS[dest]))
    return conflicts


def render_cli_args(spec):
    """vLLM ``serve`` arguments for one resolved model (``spec`` keys as in ``plan()``'s models).

    The model reference comes first (positional for ``vllm serve``); optional settings are only
    rendered when set, so vLLM's own defaults apply otherwise.
    """
    # vLLM must listen on the pod IP; the Service and NetworkPolicy limit who reaches it.
    args = [
        str(spec["model_ref"]),
        "--host",
        "0.0.0.0",  # noqa: S104 - vLLM listens on all interfaces inside its pod; the Service/NetworkPolicy restrict access
        "--port",
        str(spec["port"]),
        "--served-model-name",
        str(spec["served_model_name"]),
    ]
    if spec.get("revision"):
        args += ["--revision", str(spec["revision"])]
    if spec.get("load_format"):
        args += ["--load-format", spec["load_format"]]
    if spec.get("download_dir"):
        args += ["--download-dir", spec["download_dir"]]
    args += ["--tensor-parallel-size", str(spec["tensor_parallel_size"])]
    if spec.get("pipeline_parallel_size", 1) != 1:
        args += ["--pipeline-parallel-size", str(spec["pipeline_parallel_size"])]
    for key, flag in (
        ("max_model_len", "--max-model-len"),
        ("gpu_memory_utilization", "--gpu-memory-utilization"),
        ("dtype", "--dtype"),
        ("quantization", "--quantization"),
        ("max_num_seqs", "--max-num-seqs"),
        ("max_num_batched_tokens", "--max-num-batched-tokens"),
    ):
        value = spec.get(key)
        if value is not None and value != "":
            args += [flag, str(value)]
    if spec.get("enable_prefix_caching") is True:
        args.append("--enable-prefix-caching")
    elif spec.get("enable_prefix_caching") is False:
        args.append("--no-enable-prefix-caching")
    if spec.get("trust_remote_code"):
        args.append("--trust-remote-code")
    if spec.get("enforce_eager"):
        args.append("--enforce-eager")
    args += list(spec.get("extra_args") or [])
    return args


# --------------------------------------------------------------------------- probes


def startup_probe(model_bytes, settings, downloads_at_start=False, seconds=None):
    """Startup probe on /health sized from the model's bytes.

    Time allowed = base seconds + bytes / load rate (+ bytes / download rate when vLLM downloads
    or streams the weights itself). Unknown size -> ``startup_unknown_seconds``. ``seconds``
    overrides the estimate.
    """
    period = int(settings.get("startup_period_seconds", 10))
    if seconds is None:
        if model_bytes:
            seconds = float(settings.get("startup_base_seconds", 180))
            seconds += model_bytes / float(settings.get("startup_load_bytes_per_second", 200 * 1024**2))
            if downloads_at_start:
                seconds += model_bytes / float(settings.get("startup_download_bytes_per_second", 50 * 1024**2))
        else:
            seconds = float(settings.get("startup_unknown_seconds", 1800))
    threshold = max(int(math.ceil(float(seconds) / period)), 3)
    return {
        "httpGet": {"path": "/health", "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": threshold,
    }


def runtime_probes(settings):
    """Readiness and liveness probes on vLLM's /health."""
    readiness = {
        "httpGet": {"path": "/health", "port": "http"},
        "periodSeconds": 10,
        "timeoutSeconds": 5,
        "failureThreshold": 3,
    }
    liveness = {
        "httpGet": {"path": "/health", "port": "http"},
        "periodSeconds": 30,
        "timeoutSeconds": int(settings.get("liveness_timeout_seconds", 10)),
        "failureThreshold": int(settings.get("liveness_failure_threshold", 5)),
    }
    return readiness, liveness


# --------------------------------------------------------------------------- cluster views


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


# --------------------------------------------------------------------------- plan


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


def _truthy(value):
    """Booleans that may arrive as strings from inventories ("true", "yes", "1")."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on", "y")
    return bool(value)


def _resolve_source(report, model, spec, settings):
    """Fill source-derived fields of ``spec``: model_ref, env, init containers, bytes."""
    name = spec["name"]
    source = model.get("source")
    if not isinstance(source, dict):
        report.error(
            "vllm_models[%s].source: required; give {type: huggingface, repo: ...}, "
            "{type: s3, uri: s3://bucket/prefix/} or {type: path, path: ...}" % name
        )
        return
    unknown = sorted(set(source) - set(SOURCE_KEYS))
    if unknown:
        report.error(
            "vllm_models[%s].source: unknown keys %s; known keys are %s"
            % (name, ", ".join(unknown), ", ".join(SOURCE_KEYS))
        )
    kind = _source_type(report, name, source)
    if kind is None:
        return
    spec["source_type"] = kind
    model_bytes = None
    if source.get("bytes") is not None:
        try:
            model_bytes = parse_bytes(source["bytes"], "vllm_models[%s].source.bytes" % name)
        except VllmInputError as exc:
            report.error(str(exc))
    if kind == "huggingface":
        resolved = _huggingface_source(report, source, spec, settings)
    elif kind == "path":
        resolved = _path_source(report, source, spec)
    else:
        resolved, model_bytes = _s3_source(report, source, spec, settings, model_bytes)
    if resolved:
        spec["model_bytes"] = model_bytes


def _source_type(report, name, source):
    """source.type, or the one type its keys imply when it is not set; None (with the error) otherwise."""
    kind = source.get("type")
    if not kind:
        guessed = [
            k
            for k, key in (("huggingface", "repo"), ("s3", "uri"), ("s3", "checkpoint"), ("path", "path"))
            if source.get(key)
        ]
        guessed = sorted(set(guessed))
        if len(guessed) != 1:
            report.error("vllm_models[%s].source.type: missing; set it to one of %s" % (name, ", ".join(SOURCE_TYPES)))
            return None
        kind = guessed[0]
    if kind not in SOURCE_TYPES:
        report.error("vllm_models[%s].source.type: %r is not one of %s" % (name, kind, ", ".join(SOURCE_TYPES)))
        return None
    return kind


def _huggingface_source(report, source, spec, settings):
    """vLLM downloads the repo at start into the cache (HF_HOME), with the token Secret when one is set."""
    name = spec["name"]
    mount = spec["cache_mount_path"]
    repo = source.get("repo")
    if not isinstance(repo, str) or not repo.strip():
        report.error(
            "vllm_models[%s].source.repo: required for a Hugging Face source, e.g. "
            "meta-llama/Llama-3.1-8B-Instruct" % name
        )
        return False
    spec["model_ref"] = repo
    spec["revision"] = source.get("revision") or None
    if not spec["revision"]:
        report.warn(
            "vllm_models[%s]: source.revision is not set, so every restart may fetch a newer "
            "upload of %s; pin a commit hash" % (name, repo)
        )
    spec["env"].append({"name": "HF_HOME", "value": mount.rstrip("/") + "/huggingface"})
    token_secret = source.get("token_secret") or settings["hf_token_secret_name"]
    if token_secret:
        key = source.get("token_secret_key") or settings["hf_token_secret_key"]
        spec["env"].append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": token_secret, "key": key}}})
        spec["secrets"].append(token_secret)
    spec["downloads_at_start"] = True
    spec["egress_needed"] = True
    return True


def _path_source(report, source, spec):
    name = spec["name"]
    mount = spec["cache_mount_path"]
    path = source.get("path")
    if not path or not isinstance(path, str):
        report.error(
            "vllm_models[%s].source.path: required for a path source (a directory in the cache, "
            "relative to %s, or an absolute path)" % (name, mount)
        )
        return False
    spec["model_ref"] = path if path.startswith("/") else mount.rstrip("/") + "/" + path.strip("/")
    return True


def _s3_source(report, source, spec, settings, model_bytes):
    """A staged model in S3 (source.uri or a model_staging checkpoint), pulled into the cache by an init
    container (mode pull) or streamed by vLLM (mode stream). Returns (resolved, model_bytes)."""
    name = spec["name"]
    checkpoint_name = source.get("checkpoint") or name
    checkpoint = (settings["checkpoints"] or {}).get(checkpoint_name) or {}
    uri = source.get("uri") or checkpoint.get("checkpoint_path")
    if not uri:
        report.error(
            "vllm_models[%s].source: no uri and no model_staging checkpoint named %r; set source.uri "
            "to s3://bucket/prefix/ or stage the model with the model_staging role first" % (name, checkpoint_name)
        )
        return False, model_bytes
    if not str(uri).startswith("s3://") or len(str(uri)) <= len("s3://"):
        report.error("vllm_models[%s].source.uri: %r must start with s3://bucket/" % (name, uri))
        return False, model_bytes
    uri = str(uri)
    if not uri.endswith("/"):
        uri += "/"
    if model_bytes is None and checkpoint.get("total_bytes"):
        model_bytes = int(checkpoint["total_bytes"])
    spec["s3_uri"] = uri
    spec["manifest_key"] = checkpoint.get("manifest_key") or ""
    mode = source.get("mode") or settings["s3_mode"]
    if mode not in S3_MODES:
        report.error("vllm_models[%s].source.mode: %r is not one of %s" % (name, mode, ", ".join(S3_MODES)))
        return False, model_bytes
    spec["s3_mode"] = mode
    spec["egress_needed"] = True
    s3_env = _s3_credentials_env(report, spec, settings)
    if mode == "stream":
        _s3_stream(report, spec, settings, uri, s3_env)
    else:
        _s3_pull(report, spec, settings, uri, s3_env)
    return True, model_bytes


def _s3_credentials_env(report, spec, settings):
    """The AWS_* key variables from vllm_s3_credentials_secret_name (a warning when it is empty)."""
    name = spec["name"]
    creds = settings["s3_credentials_secret_name"]
    s3_env = []
    if creds:
        spec["secrets"].append(creds)
        s3_env += [
            {
                "name": "AWS_ACCESS_KEY_ID",
                "valueFrom": {"secretKeyRef": {"name": creds, "key": "AWS_ACCESS_KEY_ID"}},
            },
            {
                "name": "AWS_SECRET_ACCESS_KEY",
                "valueFrom": {"secretKeyRef": {"name": creds, "key": "AWS_SECRET_ACCESS_KEY"}},
            },
        ]
    else:
        report.warn(
            "vllm_models[%s]: vllm_s3_credentials_secret_name is empty, so S3 is read without keys "
            "(fine only for anonymous buckets or instance roles)" % name
        )
    return s3_env


def _s3_stream(report, spec, settings, uri, s3_env):
    name = spec["name"]
    spec["model_ref"] = uri
    spec["load_format"] = "runai_streamer"
    spec["downloads_at_start"] = True
    if settings["s3_endpoint_url"]:
        s3_env += [
            {"name": "AWS_ENDPOINT_URL", "value": settings["s3_endpoint_url"]},
            {"name": "RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING", "value": "0"},
            {"name": "AWS_EC2_METADATA_DISABLED", "value": "true"},
        ]
    spec["env"] += s3_env
    report.warn(
        "vllm_models[%s]: source.mode stream loads weights straight from S3 with vLLM's Run:ai "
        "streamer; it does not check the staging manifest (use mode pull for verified copies)" % name
    )


def _s3_pull(report, spec, settings, uri, s3_env):
    """The s3-pull init container (roles/vllm/files/vllm_s3_pull.py) that copies the staged model into the
    cache, verified against its manifest, before vLLM starts."""
    name = spec["name"]
    mount = spec["cache_mount_path"]
    if not settings["s3_puller_image"]:
        report.error(
            "vllm_models[%s] pulls from S3: set vllm_s3_puller_image to an image with python3, "
            "boto3 and the llmops.serving collection (for example the execution environment built "
            "from meta/execution-environment.yml), or use source.mode: stream" % name
        )
    bucket_prefix = uri[len("s3://") :].rstrip("/")
    dest = mount.rstrip("/") + "/s3/" + bucket_prefix
    spec["model_ref"] = dest
    spec["s3_dest"] = dest
    puller_env = list(s3_env)
    if settings["s3_endpoint_url"]:
        puller_env.append({"name": "S3_ENDPOINT_URL", "value": settings["s3_endpoint_url"]})
    cache_dir = mount.rstrip("/") + "/.llmops/hash-cache"
    args = ["--source", uri, "--dest", dest, "--cache-dir", cache_dir]
    user, group = puller_identity(settings)
    spec["init_containers"].append(cache_owner_step(spec, settings, user, group))
    spec["init_containers"].append(
        {
            "name": "s3-pull",
            "image": settings["s3_puller_image"],
            "imagePullPolicy": settings["image_pull_policy"],
            "command": ["python3", "/opt/llmops/vllm_s3_pull.py"],
            "args": args,
            "env": puller_env,
            "resources": settings["s3_puller_resources"],
            "securityContext": puller_security_context(user, group),
            "volumeMounts": [
                {"name": "model-cache", "mountPath": mount},
                {"name": "s3-puller", "mountPath": "/opt/llmops", "readOnly": True},
            ],
        }
    )
    spec["pod_security_context"] = {"fsGroup": group, "fsGroupChangePolicy": "OnRootMismatch"}
    spec["volumes_extra"].append({"name": "s3-puller", "configMap": {"name": settings["s3_puller_configmap"]}})
    spec["uses_puller"] = True


def puller_identity(settings):
    """(uid, gid) the pull init container runs as: the puller image's user (1000 in images built by
    ansible-builder 3 such as the collection's execution environment)."""
    return int(settings["s3_puller_run_as_user"]), int(settings["s3_puller_run_as_group"])


def puller_security_context(user, group):
    return {
        "runAsUser": user,
        "runAsGroup": group,
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }


def cache_owner_script(mount, user, group):
    """Shell for the init step that hands the puller its directories in the cache.

    fsGroup makes volumes group-writable only where the kubelet manages ownership (emptyDir, most block
    PVCs); a hostPath (created root-owned 0755 by DirectoryOrCreate) and NFS-like volumes keep their
    owner. So the directories the puller writes, <cache>/s3 and <cache>/.llmops, are created and, when
    owned by someone else, given to the puller's uid:gid. Nothing else in the cache is touched.
    """
    owner = "%d:%d" % (user, group)
    dirs = " ".join("%s/%s" % (mount.rstrip("/"), name) for name in ("s3", ".llmops"))
    return (
        'set -eu; for d in %s; do mkdir -p "$d"; '
        'if [ "$(stat -c %%u:%%g "$d")" != "%s" ]; then chown -R %s "$d"; fi; chmod u+rwx "$d"; done'
        % (dirs, owner, owner)
    )


def cache_owner_step(spec, settings, user, group):
    """Init container (the vLLM image, as root with only CHOWN, FOWNER and DAC_OVERRIDE) that runs
    cache_owner_script before the puller."""
    mount = spec["cache_mount_path"]
    return {
        "name": "cache-owner",
        "image": spec["image_for_init"],
        "imagePullPolicy": settings["image_pull_policy"],
        "command": ["sh", "-c", cache_owner_script(mount, user, group)],
        "securityContext": {
            "runAsUser": 0,
            "runAsGroup": 0,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "FOWNER", "DAC_OVERRIDE"]},
        },
        "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
        "volumeMounts": [{"name": "model-cache", "mountPath": mount}],
    }


def _resolve_gpu(report, model, spec, settings):
    name = spec["name"]
    gpu_types = settings["gpu_types"] or {}
    gpu_type = model.get("gpu_type") or ""
    user_selector = model.get("node_selector") or {}
    if not gpu_type and not user_selector:
        gpu_type = settings["gpu_type"] or ""
        if not gpu_type and len(gpu_types) == 1:
            gpu_type = list(gpu_types)[0]
        elif not gpu_type and len(gpu_types) > 1:
            report.error(
                "vllm_models[%s]: several GPU types exist (%s); set gpu_type on the model or vllm_gpu_type"
                % (
                    name,
                    ", ".join(
                        "%s with %s free" % (key, gpu_types[key].get("gpus_free", "?")) for key in sorted(gpu_types)
                    ),
                )
            )
    type_info = None
    if gpu_type:
        if gpu_type not in gpu_types:
            if gpu_types:
                report.error(
                    "vllm_models[%s].gpu_type: unknown GPU type %r; the cluster has %s (from gpu_discovery "
                    "or vllm_gpu_types)" % (name, gpu_type, ", ".join(sorted(gpu_types)))
                )
            else:
                report.error(
                    "vllm_models[%s].gpu_type: unknown GPU type %r; no GPU types are known: run the "
                    "gpu_discovery role first, set vllm_gpu_types, or give node_selector instead" % (name, gpu_type)
                )
        else:
            type_info = gpu_types[gpu_type]
    spec["gpu_type"] = gpu_type or None
    spec["gpu_type_info"] = type_info
    selector = dict((type_info or {}).get("node_selector") or {})
    selector.update(user_selector)
    spec["node_selector"] = selector
    spec["tolerations"] = _merge_tolerations((type_info or {}).get("tolerations"), model.get("tolerations"))
    spec["affinity"] = model.get("affinity") or None
    spec["resource_name"] = model.get("gpu_resource_name") or (type_info or {}).get("resource_name") or "nvidia.com/gpu"
    if not gpu_type and not selector and spec["gpus"] > 0:
        report.warn(
            "vllm_models[%s]: no GPU type and no node_selector, so pods go to any node with %s"
            % (name, spec["resource_name"])
        )

    _resolve_parallelism(report, model, spec)
    _check_gpu_type_fit(report, spec, type_info, gpu_type)


def _resolve_parallelism(report, model, spec):
    """tensor_parallel_size x pipeline_parallel_size must be the replica's GPUs (tp defaults to gpus / pp)."""
    name = spec["name"]
    gpus = spec["gpus"]
    tp = model.get("tensor_parallel_size")
    pp = model.get("pipeline_parallel_size")
    try:
        pp = 1 if pp is None else whole_number(pp, "vllm_models[%s].pipeline_parallel_size" % name, 1)
        tp = None if tp is None else whole_number(tp, "vllm_models[%s].tensor_parallel_size" % name, 1)
    except VllmInputError as exc:
        report.error(str(exc))
        tp, pp = gpus or 1, 1
    if tp is None:
        if gpus % pp:
            report.error(
                "vllm_models[%s]: gpus (%d) is not a multiple of pipeline_parallel_size (%d)" % (name, gpus, pp)
            )
        tp = max(gpus // pp, 1)
    if gpus and tp * pp != gpus:
        report.error(
            "vllm_models[%s]: tensor_parallel_size (%d) x pipeline_parallel_size (%d) = %d but gpus is %d; "
            "vLLM uses exactly tp x pp GPUs per replica, so set gpus to %d or tensor_parallel_size to %d"
            % (name, tp, pp, tp * pp, gpus, tp * pp, max(gpus // pp, 1))
        )
    if tp > 1 and spec["resource_name"].startswith("nvidia.com/mig-"):
        report.error(
            "vllm_models[%s]: tensor_parallel_size %d over MIG slices (%s) is not supported by NCCL; use one "
            "MIG slice or a GPU type with whole GPUs" % (name, tp, spec["resource_name"])
        )
    spec["tensor_parallel_size"] = tp
    spec["pipeline_parallel_size"] = pp


def _check_gpu_type_fit(report, spec, type_info, gpu_type):
    """A replica's GPUs against its GPU type's total and largest node; marks the spec ``gpu_impossible``."""
    name = spec["name"]
    gpus = spec["gpus"]
    spec["gpu_impossible"] = False
    if type_info is not None and gpus > 0:
        total = type_info.get("gpus_total")
        per_node = type_info.get("gpus_per_node_max")
        if total is not None and gpus > int(total):
            spec["gpu_impossible"] = True
            report.error(
                "vllm_models[%s]: asks %d GPUs per replica but GPU type %s has %d in the whole cluster; "
                "lower gpus/tensor_parallel_size or pick a larger GPU type" % (name, gpus, gpu_type, int(total))
            )
        elif per_node is not None and gpus > int(per_node):
            spec["gpu_impossible"] = True
            report.error(
                "vllm_models[%s]: asks %d GPUs per replica but the largest node of GPU type %s has %d; a replica "
                "cannot span nodes, so lower gpus/tensor_parallel_size to %d or less"
                % (name, gpus, gpu_type, int(per_node), int(per_node))
            )


def _resolve_cache(report, model, spec, settings):
    name = spec["name"]
    cache_type = model.get("cache_type") or settings["cache_type"]
    if cache_type not in CACHE_TYPES:
        report.error("vllm_models[%s].cache_type: %r is not one of %s" % (name, cache_type, ", ".join(CACHE_TYPES)))
        cache_type = "emptyDir"
    spec["cache_type"] = cache_type
    size_text = model.get("cache_size") or settings["cache_size"]
    size = None
    if cache_type != "hostPath" or model.get("cache_size"):
        try:
            size = parse_bytes(size_text, "vllm_models[%s].cache_size" % name)
        except VllmInputError as exc:
            report.error(str(exc))
    spec["cache_size"] = size_text if cache_type != "hostPath" else None
    spec["cache_size_bytes"] = size
    spec["cache_storage_class"] = model.get("cache_storage_class") or settings["cache_storage_class"] or None
    spec["pvc"] = None
    if cache_type == "hostPath":
        volume = {"name": "model-cache", "hostPath": {"path": settings["cache_host_path"], "type": "DirectoryOrCreate"}}
    elif cache_type == "emptyDir":
        volume = {"name": "model-cache", "emptyDir": {"sizeLimit": str(size_text)}}
    elif cache_type == "pvc":
        claim = name + "-cache"
        spec["pvc"] = {
            "name": claim,
            "size": str(size_text),
            "access_mode": "ReadWriteOnce",
            "storage_class": spec["cache_storage_class"],
            "shared": False,
        }
        volume = {"name": "model-cache", "persistentVolumeClaim": {"claimName": claim}}
        if spec["replicas"] > 1 or spec["autoscaling"]:
            report.warn(
                "vllm_models[%s]: a ReadWriteOnce cache PVC can be mounted on one node only, so every replica "
                "must fit on the node the volume is on; use cache_type rwx or hostPath for replicas on "
                "several nodes" % name
            )
    else:
        claim = settings["cache_shared_pvc_name"]
        spec["pvc"] = {
            "name": claim,
            "size": str(size_text),
            "access_mode": "ReadWriteMany",
            "storage_class": spec["cache_storage_class"],
            "shared": True,
        }
        volume = {"name": "model-cache", "persistentVolumeClaim": {"claimName": claim}}
    spec["cache_volume"] = volume
    if size is not None and spec.get("model_bytes") and spec["model_bytes"] > size and cache_type != "rwx":
        report.error(
            "vllm_models[%s]: the model needs %s but its %s cache is %s; raise cache_size (or "
            "vllm_cache_size)" % (name, format_bytes(spec["model_bytes"]), cache_type, size_text)
        )
    if cache_type == "emptyDir" and size is not None:
        type_info = spec.get("gpu_type_info") or {}
        limit = type_info.get("ephemeral_storage_bytes_min")
        if limit and size > int(limit):
            report.error(
                "vllm_models[%s]: emptyDir cache of %s is larger than the %s of ephemeral storage on the "
                "smallest %s node, so the kubelet would evict the pod; lower cache_size or use a PVC / "
                "hostPath cache" % (name, size_text, format_bytes(int(limit)), spec["gpu_type"])
            )


def _resolve_resources(report, model, spec, settings):
    name = spec["name"]
    base = settings["resources"] or {}
    own = model.get("resources") or {}
    for key in own:
        if key not in ("requests", "limits"):
            report.error("vllm_models[%s].resources: unknown key %r; use requests and limits" % (name, key))
    requests = dict(base.get("requests") or {})
    requests.update(own.get("requests") or {})
    limits = dict(base.get("limits") or {})
    limits.update(own.get("limits") or {})
    for part in (requests, limits):
        if spec["resource_name"] in part:
            report.error(
                "vllm_models[%s].resources sets %s; set gpus instead (the role puts it in requests and "
                "limits)" % (name, spec["resource_name"])
            )
        for key in list(part):
            part[key] = str(part[key])
    if spec["gpus"] > 0:
        requests[spec["resource_name"]] = str(spec["gpus"])
        limits[spec["resource_name"]] = str(spec["gpus"])
    if spec["cache_type"] == "emptyDir" and spec["cache_size"] and "ephemeral-storage" not in requests:
        # The scheduler only places emptyDir bytes when they are requested.
        requests["ephemeral-storage"] = str(spec["cache_size"])
    spec["resources"] = {"requests": requests, "limits": limits}
    try:
        spec["cpu_request_milli"] = (
            parse_cpu(requests["cpu"], "vllm_models[%s].resources.requests.cpu" % name) if "cpu" in requests else None
        )
        spec["memory_request_bytes"] = (
            parse_bytes(requests["memory"], "vllm_models[%s].resources.requests.memory" % name)
            if "memory" in requests
            else None
        )
        memory_limit = (
            parse_bytes(limits["memory"], "vllm_models[%s].resources.limits.memory" % name)
            if "memory" in limits
            else None
        )
    except VllmInputError as exc:
        report.error(str(exc))
        return
    shm = model.get("shm_size") or settings["shm_size"]
    spec["shm_size"] = str(shm) if shm else None
    if shm:
        try:
            shm_bytes = parse_bytes(shm, "vllm_models[%s].shm_size" % name)
        except VllmInputError as exc:
            report.error(str(exc))
            return
        if memory_limit is not None and shm_bytes >= memory_limit:
            report.error(
                "vllm_models[%s]: shm_size %s is not below resources.limits.memory %s; /dev/shm is counted "
                "as container memory, so raise the memory limit or lower shm_size" % (name, shm, limits["memory"])
            )


def _resolve_autoscaling(report, model, spec, settings):
    name = spec["name"]
    auto = model.get("autoscaling")
    spec["autoscaling"] = None
    if not auto or auto.get("enabled") is False:
        return
    try:
        minimum = whole_number(
            auto.get("min_replicas", spec["replicas"] or 1), "vllm_models[%s].autoscaling.min_replicas" % name, 1
        )
        if auto.get("max_replicas") is None:
            raise VllmInputError("vllm_models[%s].autoscaling.max_replicas: required when autoscaling is set" % name)
        maximum = whole_number(auto["max_replicas"], "vllm_models[%s].autoscaling.max_replicas" % name, 1)
    except VllmInputError as exc:
        report.error(str(exc))
        return
    if maximum < minimum:
        report.error(
            "vllm_models[%s].autoscaling: max_replicas (%d) is below min_replicas (%d)" % (name, maximum, minimum)
        )
    metrics = auto.get("metrics")
    if not metrics:
        target = whole_number(
            auto.get("target_cpu_utilization", 80), "vllm_models[%s].autoscaling.target_cpu_utilization" % name, 1
        )
        metrics = [
            {
                "type": "Resource",
                "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": target}},
            }
        ]
    spec["autoscaling"] = {"min_replicas": minimum, "max_replicas": maximum, "metrics": metrics}
    spec["replicas"] = minimum


def _resolve_model(report, model, settings, seen):
    """One entry of vllm_models -> the model record the templates print, or None when it cannot be
    resolved (its errors are in ``report``). Each part is decided by its own ``_resolve_*`` function."""
    name = _model_name(report, model, seen)
    if name is None:
        return None
    spec = _new_spec(name, settings)
    try:
        spec["replicas"] = whole_number(model.get("replicas", settings["replicas"]), "vllm_models[%s].replicas" % name)
        spec["gpus"] = whole_number(model.get("gpus", settings["gpus"]), "vllm_models[%s].gpus" % name, 1)
    except VllmInputError as exc:
        report.error(str(exc))
        return None

    repo = model.get("image_repository") or settings["image_repository"]
    tag = str(model.get("image_tag") or settings["image_tag"])
    spec["image_for_init"] = "%s:%s" % (repo, tag)
    spec["pod_security_context"] = None
    _resolve_source(report, model, spec, settings)
    _resolve_autoscaling(report, model, spec, settings)
    _resolve_gpu(report, model, spec, settings)
    _resolve_cache(report, model, spec, settings)
    _resolve_resources(report, model, spec, settings)

    spec["served_model_name"] = model.get("served_model_name") or name
    release, refuse = _resolve_image(report, spec, settings, repo, tag)
    _resolve_engine_args(report, model, spec, release, refuse)
    _resolve_env(report, model, spec, settings)
    _resolve_probes(report, model, spec, settings)
    _resolve_labels(report, model, spec, settings)
    _resolve_pod(model, spec, settings)
    _resolve_service(report, model, spec, settings)
    _resolve_pdb(report, model, spec, settings)
    _resolve_ingress(report, model, spec, settings)
    # Decided from what the role read from the cluster, in _cluster_checks (decide_runtime_class,
    # decide_service_monitor, decide_middleware, decide_network_policy); None without that view.
    spec.update(runtime_class_name=None, service_monitor=None, middleware=None, network_policy=None)
    return spec


def _model_name(report, model, seen):
    """The entry's name when the entry is a dict with a valid, unique name (else None, with the error)."""
    if not isinstance(model, dict):
        report.error("vllm_models: every entry must be a dict with at least name and source (got %r)" % (model,))
        return None
    name = model.get("name")
    if not name or not isinstance(name, str):
        report.error("vllm_models: an entry has no name; every model needs a name (a DNS label such as llama-3-1-8b)")
        return None
    if not is_dns1035_label(name, NAME_MAX):
        report.error(
            "vllm_models[%s].name: must be a DNS label of at most %d characters (lowercase letters, digits "
            "and '-', starting with a letter), e.g. llama-3-1-8b" % (name, NAME_MAX)
        )
        return None
    if name in seen:
        report.error("vllm_models[%s]: listed twice; model names must be unique" % name)
        return None
    seen.add(name)
    unknown = sorted(set(model) - set(MODEL_KEYS))
    if unknown:
        report.error(
            "vllm_models[%s]: unknown keys %s (misspelled?); known keys are %s"
            % (name, ", ".join(unknown), ", ".join(MODEL_KEYS))
        )
    return name


def _new_spec(name, settings):
    return {
        "name": name,
        "namespace": settings["namespace"],
        "port": int(settings["port"]),
        "cache_mount_path": settings["cache_mount_path"],
        "env": [],
        "secrets": [],
        "init_containers": [],
        "volumes_extra": [],
        "uses_puller": False,
        "downloads_at_start": False,
        "egress_needed": False,
        "revision": None,
        "load_format": None,
        "s3_uri": None,
        "s3_mode": None,
        "model_ref": "",
        "model_bytes": None,
    }


def _resolve_image(report, spec, settings, repo, tag):
    """The image and the vLLM release its tag names; returns (release, refuse): ``refuse`` reports what
    that release refuses, as an error when the collection has the tag's data, else as a warning."""
    name = spec["name"]
    if not tag:
        report.error("vllm_models[%s].image_tag: empty; pin a vLLM release such as v0.10.2" % name)
    elif tag == "latest":
        report.warn(
            "vllm_models[%s]: image tag 'latest' changes under you and never triggers a rollout; pin a release" % name
        )
    spec["image"] = "%s:%s" % (repo, tag)
    spec["command"] = list(settings["command"])
    release, exact = vllm_cli.release_for_tag(tag)
    spec["vllm_release"] = release.version
    # A tag without a data file is checked against the newest known release; what that release would
    # refuse is then a warning, since the newer one may accept it.
    refuse = report.error if exact else report.warn
    if not exact and tag and tag != "latest":
        report.warn(
            "vllm_models[%s]: the collection has no data for vLLM image tag %s (known: %s), so its arguments are "
            "checked against vLLM %s and problems are only warnings; add the data with %s"
            % (name, tag, ", ".join(vllm_cli.known_versions()), release.version, vllm_cli.REGENERATE_HINT)
        )
    return release, refuse


def _resolve_engine_args(report, model, spec, release, refuse):
    """vLLM engine settings (lengths, dtype, quantization, flags, extra_args) checked against the release,
    and the rendered command-line arguments."""
    name = spec["name"]
    for key in ("max_model_len", "max_num_seqs", "max_num_batched_tokens"):
        value = model.get(key)
        if value is not None:
            try:
                value = whole_number(value, "vllm_models[%s].%s" % (name, key), 1)
            except VllmInputError as exc:
                report.error(str(exc))
        spec[key] = value
    util = model.get("gpu_memory_utilization")
    if util is not None:
        try:
            util = float(util)
        except (TypeError, ValueError):
            util = -1.0
        if not 0 < util <= 1:
            report.error(
                "vllm_models[%s].gpu_memory_utilization: %r must be a fraction in (0, 1], e.g. 0.9"
                % (name, model.get("gpu_memory_utilization"))
            )
    spec["gpu_memory_utilization"] = util
    dtype = model.get("dtype")
    dtypes = release.choices("dtype")
    if dtype and dtype not in dtypes:
        refuse(
            "vllm_models[%s].dtype: %r is not a dtype of vLLM %s (%s)"
            % (name, dtype, release.version, ", ".join(dtypes))
        )
    spec["dtype"] = dtype or None
    spec["quantization"] = _check_quantization(report, refuse, name, model.get("quantization"), release)
    for key in ("enable_prefix_caching", "trust_remote_code", "enforce_eager"):
        value = model.get(key)
        if value is not None and not isinstance(value, bool):
            report.error("vllm_models[%s].%s: %r must be true or false" % (name, key, value))
            value = None
        spec[key] = value
    what = "vllm_models[%s].extra_args" % name
    try:
        extra, problems = render_extra_args(model.get("extra_args"), what, release)
    except VllmInputError as exc:
        report.error(str(exc))
        extra, problems = [], []
    for problem in problems:
        refuse(problem)
    conflicts = extra_arg_conflicts(extra, release)
    for token, flag, field in conflicts:
        shown = token if token == flag else "%s (vLLM %s resolves it to %s)" % (token, release.version, flag)
        report.error(
            "%s: %s is rendered by the role from %s; set that instead of passing the flag" % (what, shown, field)
        )
    if not conflicts:
        refused, deprecated = vllm_cli.problems(extra, release)
        for message in refused:
            refuse("%s: %s" % (what, message))
        for message in deprecated:
            report.warn("%s: %s" % (what, message))
    spec["extra_args"] = extra
    spec["args"] = render_cli_args(spec)


def _resolve_env(report, model, spec, settings):
    """The container environment: the API key Secret first, then vllm_env, then the model's env (later wins)."""
    name = spec["name"]
    api_key_secret = model.get("api_key_secret") if "api_key_secret" in model else settings["api_key_secret_name"]
    if api_key_secret:
        spec["env"].append(
            {
                "name": "VLLM_API_KEY",
                "valueFrom": {"secretKeyRef": {"name": api_key_secret, "key": settings["api_key_secret_key"]}},
            }
        )
        spec["secrets"].append(api_key_secret)
    try:
        spec["env"] = merge_env(
            spec["env"],
            _as_env_list(settings["env"], "vllm_env"),
            _as_env_list(model.get("env"), "vllm_models[%s].env" % name),
        )
    except VllmInputError as exc:
        report.error(str(exc))


def _resolve_probes(report, model, spec, settings):
    name = spec["name"]
    seconds = model.get("startup_probe_seconds")
    if seconds is not None:
        try:
            seconds = whole_number(seconds, "vllm_models[%s].startup_probe_seconds" % name, 1)
        except VllmInputError as exc:
            report.error(str(exc))
            seconds = None
    spec["startup_probe"] = startup_probe(spec.get("model_bytes"), settings, spec["downloads_at_start"], seconds)
    spec["startup_seconds"] = spec["startup_probe"]["periodSeconds"] * spec["startup_probe"]["failureThreshold"]
    spec["readiness_probe"], spec["liveness_probe"] = runtime_probes(settings)
    spec["progress_deadline_seconds"] = spec["startup_seconds"] + 600


def _resolve_labels(report, model, spec, settings):
    """The role's labels plus vllm_labels and the model's labels (which never override the role's)."""
    name = spec["name"]
    labels = {
        "app.kubernetes.io/name": "vllm",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        MODEL_LABEL: name,
    }
    extra_labels = dict(settings["labels"] or {})
    extra_labels.update(model.get("labels") or {})
    for key, value in extra_labels.items():
        if not is_valid_label_value(value):
            report.error(
                "vllm_models[%s].labels: %s=%r is not a valid Kubernetes label value: use a string of at most 63 "
                "characters [A-Za-z0-9-_.] starting and ending alphanumeric (or empty), e.g. platform"
                % (name, key, value)
            )
        elif key not in labels:
            labels[key] = value
    spec["labels"] = labels
    spec["selector_labels"] = {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": name}
    spec["pod_annotations"] = dict(model.get("annotations") or {})


def _resolve_pod(model, spec, settings):
    """Pod-level settings: priority class, pull secrets, service account, runtime class request, volumes."""
    spec["priority_class_name"] = model.get("priority_class_name") or settings["priority_class_name"] or None
    spec["image_pull_secrets"] = [{"name": item} for item in settings["image_pull_secrets"] or []]
    spec["secrets"] += [item["name"] for item in spec["image_pull_secrets"]]
    spec["service_account_name"] = settings["service_account_name"] or None
    spec["runtime_class_request"] = (
        model["runtime_class_name"] if "runtime_class_name" in model else settings["runtime_class"]
    )
    spec["volumes"] = [spec["cache_volume"]]
    spec["volume_mounts"] = [{"name": "model-cache", "mountPath": spec["cache_mount_path"]}]
    if spec["shm_size"]:
        spec["volumes"].append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec["shm_size"]}})
        spec["volume_mounts"].append({"name": "dshm", "mountPath": "/dev/shm"})  # noqa: S108 - /dev/shm is the mount point of the shared-memory volume, not a temp file
    spec["volumes"] += spec.pop("volumes_extra")


def _resolve_service(report, model, spec, settings):
    name = spec["name"]
    service_type = model.get("service_type") or settings["service_type"]
    if service_type not in SERVICE_TYPES:
        report.error(
            "vllm_models[%s].service_type: %r is not one of %s" % (name, service_type, ", ".join(SERVICE_TYPES))
        )
    spec["service"] = {
        "type": service_type,
        "session_affinity": bool(settings["service_session_affinity"]),
        "session_affinity_timeout": int(settings["service_session_affinity_timeout"]),
    }
    spec["strategy"] = {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": settings["max_surge"], "maxUnavailable": settings["max_unavailable"]},
    }


def _check_quantization(report, refuse, name, quantization, release):
    """The model's quantization against the release's methods; warns where it forces slower kernels."""
    if not quantization:
        return None
    if quantization not in release.quantization_methods:
        refuse(
            "vllm_models[%s].quantization: %r is not a quantization method of vLLM %s; use one of %s, or leave it "
            "unset so vLLM takes the method from the checkpoint's quantization_config"
            % (name, quantization, release.version, ", ".join(release.quantization_methods))
        )
    elif quantization in SLOWER_WHEN_FORCED:
        report.warn(
            "vllm_models[%s].quantization: %s forces vLLM's %s kernels even where %s runs and is faster "
            "(Ampere and newer); leave quantization unset so vLLM reads the method from the checkpoint and picks "
            "%s when the GPU supports it"
            % (name, quantization, quantization, SLOWER_WHEN_FORCED[quantization], SLOWER_WHEN_FORCED[quantization])
        )
    return quantization


def _resolve_pdb(report, model, spec, settings):
    wanted = model.get("pdb") if model.get("pdb") is not None else settings["pdb"]
    replicas = spec["replicas"]
    if str(wanted).lower() == "auto":
        wanted = replicas >= 2
    else:
        wanted = _truthy(wanted)
    if wanted and replicas < 2:
        report.warn("vllm_models[%s]: a PodDisruptionBudget on a single replica blocks node drains" % spec["name"])
    spec["pdb"] = {"max_unavailable": settings["pdb_max_unavailable"]} if wanted else None


def _resolve_ingress(report, model, spec, settings):
    own = model.get("ingress") or {}
    enabled = own.get("enabled", settings["ingress_enabled"] if not own else True)
    spec["ingress"] = None
    if not enabled:
        return
    host = own.get("host", settings["ingress_host"]) or None
    path = own.get("path")
    if not path:
        prefix = (settings["ingress_path_prefix"] or "/").rstrip("/")
        path = prefix + "/" + spec["name"]
    if not path.startswith("/"):
        report.error("vllm_models[%s].ingress.path: %r must start with /" % (spec["name"], path))
    class_name = settings["ingress_class_name"] or ("traefik" if settings["is_k3s"] else None)
    strip = bool(settings["ingress_strip_prefix"]) and path != "/"
    annotations = dict(settings["ingress_annotations"] or {})
    base = path.rstrip("/")
    paths = [{"path": base + route, "path_type": path_type} for route, path_type in INGRESS_ROUTES]
    strip_with = None
    if strip:
        if class_name == "nginx":
            # One regex path for the same routes; ingress-nginx matches it from the start of the URI.
            annotations["nginx.ingress.kubernetes.io/rewrite-target"] = "/$1"
            paths = [{"path": base + NGINX_ROUTES_REGEX, "path_type": "ImplementationSpecific"}]
            strip_with = "nginx"
        elif class_name == "traefik":
            strip_with = "traefik"  # Middleware decided once the cluster's CRDs are known
        else:
            report.warn(
                "vllm_models[%s]: the ingress path %s is not stripped for ingress class %r; vLLM serves "
                "/v1 at its root, so add the rewrite annotations of your controller through "
                "vllm_ingress_annotations or give each model its own host" % (spec["name"], path, class_name)
            )
    if not any(item["name"] == "VLLM_API_KEY" for item in spec["env"]):
        report.warn(
            "vllm_models[%s]: the Ingress publishes %s/v1 without an API key, so anyone who reaches it can use "
            "the model; set vllm_api_key_secret_name (or api_key_secret on the model)" % (spec["name"], base)
        )
    tls = own.get("tls_secret", settings["ingress_tls_secret"]) or None
    if tls and not host:
        report.error(
            "vllm_models[%s]: an ingress TLS Secret needs a host; set vllm_ingress_host or ingress.host" % spec["name"]
        )
    if tls:
        spec["secrets"].append(tls)
    spec["ingress"] = {
        "host": host,
        "path": path,
        "paths": paths,
        "class_name": class_name,
        "annotations": annotations,
        "tls_secret": tls,
        "strip_with": strip_with,
        "strip_prefix": base if strip_with == "traefik" else None,
    }


# --------------------------------------------------------------------------- cluster checks


def _cluster_checks(report, specs, settings, cluster, prune):
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
        spec = _resolve_model(result, model, settings, seen)
        if spec is not None:
            specs.append(spec)
    if cluster is not None:
        # Free GPUs are only comparable once this role's own pods are known (a re-run must count
        # the GPUs its pods already hold as available).
        _cluster_checks(result, specs, settings, cluster, prune)
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


# --------------------------------------------------------------------------- prune


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


# --------------------------------------------------------------------------- rollout problems


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
