"""LLM Engine gateway stand-in for the sandbox.

THIS IS A TEST STAND-IN, NOT PART OF THE COLLECTION. The real gateway (Scale's ``model_engine_server``)
needs container images that cannot run on the sandbox machines, so the sandbox starts this small
HTTP server instead. It behaves like the gateway where the collection depends on it:

- the same routes under ``/v1/llm`` (create, list, get, update, delete model endpoints;
  ``completions-sync`` answers a canned completion), ``/healthz``, ``/healthcheck``, ``/readyz``;
- HTTP Basic auth where the username is the user id and the password is ignored (a bare Bearer token
  counts as the user id); no credentials: 401;
- the request schema (unknown fields are dropped silently; wrong types and missing required fields
  are 422) and the server's validation rules with its status codes and ``{"detail": ...}`` bodies;
- the status lifecycle ``UPDATE_PENDING -> UPDATE_IN_PROGRESS -> READY`` (or ``UPDATE_FAILED`` with a
  ``status_reason``); ``DELETE_IN_PROGRESS`` until the endpoint's Deployment is gone;
- like the real endpoint builder it creates one Deployment per endpoint in ``--namespace`` with the
  nodeSelector ``k8s.amazonaws.com/accelerator: <gpu_type>``, ``nvidia.com/gpu`` requests/limits and
  the ``nvidia.com/gpu`` NoSchedule toleration, so the real scheduler decides where (and whether)
  workers run. ``available_workers`` comes from that Deployment's status; while workers are missing,
  ``spec.status_reason`` carries the Pending pods' scheduler message (the real server reports no
  reason there; it is how tests see why an endpoint does not serve).

Rules and messages follow model_engine_server (domain/use_cases/llm_model_endpoint_use_cases.py,
model_endpoint_use_cases.py, common/resource_limits.py, common/settings.py). They are written out
here on purpose instead of importing the collection's module_utils, so a client-side bug cannot
hide behind the same bug in the stand-in. Known differences from the real server:

- hardware inference (no hardware fields given) uses fixed defaults, not the recommended-hardware
  ConfigMap and the checkpoint's config.json; ``checkpoint_path`` is checked for its scheme and
  ``.tar`` only, not for ``*.safetensors`` files in the bucket;
- ``inference_framework_image_tag: latest`` resolves to a fixed tag per framework;
- DELETE answers 409 while an update is in progress (the route maps that error; current upstream code
  only logs a warning), and the record stays ``DELETE_IN_PROGRESS`` until the Deployment is gone
  (upstream deletes the record in the request);
- no autoscaling: the Deployment runs ``min_workers`` replicas.

Test knobs (no auth, not logged): ``POST /_standin/faults`` with ``{"status": 500, "count": 2}``,
``{"latency_seconds": 1.5, "count": 3}``, ``{"hang_seconds": 10, "count": 1}`` or
``{"fail_builds": 1, "reason": "..."}``, optionally limited by ``"methods": ["PUT"]`` and
``"path_prefix": "/v1/llm/model-endpoints/x"``; ``DELETE /_standin/faults`` clears them;
``GET /_standin/requests`` lists ``{method, path, query, status, user}`` of every API request
(``DELETE /_standin/requests`` clears it).

    python tests/sandbox/llm_engine_standin.py --host 127.0.0.1 --port 5005 \
        --kubeconfig .sandbox/admin.kubeconfig --namespace llm-engine [--prometheus-address URL]

Without ``--kubeconfig`` no Deployment is made and every worker counts as available at once (for
the stand-in's own HTTP tests only).
"""

import argparse
import base64
import binascii
import datetime
import hashlib
import json
import re
import sys
import threading
import time
import uuid
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

# ------------------------------------------------------------------------------------ server rules

FRAMEWORKS = ["vllm", "sglang", "text_generation_inference", "deepspeed", "lightllm", "tensorrt_llm"]
STREAMING_ONLY = ["text_generation_inference", "vllm", "lightllm", "tensorrt_llm"]
ENDPOINT_TYPES = ["sync", "async", "streaming"]
GPU_TYPES = ["nvidia-tesla-t4", "nvidia-ampere-a10", "nvidia-ampere-a100", "nvidia-ampere-a100e",
             "nvidia-hopper-h100", "nvidia-hopper-h100-1g20gb", "nvidia-hopper-h100-3g40gb"]
QUANTIZATIONS = ["bitsandbytes", "awq"]
SUPPORTED_QUANTIZATIONS = {"deepspeed": [], "text_generation_inference": ["bitsandbytes"], "vllm": ["awq"],
                           "lightllm": [], "tensorrt_llm": [], "sglang": []}
REQUIRED_LABELS = ["team", "product"]
RESTRICTED_LABELS = ["user_id", "endpoint_name"]
RESERVED_METADATA_KEYS = ["_llm", "_CONVERTED_FROM_ARTIFACT_LIKE"]
MAX_ENDPOINT_SIZE = 250  # upstream common/resource_limits.py:21 (pinned a8236961)
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
INSTANCE_LIMITS = {  # cpus, memory, storage
    "nvidia-tesla-t4": (63, "250Gi", "640Gi"), "nvidia-ampere-a10": (63, "250Gi", "640Gi"),
    "nvidia-ampere-a100": (95, "1000Gi", "640Gi"), "nvidia-ampere-a100e": (95, "1000Gi", "640Gi"),
    "nvidia-hopper-h100": (191, "2000Gi", "1300Gi"), "nvidia-hopper-h100-1g20gb": (47, "500Gi", "640Gi"),
    "nvidia-hopper-h100-3g40gb": (95, "1000Gi", "640Gi"),
}
FORWARDER = (1, "2Gi", "1G")
LATEST_TAGS = {"vllm": "0.6.3.post1", "sglang": "0.4.1", "text_generation_inference": "2.4.0",
               "deepspeed": "0.1.0", "lightllm": "1.0.0", "tensorrt_llm": "24.05"}
INFERRED_HARDWARE = {"gpus": 1, "gpu_type": "nvidia-ampere-a10", "cpus": "4", "memory": "16Gi",
                     "storage": "40Gi", "nodes_per_worker": 1}
ACCELERATOR_LABEL = "k8s.amazonaws.com/accelerator"

# vLLM engine args (common/dtos/llms/vllm.py VLLMEndpointAdditionalArgs) and their types.
VLLM_ARGS = {
    "max_model_len": int, "max_num_seqs": int, "max_num_batched_tokens": int, "enforce_eager": bool,
    "trust_remote_code": bool, "pipeline_parallel_size": int, "tensor_parallel_size": int,
    "quantization": str, "disable_log_requests": bool, "chat_template": str, "tool_call_parser": str,
    "enable_auto_tool_choice": bool, "load_format": str, "config_format": str, "tokenizer_mode": str,
    "limit_mm_per_prompt": str, "tokenizer": str, "dtype": str, "seed": int, "revision": str,
    "code_revision": str, "rope_scaling": dict, "tokenizer_revision": str, "quantization_param_path": str,
    "max_seq_len_to_capture": int, "disable_sliding_window": bool, "skip_tokenizer_init": bool,
    "served_model_name": str, "override_neuron_config": dict, "mm_processor_kwargs": dict,
    "block_size": int, "gpu_memory_utilization": float, "swap_space": float, "cache_dtype": str,
    "num_gpu_blocks_override": int, "enable_prefix_caching": bool, "max_gpu_memory_utilization": float,
    "attention_backend": str,
}

NUM_OR_STR = "num_or_str"
COMMON_FIELDS = {
    "quantize": QUANTIZATIONS, "checkpoint_path": str, "post_inference_hooks": list, "cpus": NUM_OR_STR,
    "gpus": int, "memory": NUM_OR_STR, "gpu_type": GPU_TYPES, "storage": NUM_OR_STR,
    "nodes_per_worker": int, "optimize_costs": bool, "min_workers": int, "max_workers": int,
    "per_worker": int, "labels": "labels", "prewarm": bool, "high_priority": bool, "billing_tags": dict,
    "default_callback_url": str, "default_callback_auth": dict, "public_inference": bool,
    "chat_template_override": str,
}
CREATE_FIELDS = dict(COMMON_FIELDS, name=str, model_name=str, source=["hugging_face"],
                     inference_framework=FRAMEWORKS, inference_framework_image_tag=str, num_shards=int,
                     metadata=dict, endpoint_type=ENDPOINT_TYPES)
CREATE_REQUIRED = ["name", "model_name", "metadata", "min_workers", "max_workers", "per_worker", "labels"]
CREATE_DEFAULTS = {"source": "hugging_face", "inference_framework": "vllm", "inference_framework_image_tag": "latest",
                   "num_shards": 1, "endpoint_type": "sync", "public_inference": True}
UPDATE_FIELDS = dict(COMMON_FIELDS, model_name=str, source=["hugging_face"], inference_framework=FRAMEWORKS,
                     inference_framework_image_tag=str, num_shards=int, metadata=dict, force_bundle_recreation=bool)
HARDWARE = ["gpus", "gpu_type", "cpus", "memory", "storage", "nodes_per_worker"]
BUNDLE_FIELDS = ["force_bundle_recreation", "model_name", "source", "inference_framework_image_tag", "num_shards",
                 "quantize", "checkpoint_path", "chat_template_override"]

SUFFIX = {"": 1, "m": Decimal("0.001"), "k": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9, "T": 10 ** 12,
          "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40}


class ApiError(Exception):
    def __init__(self, status, detail):
        super().__init__(detail)
        self.status = status
        self.detail = detail


def bad(detail):
    return ApiError(400, detail)


def quantity(value):
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    match = re.fullmatch(r"([0-9.]+(?:[eE][-+]?[0-9]+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?", str(value).strip())
    if not match:
        raise ValueError(value)
    try:
        return Decimal(match.group(1)) * Decimal(SUFFIX[match.group(2) or ""])
    except InvalidOperation as exc:
        raise ValueError(value) from exc


def parse_body(raw, fields, required, discriminated, loc_tag):
    """Pydantic-like parsing: 422 for bad JSON, missing fields or wrong types; drop unknown fields."""
    try:
        data = json.loads(raw or b"null")
    except ValueError:
        raise ApiError(422, [{"type": "json_invalid", "loc": ["body"], "msg": "JSON decode error"}]) from None
    if not isinstance(data, dict):
        raise ApiError(422, [{"type": "model_attributes_type", "loc": ["body"],
                              "msg": "Input should be a valid dictionary or object"}])
    framework = data.get("inference_framework", "vllm" if discriminated else None)
    if discriminated and framework not in FRAMEWORKS:
        raise ApiError(422, [{"type": "union_tag_invalid", "loc": ["body"],
                              "msg": "Input tag '%s' found using 'inference_framework' does not match any of the "
                                     "expected tags: %s" % (framework, ", ".join(FRAMEWORKS))}])
    allowed = dict(fields)
    if framework == "vllm":
        allowed.update(VLLM_ARGS)
    tag = framework or loc_tag
    errors = []
    out = {}
    for key in required:
        if data.get(key) is None:
            errors.append({"type": "missing", "loc": ["body", tag, key], "msg": "Field required"})
    for key, value in data.items():
        if key not in allowed or value is None:
            continue  # unknown fields are dropped silently, like the real server
        kind = allowed[key]
        ok, value = _coerce(kind, value)
        if not ok:
            errors.append({"type": "type_error", "loc": ["body", tag, key], "msg": _expected(kind), "input": value})
        else:
            out[key] = value
    if errors:
        raise ApiError(422, errors)
    return out


def _coerce(kind, value):
    if isinstance(kind, list):
        return value in kind, value
    if kind is bool:
        return isinstance(value, bool), value
    if kind is int:
        if isinstance(value, bool):
            return False, value
        if isinstance(value, int):
            return True, value
        if isinstance(value, float) and value.is_integer():
            return True, int(value)
        if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip()):
            return True, int(value)
        return False, value
    if kind is float:
        if isinstance(value, bool):
            return False, value
        if isinstance(value, (int, float)):
            return True, float(value)
        try:
            return True, float(value)
        except (TypeError, ValueError):
            return False, value
    if kind is str:
        return isinstance(value, str), value
    if kind is dict:
        return isinstance(value, dict), value
    if kind is list:
        return isinstance(value, list), value
    if kind == NUM_OR_STR:
        return isinstance(value, (str, int, float)) and not isinstance(value, bool), value
    if kind == "labels":
        return isinstance(value, dict) and all(isinstance(v, str) for v in value.values()), value
    return False, value


def _expected(kind):
    if isinstance(kind, list):
        return "Input should be %s" % " or ".join("'%s'" % k for k in kind)
    names = {bool: "a valid boolean", int: "a valid integer", float: "a valid number", str: "a valid string",
             dict: "a valid dictionary", list: "a valid list", NUM_OR_STR: "a valid string or number",
             "labels": "a dictionary of strings"}
    return "Input should be %s" % names.get(kind, kind)


def validate_labels(labels):
    for key in REQUIRED_LABELS:
        if key not in labels:
            raise bad("Missing label '%s' in labels. These are all required: %s" % (key, set(REQUIRED_LABELS)))
    for key in RESTRICTED_LABELS:
        if key in labels:
            raise bad("Cannot specify '%s' in labels" % key)
    for value in labels.values():
        if LABEL_VALUE.fullmatch(value) is None:
            raise bad("Invalid label value %s, must match regex %s" % (value, LABEL_VALUE.pattern))


def validate_deployment_resources(min_workers, max_workers, endpoint_type, scale_from_zero):
    floor = 0 if endpoint_type == "async" or scale_from_zero else 1
    if min_workers is not None and min_workers < floor:
        raise bad("Requested min workers %s too low" % min_workers)
    if max_workers is not None and max_workers > MAX_ENDPOINT_SIZE:
        raise bad("Requested max workers %s too high" % max_workers)


def validate_resource_requests(cpus, memory, storage, gpus, gpu_type):
    if (gpus is None or gpus == 0) and gpu_type is not None:
        raise bad("Cannot have gpus=%r when gpu_type is not None" % gpus)
    if gpus is not None and gpus > 0 and gpu_type is None:
        raise bad("Must provide gpu_type if gpus > 0")
    limits = INSTANCE_LIMITS.get(gpu_type, (7, "30Gi", "640Gi"))
    for index, (name, value) in enumerate((("cpus", cpus), ("memory", memory), ("storage", storage))):
        if value is None:
            continue
        try:
            amount = quantity(value)
        except ValueError:
            raise bad("Requested %s=%r is incorrectly formatted" % (name, value)) from None
        if amount <= 0:
            raise bad("Requested %s must be positive" % name)
        limit = quantity(limits[index])
        if amount + quantity(FORWARDER[index]) > limit:
            raise bad("Requested %s=%r too high. The maximum for gpu_type=%r is %s"
                      % (name, value, gpu_type, limit - quantity(FORWARDER[index])))


def validate_num_shards(num_shards, framework, gpus):
    if framework == "deepspeed":
        if num_shards <= 1:
            raise bad("DeepSpeed requires more than 1 GPU.")
        if num_shards != gpus:
            raise bad("Num shard %s must be the same as number of GPUs %s for DeepSpeed." % (num_shards, gpus))
    if num_shards != gpus:
        raise bad("Num shard %s must be equal to the number of GPUs %s." % (num_shards, gpus))


def validate_quantization(quantize, framework):
    if quantize is not None and quantize not in SUPPORTED_QUANTIZATIONS[framework]:
        raise bad("Quantization %s is not supported for inference framework %s. Supported quantization types "
                  "are %s." % (quantize, framework, SUPPORTED_QUANTIZATIONS[framework]))


def validate_chat_template(template, framework):
    if template is not None:
        if len(template) > 10000:
            raise bad("Chat template length must be less than 10000.")
        if framework != "vllm":
            raise bad("Chat template is only supported for inference framework vllm.")


def validate_checkpoint_path(path):
    if not path.startswith("s3://") and not path.startswith("azure://") and "blob.core.windows.net" not in path:
        raise bad("Only S3 and Azure Blob Storage paths are supported. Given checkpoint path: %s." % path)
    if path.endswith(".tar"):
        raise bad("Tar files are not supported. Given checkpoint path: %s." % path)


def deployment_name(user_id, endpoint_name):
    digest = hashlib.md5((user_id + endpoint_name).encode("utf-8")).hexdigest()  # noqa: S324 - name, not security
    return "-".join(["launch", user_id[:24], endpoint_name[:8], digest[:8]])


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


# ------------------------------------------------------------------------------------------ builders

class BuildError(Exception):
    pass


class KubeBuilder:
    """Creates, observes and deletes each endpoint's Deployment like LLM Engine's endpoint builder."""

    def __init__(self, kubeconfig, namespace):
        from kubernetes import client, config

        self.namespace = namespace
        api = config.new_client_from_config(config_file=kubeconfig)
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)
        self.ApiException = client.ApiException

    def ensure_namespace(self, timeout=120):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.core.read_namespace(self.namespace)
                return
            except self.ApiException as exc:
                if exc.status != 404:
                    raise
                try:
                    self.core.create_namespace({"apiVersion": "v1", "kind": "Namespace",
                                                "metadata": {"name": self.namespace}})
                    return
                except self.ApiException as create_exc:
                    if create_exc.status != 409:
                        raise
                    return
            except Exception as exc:  # noqa: BLE001 - API server not up yet
                if time.monotonic() > deadline:
                    raise
                log("waiting for the Kubernetes API: %s" % exc)
                time.sleep(2)

    def manifest(self, record):
        name = record["deployment_name"]
        labels = {"app": name, "endpoint_id": record["id"], "endpoint_name": record["name"],
                  "user_id": record["owner"], "created_by": record["owner"], "owner": record["owner"],
                  "team": record["labels"].get("team", ""), "product": record["labels"].get("product", ""),
                  "managed-by": "model-engine", "llmops.serving/standin": "true"}
        gpus = record["gpus"]
        requests = {"cpu": str(record["cpus"]), "memory": str(record["memory"]),
                    "ephemeral-storage": str(record["storage"]), "nvidia.com/gpu": str(gpus)}
        return {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": self.namespace, "labels": labels},
            "spec": {
                "replicas": max(record["min_workers"], 0),
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "nodeSelector": {ACCELERATOR_LABEL: record["gpu_type"]},
                        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                        "terminationGracePeriodSeconds": 0,
                        "containers": [{
                            "name": "main",
                            "image": "model-engine/%s:%s" % (record["inference_framework"],
                                                             record["inference_framework_image_tag"]),
                            "resources": {"requests": requests,
                                          "limits": {"nvidia.com/gpu": str(gpus), "memory": str(record["memory"])}},
                        }],
                    },
                },
            },
        }

    def apply(self, record):
        body = self.manifest(record)
        try:
            try:
                self.apps.read_namespaced_deployment(record["deployment_name"], self.namespace)
                self.apps.replace_namespaced_deployment(record["deployment_name"], self.namespace, body)
            except self.ApiException as exc:
                if exc.status != 404:
                    raise
                self.apps.create_namespaced_deployment(self.namespace, body)
        except self.ApiException as exc:
            raise BuildError("Kubernetes refused Deployment %s: %s" % (record["deployment_name"], _k8s_message(exc))) \
                from None

    def delete(self, record):
        try:
            self.apps.delete_namespaced_deployment(record["deployment_name"], self.namespace,
                                                   propagation_policy="Background")
        except self.ApiException as exc:
            if exc.status != 404:
                raise

    def gone(self, record):
        try:
            self.apps.read_namespaced_deployment(record["deployment_name"], self.namespace)
            return False
        except self.ApiException as exc:
            if exc.status == 404:
                return True
            raise

    def observe(self, record):
        """(available, unavailable, reason) of the endpoint's workers."""
        try:
            dep = self.apps.read_namespaced_deployment(record["deployment_name"], self.namespace)
        except self.ApiException as exc:
            if exc.status == 404:
                return 0, 0, "Deployment %s not found" % record["deployment_name"]
            return 0, 0, "cannot read Deployment: %s" % _k8s_message(exc)
        replicas = dep.spec.replicas or 0
        available = dep.status.available_replicas or 0
        unavailable = dep.status.unavailable_replicas or max(replicas - available, 0)
        reason = None
        if available < replicas:
            pods = self.core.list_namespaced_pod(self.namespace, label_selector="endpoint_id=%s" % record["id"]).items
            for pod in pods:
                for cond in (pod.status.conditions or []) if pod.status else []:
                    if cond.type == "PodScheduled" and cond.status == "False":
                        reason = "pod %s Pending (%s): %s" % (pod.metadata.name, cond.reason, cond.message)
                        break
                if reason:
                    break
            if reason is None:
                reason = "%d of %d worker(s) not available yet (%d pod(s))" % (
                    replicas - available, replicas, len(pods))
        return available, unavailable, reason


def _k8s_message(exc):
    try:
        return json.loads(exc.body).get("message") or exc.reason
    except (TypeError, ValueError, AttributeError):
        return "%s %s" % (exc.status, exc.reason)


class MemoryBuilder:
    """No cluster: every worker is available at once (the stand-in's own HTTP tests only)."""

    namespace = None

    def ensure_namespace(self):
        return None

    def apply(self, record):
        return None

    def delete(self, record):
        return None

    def gone(self, record):
        return True

    def observe(self, record):
        return max(record["min_workers"], 0), 0, None


# --------------------------------------------------------------------------------------------- state

class Gateway:
    def __init__(self, builder, scale_from_zero=False, build_delay=0.3, max_concurrency=500):
        self.builder = builder
        self.scale_from_zero = scale_from_zero
        self.build_delay = build_delay
        self.max_concurrency = max_concurrency
        self.lock = threading.RLock()
        self.endpoints = {}  # (owner, name) -> record
        self.faults = []
        self.requests = []
        self.in_flight = 0

    # -- faults ---------------------------------------------------------------------------------
    def take_fault(self, method, path, kind):
        with self.lock:
            for fault in self.faults:
                if fault.get(kind) is None or fault["count"] == 0:
                    continue
                if method and fault.get("methods") and method not in fault["methods"]:
                    continue
                if fault.get("path_prefix") and not path.startswith(fault["path_prefix"]):
                    continue
                if fault["count"] > 0:
                    fault["count"] -= 1
                return fault
        return None

    # -- endpoints ------------------------------------------------------------------------------
    def find(self, user, name, readable=True):
        with self.lock:
            record = self.endpoints.get((user, name))
            if record is None and readable:
                for (_owner, other), rec in self.endpoints.items():
                    if other == name and rec.get("public_inference"):
                        return rec
            return record

    def render(self, record):
        deployment_state = resource_state = labels = None
        reason = record.get("status_reason")
        if record["infra_ready"]:
            available, unavailable, pending = self.builder.observe(record) if record["status"] != "DELETE_IN_PROGRESS" \
                else (0, 0, None)
            if record["status"] == "READY" and pending and not reason:
                reason = pending
            deployment_state = {"min_workers": record["min_workers"], "max_workers": record["max_workers"],
                                "per_worker": record["per_worker"], "concurrent_requests_per_worker": 250,
                                "available_workers": available, "unavailable_workers": unavailable}
            resource_state = dict((key, record[key]) for key in HARDWARE)
            resource_state["optimize_costs"] = record.get("optimize_costs", False)
            labels = dict(record["labels"])
        spec = {
            "id": record["id"], "name": record["name"], "endpoint_type": record["endpoint_type"],
            "destination": record["deployment_name"], "deployment_name": record["deployment_name"],
            "metadata": record["metadata"], "bundle_name": record["bundle_name"], "status": record["status"],
            "status_reason": reason, "post_inference_hooks": record.get("post_inference_hooks"),
            "default_callback_url": record.get("default_callback_url"),
            "default_callback_auth": record.get("default_callback_auth"), "labels": labels, "aws_role": None,
            "results_s3_bucket": None, "created_by": record["owner"], "created_at": record["created_at"],
            "last_updated_at": record["last_updated_at"], "deployment_state": deployment_state,
            "resource_state": resource_state, "num_queued_items": None,
            "public_inference": record["public_inference"],
        }
        return {
            "id": record["id"], "name": record["name"], "model_name": record["model_name"], "source": record["source"],
            "status": record["status"], "inference_framework": record["inference_framework"],
            "inference_framework_image_tag": record["inference_framework_image_tag"],
            "num_shards": record["num_shards"], "quantize": record.get("quantize"),
            "checkpoint_path": record.get("checkpoint_path"),
            "chat_template_override": record.get("chat_template_override"), "spec": spec,
        }

    def create(self, user, raw):
        req = parse_body(raw, CREATE_FIELDS, CREATE_REQUIRED, True, "vllm")
        for key, value in CREATE_DEFAULTS.items():
            req.setdefault(key, value)
        framework = req["inference_framework"]
        # _fill_hardware_info
        if any(req.get(key) is None for key in HARDWARE):
            if not all(req.get(key) is None for key in HARDWARE):
                raise bad("All hardware spec fields (gpus, gpu_type, cpus, memory, storage, nodes_per_worker) must be "
                          "provided if any hardware spec field is missing.")
            if not req.get("checkpoint_path"):
                raise bad("No checkpoint path found for model %s" % req["model_name"])
            req.update(INFERRED_HARDWARE)
            req["num_shards"] = req["gpus"]
        if not all(req.get(key) for key in HARDWARE):
            raise ApiError(500, "Internal Server Error")  # RuntimeError("Some hardware info is missing unexpectedly.")
        validate_deployment_resources(req["min_workers"], req["max_workers"], req["endpoint_type"],
                                      self.scale_from_zero)
        if req["gpu_type"] == "nvidia-ampere-a100e":
            raise bad("We have migrated A100 usage to H100. Please request for H100 instead!")
        validate_labels(req["labels"])
        validate_num_shards(req["num_shards"], framework, req["gpus"])
        validate_quantization(req.get("quantize"), framework)
        validate_chat_template(req.get("chat_template_override"), framework)
        if framework in STREAMING_ONLY and req["endpoint_type"] != "streaming":
            raise bad("Creating endpoint type %s is not allowed. Can only create streaming endpoints for "
                      "text-generation-inference, vLLM, LightLLM, and TensorRT-LLM." % req["endpoint_type"])
        if req["inference_framework_image_tag"] == "latest":
            req["inference_framework_image_tag"] = LATEST_TAGS[framework]
        if req["nodes_per_worker"] > 1 and framework != "vllm":
            raise bad("Multinode endpoints are only supported for VLLM models.")
        if req.get("checkpoint_path"):
            validate_checkpoint_path(req["checkpoint_path"])
        elif framework in ("vllm", "sglang"):
            raise bad("No checkpoint path found for model %s" % req["model_name"])
        validate_resource_requests(req["cpus"], req["memory"], req["storage"], req["gpus"], req["gpu_type"])
        for key in RESERVED_METADATA_KEYS:
            if key in req["metadata"]:
                raise bad("%s is a reserved metadata key and cannot be used by user." % key)
        engine_args = dict((k, v) for k, v in req.items() if k in VLLM_ARGS) if framework == "vllm" else {}
        metadata = dict(req["metadata"])
        metadata["_llm"] = self._llm_metadata(req, engine_args)
        with self.lock:
            if (user, req["name"]) in self.endpoints:
                raise bad("The specified model endpoint already exists.")
            stamp = now_iso()
            record = dict((key, req.get(key)) for key in CREATE_FIELDS)
            record.update({
                "id": "end_" + uuid.uuid4().hex[:20], "owner": user, "metadata": metadata, "engine_args": engine_args,
                "status": "UPDATE_PENDING", "status_reason": None, "created_at": stamp, "last_updated_at": stamp,
                "deployment_name": deployment_name(user, req["name"]), "infra_ready": False, "generation": 1,
                "bundle_name": "%s-%s" % (req["name"], int(time.time() * 1000)),
                "creation_task_id": str(uuid.uuid4()),
            })
            self.endpoints[(user, req["name"])] = record
        self._build_later(record, 1)
        return {"endpoint_creation_task_id": record["creation_task_id"]}

    @staticmethod
    def _llm_metadata(req, engine_args):
        llm = {key: req.get(key) for key in ("model_name", "source", "inference_framework",
                                             "inference_framework_image_tag", "num_shards", "quantize",
                                             "checkpoint_path", "chat_template_override")}
        if engine_args:
            llm["vllm_additional_args"] = engine_args
        return llm

    def update(self, user, name, raw):
        req = parse_body(raw, UPDATE_FIELDS, [], True, "vllm")
        if req.get("labels") is not None:
            validate_labels(req["labels"])
        with self.lock:
            record = self.endpoints.get((user, name))
            if record is None:
                raise ApiError(404, "The specified LLM endpoint could not be found.")
            if not record["infra_ready"]:
                raise ApiError(500, "Endpoint infra state not found for model_endpoint_name='%s'" % name)
            framework = record["inference_framework"]
            new = dict(record)
            if any(req.get(key) for key in BUNDLE_FIELDS):
                for key in ("model_name", "source", "inference_framework_image_tag", "num_shards", "quantize",
                            "checkpoint_path"):
                    new[key] = req.get(key) or record.get(key)
                if req.get("inference_framework_image_tag") == "latest":
                    new["inference_framework_image_tag"] = LATEST_TAGS[framework]
                validate_num_shards(new["num_shards"], framework, req.get("gpus") or record["gpus"])
                validate_quantization(new.get("quantize"), framework)
                validate_chat_template(req.get("chat_template_override"), framework)
                if req.get("chat_template_override"):
                    new["chat_template_override"] = req["chat_template_override"]
                if new.get("checkpoint_path"):
                    validate_checkpoint_path(new["checkpoint_path"])
                # the rebuilt bundle holds only this request's engine args
                new["engine_args"] = dict((k, v) for k, v in req.items() if k in VLLM_ARGS) \
                    if framework == "vllm" else {}
                new["bundle_name"] = "%s-%s" % (name, int(time.time() * 1000))
            validate_resource_requests(req.get("cpus") or record["cpus"], req.get("memory") or record["memory"],
                                       req.get("storage") or record["storage"], req.get("gpus") or record["gpus"],
                                       req.get("gpu_type") or record["gpu_type"])
            validate_deployment_resources(req.get("min_workers"), req.get("max_workers"), record["endpoint_type"],
                                          self.scale_from_zero)
            if req.get("metadata") is not None:
                for key in RESERVED_METADATA_KEYS:
                    if key in req["metadata"]:
                        raise bad("%s is a reserved metadata key and cannot be used by user." % key)
            for key in ("cpus", "gpus", "memory", "gpu_type", "storage", "optimize_costs", "min_workers",
                        "max_workers", "per_worker", "labels", "prewarm", "high_priority", "default_callback_url",
                        "default_callback_auth", "public_inference", "post_inference_hooks"):
                if req.get(key) is not None:
                    new[key] = req[key]
            metadata = dict(record["metadata"])
            metadata.update(req.get("metadata") or {})
            metadata["_llm"] = self._llm_metadata(new, new["engine_args"])
            new["metadata"] = metadata
            new.update({"status": "UPDATE_PENDING", "status_reason": None, "last_updated_at": now_iso(),
                        "generation": record["generation"] + 1, "creation_task_id": str(uuid.uuid4())})
            record.clear()
            record.update(new)
            generation = record["generation"]
        self._build_later(record, generation)
        return {"endpoint_creation_task_id": record["creation_task_id"]}

    def delete(self, user, name):
        with self.lock:
            record = self.endpoints.get((user, name))
            if record is None:
                raise ApiError(404, "The requested model endpoint could not be found.")
            if record["status"] == "UPDATE_IN_PROGRESS":
                raise ApiError(409, "Existing operation on endpoint in progress, try again later.")
            record["status"] = "DELETE_IN_PROGRESS"
            record["generation"] += 1
        try:
            self.builder.delete(record)
        except Exception as exc:  # noqa: BLE001 - the builder's failure becomes the endpoint's status, as the real gateway does
            with self.lock:
                record["status"] = "UPDATE_FAILED"
                record["status_reason"] = "delete failed: %s" % exc
            raise ApiError(500, "deletion of endpoint failed.") from None
        threading.Thread(target=self._forget_when_gone, args=(record,), daemon=True).start()
        return {"deleted": True}

    def _forget_when_gone(self, record):
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if self.builder.gone(record):
                    break
            except Exception as exc:  # noqa: BLE001 - the builder's failure becomes the endpoint's status, as the real gateway does
                log("checking deletion of %s: %s" % (record["deployment_name"], exc))
            time.sleep(0.2)
        with self.lock:
            key = (record["owner"], record["name"])
            if self.endpoints.get(key) is record:
                del self.endpoints[key]

    def _build_later(self, record, generation):
        threading.Thread(target=self._build, args=(record, generation), daemon=True).start()

    def _build(self, record, generation):
        time.sleep(self.build_delay)
        with self.lock:
            if record["generation"] != generation:
                return
            record["status"] = "UPDATE_IN_PROGRESS"
        time.sleep(self.build_delay)
        failure = self.take_fault(None, "/v1/llm/model-endpoints/" + record["name"], "fail_builds")
        try:
            if failure:
                raise BuildError(failure.get("reason") or "injected build failure")
            self.builder.apply(record)
            status, reason = "READY", None
        except BuildError as exc:
            status, reason = "UPDATE_FAILED", str(exc)
        except Exception as exc:  # noqa: BLE001 - the builder's failure becomes the endpoint's status, as the real gateway does
            status, reason = "UPDATE_FAILED", "endpoint builder error: %s" % exc
        with self.lock:
            if record["generation"] != generation:
                return
            record["status"] = status
            record["status_reason"] = reason
            record["infra_ready"] = record["infra_ready"] or status == "READY"
        log("built %s: %s%s" % (record["name"], status, (" (%s)" % reason) if reason else ""))

    def completion(self, user, name, raw):
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            raise ApiError(422, [{"type": "json_invalid", "loc": ["body"], "msg": "JSON decode error"}]) from None
        errors = []
        for key, kind in (("prompt", str), ("max_new_tokens", int), ("temperature", float)):
            value = (body or {}).get(key) if isinstance(body, dict) else None
            ok = _coerce(kind, value)[0] if value is not None else False
            if not ok:
                errors.append({"type": "missing" if value is None else "type_error", "loc": ["body", key],
                               "msg": "Field required" if value is None else _expected(kind)})
        if errors:
            raise ApiError(422, errors)
        record = self.find(user, name)
        if record is None or record["status"] == "DELETE_IN_PROGRESS":
            raise ApiError(404, "The specified endpoint could not be found.")
        available = self.builder.observe(record)[0] if record["infra_ready"] else 0
        if available < 1:
            raise ApiError(500, "Upstream service error for request_id %s." % uuid.uuid4())
        words = body["prompt"].split()
        count = min(int(body["max_new_tokens"]), 8)
        text = " ".join(["standin"] * count)
        return {"request_id": str(uuid.uuid4()),
                "output": {"text": text, "num_prompt_tokens": len(words), "num_completion_tokens": count,
                           "tokens": None}}


# ------------------------------------------------------------------------------------------- HTTP

def log(msg):
    print("[llm-engine-standin] %s" % msg, flush=True)


def authenticate(header):
    if not header:
        return None
    scheme, _space, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[0] or None
    if scheme.lower() == "bearer":
        return value or None
    return None


class Handler(BaseHTTPRequestHandler):
    server_version = "llm-engine-standin/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # one line per request is printed by _finish instead
        return

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _send(self, status, body, headers=None):
        data = json.dumps(body).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _dispatch(self, method):
        gw = self.server.gateway
        url = urlparse(self.path)
        path = url.path
        query = dict((k, v[-1]) for k, v in parse_qs(url.query).items())
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        started = time.monotonic()
        if path.startswith("/_standin/"):
            status, body = self._admin(gw, method, path, raw)
            self._send(status, body)
            return
        if path in ("/healthz", "/healthcheck", "/readyz"):
            self._send(200, {"status": "ok"})
            return
        user = authenticate(self.headers.get("Authorization"))
        entry = {"method": method, "path": path, "query": query, "user": user, "status": None}
        with gw.lock:
            gw.requests.append(entry)
            gw.in_flight += 1
            too_many = gw.in_flight > gw.max_concurrency
        headers = {}
        try:
            if too_many:
                raise ApiError(429, "Too many concurrent requests")
            delay = gw.take_fault(method, path, "latency_seconds")
            if delay:
                time.sleep(float(delay["latency_seconds"]))
            hang = gw.take_fault(method, path, "hang_seconds")
            if hang:
                time.sleep(float(hang["hang_seconds"]))
            fault = gw.take_fault(method, path, "status")
            if fault:
                if fault.get("retry_after") is not None:
                    headers["Retry-After"] = str(fault["retry_after"])
                raise ApiError(int(fault["status"]), fault.get("detail") or "Injected fault (stand-in)")
            if user is None:
                headers["WWW-Authenticate"] = "Basic"
                raise ApiError(401, "Not authenticated")
            status, body = self._route(gw, method, path, query, user, raw)
        except ApiError as exc:
            status, body = exc.status, {"detail": exc.detail}
        except Exception as exc:  # noqa: BLE001 - a stand-in bug must answer, not hang the client
            log("error on %s %s: %r" % (method, path, exc))
            status, body = 500, {"detail": "Internal Server Error"}
        finally:
            with gw.lock:
                gw.in_flight -= 1
        entry["status"] = status
        log("%s %s -> %s (%s, %.0f ms)" % (method, self.path, status, user, (time.monotonic() - started) * 1000))
        self._send(status, body, headers)

    def _route(self, gw, method, path, query, user, raw):
        prefix = "/v1/llm/model-endpoints"
        if path == prefix:
            if method == "POST":
                return 200, gw.create(user, raw)
            if method == "GET":
                with gw.lock:
                    records = [r for (owner, _name), r in gw.endpoints.items() if owner == user
                               and (not query.get("name") or r["name"] == query["name"])]
                order = query.get("order_by")
                if order == "newest":
                    records.sort(key=lambda r: r["created_at"], reverse=True)
                elif order == "oldest":
                    records.sort(key=lambda r: r["created_at"])
                elif order == "alphabetical":
                    records.sort(key=lambda r: r["name"])
                elif order:
                    raise ApiError(422, [{"type": "enum", "loc": ["query", "order_by"],
                                          "msg": "Input should be 'newest', 'oldest' or 'alphabetical'"}])
                return 200, {"model_endpoints": [gw.render(r) for r in records]}
        elif path.startswith(prefix + "/"):
            name = unquote(path[len(prefix) + 1:])
            if method == "GET":
                record = gw.find(user, name)
                if record is None:
                    raise ApiError(404, "Model Endpoint %s  was not found." % name)
                return 200, gw.render(record)
            if method == "PUT":
                return 200, gw.update(user, name, raw)
            if method == "DELETE":
                return 200, gw.delete(user, name)
        elif path == "/v1/llm/completions-sync" and method == "POST":
            if not query.get("model_endpoint_name"):
                raise ApiError(422, [{"type": "missing", "loc": ["query", "model_endpoint_name"],
                                      "msg": "Field required"}])
            return 200, gw.completion(user, query["model_endpoint_name"], raw)
        raise ApiError(404 if method in ("GET", "POST", "PUT", "DELETE") else 405, "Not Found")

    @staticmethod
    def _admin(gw, method, path, raw):
        if path == "/_standin/faults":
            if method == "POST":
                try:
                    fault = json.loads(raw or b"{}")
                except ValueError:
                    return 400, {"detail": "fault must be a JSON object"}
                if not isinstance(fault, dict) or not any(
                        fault.get(k) is not None for k in ("status", "latency_seconds", "hang_seconds", "fail_builds")):
                    return 400, {"detail": "give status, latency_seconds, hang_seconds or fail_builds"}
                if fault.get("fail_builds") is not None:
                    fault.setdefault("count", int(fault["fail_builds"]))
                    fault["fail_builds"] = True
                fault["count"] = int(fault.get("count", 1))
                with gw.lock:
                    gw.faults.append(fault)
                return 200, {"faults": gw.faults}
            if method == "DELETE":
                with gw.lock:
                    gw.faults = []
                return 200, {"faults": []}
            if method == "GET":
                return 200, {"faults": gw.faults}
        if path == "/_standin/requests":
            if method == "GET":
                with gw.lock:
                    return 200, {"requests": list(gw.requests)}
            if method == "DELETE":
                with gw.lock:
                    gw.requests = []
                return 200, {"requests": []}
        return 404, {"detail": "Not Found"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--kubeconfig", help="without it no Deployments are made (self-tests only)")
    parser.add_argument("--namespace", default="llm-engine")
    parser.add_argument("--prometheus-address", help="like infra.prometheus_server_address: enables min_workers 0")
    parser.add_argument("--build-delay", type=float, default=0.3,
                        help="seconds spent in UPDATE_PENDING and in UPDATE_IN_PROGRESS")
    args = parser.parse_args(argv)
    builder = KubeBuilder(args.kubeconfig, args.namespace) if args.kubeconfig else MemoryBuilder()
    builder.ensure_namespace()
    gateway = Gateway(builder, scale_from_zero=bool(args.prometheus_address), build_delay=args.build_delay)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    server.gateway = gateway
    log("listening on http://%s:%d (namespace %s, %s)" % (
        args.host, server.server_address[1], args.namespace,
        "Deployments via %s" % args.kubeconfig if args.kubeconfig else "no cluster"))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
