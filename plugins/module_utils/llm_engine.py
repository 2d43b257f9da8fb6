# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE)
"""LLM Engine (Scale's ``model_engine_server``) gateway: client, validation, diff and waiter.

Split by job, like kubernetes.core's module_utils:

- connection: ``llm_engine_connection_spec()`` (documented by the ``llmops.serving.llm_engine`` doc
  fragment) and ``LLMEngineClient`` (HTTP through ansible-core's ``module_utils.urls`` with retries,
  jittered backoff and a time budget);
- decisions, pure and unit-tested: ``validation_errors()`` (every rule the server enforces with a
  400, checked before any request because the server silently drops unknown fields and rejects common
  defaults), ``plan_changes()`` (desired vs current endpoint: what a PUT must carry, which fields need
  a re-create), ``readiness()`` (is an endpoint serving, failed, or still converging);
- the waiter ``wait_until()`` that polls the gateway with those decisions.

The server rules come from ``model_engine_server`` (``llm_model_endpoint_use_cases.py``,
``model_endpoint_use_cases.py``, ``common/resource_limits.py``, ``common/settings.py``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import difflib
import email.utils
import json
import os
import random
import re
import socket
import time
from decimal import Decimal, InvalidOperation
from http.client import HTTPException
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlencode

from ansible.module_utils.basic import env_fallback
from ansible.module_utils.common.text.converters import to_native, to_text
from ansible.module_utils.urls import Request
from ansible_collections.llmops.serving.plugins.module_utils.gpu import (
    LLM_ENGINE_FORWARDER_USAGE,
    LLM_ENGINE_GPU_TYPES,
    LLM_ENGINE_GPU_TYPES_REJECTED_ON_CREATE,
    LLM_ENGINE_INSTANCE_LIMITS,
)

API_PREFIX = "/v1/llm"

# --------------------------------------------------------------------------------------------------
# What the server accepts (model_engine_server, see module docstring)

FRAMEWORKS = ("vllm", "sglang", "text_generation_inference", "deepspeed", "lightllm", "tensorrt_llm")
# CreateLLMModelEndpointV1UseCase: these frameworks serve only streaming endpoints.
STREAMING_ONLY_FRAMEWORKS = ("vllm", "text_generation_inference", "lightllm", "tensorrt_llm")
ENDPOINT_TYPES = ("sync", "async", "streaming")
# LLM Engine's GpuType values and the ones refused on create: one table, in module_utils/gpu.py.
GPU_TYPES = LLM_ENGINE_GPU_TYPES
GPU_TYPES_REJECTED_ON_CREATE = LLM_ENGINE_GPU_TYPES_REJECTED_ON_CREATE
QUANTIZATIONS = ("bitsandbytes", "awq")
SUPPORTED_QUANTIZATIONS = {
    "vllm": ("awq",),
    "text_generation_inference": ("bitsandbytes",),
    "sglang": (),
    "deepspeed": (),
    "lightllm": (),
    "tensorrt_llm": (),
}
HARDWARE_FIELDS = ("gpus", "gpu_type", "cpus", "memory", "storage", "nodes_per_worker")
REQUIRED_LABELS = ("team", "product")
RESTRICTED_LABELS = ("user_id", "endpoint_name")
RESERVED_METADATA_KEYS = ("_llm", "_CONVERTED_FROM_ARTIFACT_LIKE")
LLM_METADATA_KEY = "_llm"
ENGINE_ARGS_METADATA_KEY = "vllm_additional_args"
# MAX_ENDPOINT_SIZE, pinned upstream model_engine_server/common/resource_limits.py:21 (250), checked in
# domain/use_cases/model_endpoint_use_cases.py:126.
MAX_WORKERS = 250
# validate_checkpoint_path_uri, domain/use_cases/llm_model_endpoint_use_cases.py:563-572 (plus any
# *.blob.core.windows.net URL).
CHECKPOINT_PREFIXES = ("s3://", "azure://", "gs://")
CHAT_TEMPLATE_MAX_LENGTH = 10000
# Instance limits per GPU type (cpus, memory, storage) and what the HTTP forwarder sidecar takes
# from them (common/resource_limits.py); the user's request plus the forwarder must fit.
INSTANCE_LIMITS = LLM_ENGINE_INSTANCE_LIMITS
FORWARDER_USAGE = LLM_ENGINE_FORWARDER_USAGE

# vLLM engine arguments the server accepts (common/dtos/llms/vllm.py VLLMEndpointAdditionalArgs).
# Any other name would be dropped silently by the server, so the module rejects it.
VLLM_ENGINE_ARGS = {
    "max_model_len": "int",
    "max_num_seqs": "int",
    "max_num_batched_tokens": "int",
    "enforce_eager": "bool",
    "trust_remote_code": "bool",
    "pipeline_parallel_size": "int",
    "tensor_parallel_size": "int",
    "quantization": "str",
    "disable_log_requests": "bool",
    "chat_template": "str",
    "tool_call_parser": "str",
    "enable_auto_tool_choice": "bool",
    "load_format": "str",
    "config_format": "str",
    "tokenizer_mode": "str",
    "limit_mm_per_prompt": "str",
    "tokenizer": "str",
    "dtype": "str",
    "seed": "int",
    "revision": "str",
    "code_revision": "str",
    "rope_scaling": "dict",
    "tokenizer_revision": "str",
    "quantization_param_path": "str",
    "max_seq_len_to_capture": "int",
    "disable_sliding_window": "bool",
    "skip_tokenizer_init": "bool",
    "served_model_name": "str",
    "override_neuron_config": "dict",
    "mm_processor_kwargs": "dict",
    "block_size": "int",
    "gpu_memory_utilization": "float",
    "swap_space": "float",
    "cache_dtype": "str",
    "num_gpu_blocks_override": "int",
    "enable_prefix_caching": "bool",
    "max_gpu_memory_utilization": "float",
    "attention_backend": "str",
}

# Statuses (domain/entities ModelEndpointStatus).
READY = "READY"
UPDATE_PENDING = "UPDATE_PENDING"
UPDATE_IN_PROGRESS = "UPDATE_IN_PROGRESS"
UPDATE_FAILED = "UPDATE_FAILED"
DELETE_IN_PROGRESS = "DELETE_IN_PROGRESS"

# Fields a PUT cannot change: the update use case keeps the record's framework and endpoint type and
# the infra state's nodes_per_worker whatever the request says.
NOT_UPDATABLE = ("inference_framework", "endpoint_type", "nodes_per_worker")

# Top-level fields of the endpoint object vs fields under spec.
TOP_LEVEL_FIELDS = ("model_name", "inference_framework", "inference_framework_image_tag", "num_shards",
                    "quantize", "checkpoint_path")
DEPLOYMENT_FIELDS = ("min_workers", "max_workers", "per_worker")

RETRYABLE_STATUSES = (429, 500, 502, 503, 504)

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_K8S_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_QUANTITY = re.compile(r"^([+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_SUFFIX = {
    None: Decimal(1), "m": Decimal("0.001"),
    "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9, "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15, "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
}


# --------------------------------------------------------------------------------------------------
# Connection options

def llm_engine_connection_spec():
    """Argument spec of the connection options (documented in doc_fragments/llm_engine.py)."""
    return dict(
        url=dict(type="str", required=True, fallback=(env_fallback, ["LLM_ENGINE_URL"])),
        user_id=dict(type="str", required=True, no_log=True,
                     fallback=(env_fallback, ["LLM_ENGINE_USER_ID"])),
        validate_certs=dict(type="bool", default=True),
        ca_path=dict(type="path"),
        timeout=dict(type="float", default=30.0),
        retries=dict(type="int", default=5),
        retry_budget=dict(type="float", default=120.0),
    )


def client_from_module(module):
    """An LLMEngineClient from a module's connection parameters (fails the module on bad input)."""
    params = module.params
    errors = connection_errors(params)
    if errors:
        module.fail_json(msg="; ".join(errors))
    return LLMEngineClient(
        params["url"], params["user_id"], validate_certs=params["validate_certs"],
        ca_path=params["ca_path"], timeout=params["timeout"], retries=params["retries"],
        retry_budget=params["retry_budget"])


def connection_errors(params):
    """Problems with the connection options, each naming the option and the fix."""
    errors = []
    url = params.get("url") or ""
    if not re.match(r"^https?://[^/\s]+", url):
        errors.append("url %r is not an http(s) URL of the LLM Engine gateway: set it like "
                      "http://model-engine.llm-engine.svc or https://llm.example.internal" % url)
    if not (params.get("user_id") or "").strip():
        errors.append("user_id is empty: set it (or LLM_ENGINE_USER_ID) to the LLM Engine user id")
    if params.get("ca_path") and not os.path.isfile(params["ca_path"]):
        errors.append("ca_path %s is not a readable file: point it at the PEM file of the CA that "
                      "signed the gateway's certificate" % params["ca_path"])
    if params.get("timeout") is not None and params["timeout"] <= 0:
        errors.append("timeout %s must be more than 0 seconds" % params["timeout"])
    if params.get("retries") is not None and params["retries"] < 0:
        errors.append("retries %s must be 0 or more" % params["retries"])
    if params.get("retry_budget") is not None and params["retry_budget"] < 0:
        errors.append("retry_budget %s must be 0 or more seconds" % params["retry_budget"])
    return errors


# --------------------------------------------------------------------------------------------------
# HTTP client

class LLMEngineError(Exception):
    """A failed gateway call: ``status`` is the HTTP status (None for connection errors)."""

    def __init__(self, message, status=None, detail=None, method=None, path=None, attempts=1):
        super(LLMEngineError, self).__init__(message)
        self.message = message
        self.status = status
        self.detail = detail
        self.method = method
        self.path = path
        self.attempts = attempts


def is_retryable_status(status):
    """429 and 5xx are worth another try; every other 4xx means the request itself is wrong."""
    return status in RETRYABLE_STATUSES


def backoff_delay(attempt, base=1.0, cap=20.0, rand=random.random, retry_after=None):
    """Seconds to wait before retry number ``attempt`` (1-based): exponential with equal jitter.

    Each wait lies between half and all of ``min(cap, base * 2 ** (attempt - 1))``, so waits
    spread out between clients yet never shrink from one retry to the next (full jitter could retry
    a struggling gateway after 50 ms on the fifth attempt, and made the time ``retries`` covers a
    matter of luck). A server's ``Retry-After`` (seconds) is honoured as given: the caller's
    retry budget, not a cap, decides whether waiting that long is acceptable.
    """
    if retry_after is not None:
        return max(0.0, float(retry_after))
    ceiling = min(cap, base * (2 ** (attempt - 1)))
    return ceiling / 2.0 + ceiling / 2.0 * rand()


def error_detail(body):
    """The server's ``detail`` from an error body (FastAPI: str, or a list of validation errors)."""
    try:
        data = json.loads(to_text(body or b"", errors="surrogate_or_replace"))
    except ValueError:
        return to_text(body or b"", errors="surrogate_or_replace").strip()[:500] or None
    if isinstance(data, dict) and "detail" in data:
        detail = data["detail"]
        if isinstance(detail, list):
            parts = []
            for item in detail:
                if isinstance(item, dict):
                    loc = ".".join(str(x) for x in item.get("loc", []) if x != "body")
                    parts.append(("%s: %s" % (loc, item.get("msg"))) if loc else str(item.get("msg")))
                else:
                    parts.append(str(item))
            return "; ".join(parts)
        return detail if isinstance(detail, str) else json.dumps(detail)
    return json.dumps(data)[:500]


def _retry_after(headers, now=time.time):
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    value = headers.get("Retry-After") if headers is not None else None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now())


class LLMEngineClient(object):
    """Calls the gateway's ``/v1/llm`` API as one user id (HTTP Basic, empty password).

    Connection errors, timeouts, 429 and 5xx are retried with jittered exponential backoff until
    ``retries`` extra attempts or ``retry_budget`` seconds are used up; other 4xx fail at once with
    the server's ``detail``. ``log`` records each call (method, path, status) for the module result.
    """

    def __init__(self, url, user_id, validate_certs=True, ca_path=None, timeout=30.0, retries=5,
                 retry_budget=120.0, backoff_base=1.0, backoff_cap=20.0, sleep=time.sleep,
                 clock=time.monotonic, rand=random.random):
        self.base_url = url.rstrip("/")
        self.user_id = user_id
        token = base64.b64encode(("%s:" % user_id).encode("utf-8")).decode("ascii")
        self._headers = {"Authorization": "Basic " + token, "Accept": "application/json"}
        self.timeout = timeout
        self.retries = retries
        self.retry_budget = retry_budget
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._sleep = sleep
        self._clock = clock
        self._rand = rand
        self._request = Request(validate_certs=validate_certs, ca_path=ca_path, timeout=timeout,
                                use_netrc=False, follow_redirects="safe")
        self.log = []

    # -- transport ---------------------------------------------------------------------------------
    def request(self, method, path, body=None, query=None):
        """Send one API call with retries; return (status, parsed JSON or None)."""
        url = self.base_url + path
        if query:
            url += "?" + urlencode(query)
        data = None
        headers = dict(self._headers)
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            retry_after = None
            try:
                response = self._request.open(method, url, data=data, headers=headers,
                                              timeout=self.timeout)
                status = response.getcode()
                raw = response.read()
                self.log.append({"method": method, "path": path, "status": status})
                return status, (json.loads(to_text(raw)) if raw else None)
            except HTTPError as exc:
                raw = exc.read() if hasattr(exc, "read") else b""
                detail = error_detail(raw)
                self.log.append({"method": method, "path": path, "status": exc.code})
                if not is_retryable_status(exc.code):
                    raise LLMEngineError(
                        "%s %s answered %s: %s" % (method, path, exc.code, detail or exc.reason),
                        status=exc.code, detail=detail, method=method, path=path,
                        attempts=attempt) from None
                failure = LLMEngineError(
                    "%s %s answered %s: %s" % (method, path, exc.code, detail or exc.reason),
                    status=exc.code, detail=detail, method=method, path=path, attempts=attempt)
                retry_after = _retry_after(exc.headers)
            except (URLError, socket.timeout, HTTPException, ConnectionError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                self.log.append({"method": method, "path": path, "status": None})
                if _is_certificate_error(reason):
                    raise LLMEngineError(
                        "TLS certificate of %s could not be verified (%s): set ca_path to the CA that "
                        "signed it, or validate_certs: false for a test gateway"
                        % (self.base_url, to_native(reason)), method=method, path=path) from None
                failure = LLMEngineError(
                    "%s %s%s failed: %s" % (method, self.base_url, path, _describe_connection_error(reason)),
                    method=method, path=path, attempts=attempt)
            elapsed = self._clock() - started
            delay = backoff_delay(attempt, self.backoff_base, self.backoff_cap, self._rand, retry_after)
            if attempt > self.retries or elapsed + delay > self.retry_budget:
                failure.message = self._gave_up(failure, method, url, attempt, elapsed, delay, retry_after)
                failure.args = (failure.message,)
                failure.attempts = attempt
                raise failure
            self._sleep(delay)

    def _gave_up(self, failure, method, url, attempt, elapsed, delay, retry_after):
        """The final message of a request whose retries ran out: what, how often, what to raise."""
        last = "HTTP %s" % failure.status if failure.status is not None else "no HTTP answer"
        if attempt > self.retries:
            why = "all %d retries used: raise retries (now %d)" % (self.retries, self.retries)
            if self.retries:
                why += " or retry_budget (now %gs) if the gateway needs longer to recover" % self.retry_budget
        elif retry_after is not None:
            why = ("the gateway asked to wait %gs (Retry-After), past the retry_budget of %gs: raise "
                   "retry_budget" % (delay, self.retry_budget))
        else:
            why = ("the next wait of %.1fs would pass the retry_budget of %gs: raise retry_budget"
                   % (delay, self.retry_budget))
        return "%s (gave up after %d attempt(s) in %.1fs calling %s %s, last: %s; %s)" % (
            failure.message, attempt, elapsed, method, url, last, why)

    # -- API ---------------------------------------------------------------------------------------
    def get_endpoint(self, name, own_only=True):
        """The endpoint named ``name`` or None when the gateway answers 404.

        The gateway also answers with other users' public endpoints of that name; with ``own_only``
        those count as missing, since this user can neither update nor delete them.
        """
        try:
            endpoint = self.request("GET", "%s/model-endpoints/%s" % (API_PREFIX, quote(name, safe="")))[1]
        except LLMEngineError as exc:
            if exc.status == 404:
                return None
            raise
        owner = ((endpoint or {}).get("spec") or {}).get("created_by")
        if own_only and owner is not None and owner != self.user_id:
            return None
        return endpoint

    def list_endpoints(self, name=None, order_by=None):
        query = {}
        if name:
            query["name"] = name
        if order_by:
            query["order_by"] = order_by
        data = self.request("GET", "%s/model-endpoints" % API_PREFIX, query=query or None)[1] or {}
        return data.get("model_endpoints", [])

    def create_endpoint(self, body):
        return self.request("POST", "%s/model-endpoints" % API_PREFIX, body=body)[1]

    def update_endpoint(self, name, body):
        return self.request("PUT", "%s/model-endpoints/%s" % (API_PREFIX, quote(name, safe="")),
                            body=body)[1]

    def delete_endpoint(self, name):
        return self.request("DELETE", "%s/model-endpoints/%s" % (API_PREFIX, quote(name, safe="")))[1]

    def completion_sync(self, name, prompt, max_new_tokens=16, temperature=0.0):
        return self.request("POST", "%s/completions-sync" % API_PREFIX,
                            body={"prompt": prompt, "max_new_tokens": max_new_tokens,
                                  "temperature": temperature},
                            query={"model_endpoint_name": name})[1]


def _is_certificate_error(reason):
    text = to_native(reason)
    return "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text


def _describe_connection_error(reason):
    if isinstance(reason, socket.timeout) or "timed out" in to_native(reason):
        return "no answer within the timeout (%s)" % to_native(reason)
    if isinstance(reason, ConnectionRefusedError) or "Connection refused" in to_native(reason):
        return "connection refused: is the gateway running and is url right?"
    return to_native(reason)


# --------------------------------------------------------------------------------------------------
# Quantities and value normalisation

def parse_quantity(value):
    """A Kubernetes quantity (``"4"``, ``"500m"``, ``"16Gi"``, ``8``) as a Decimal; None if invalid."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    match = _QUANTITY.match(str(value).strip())
    if not match:
        return None
    try:
        return Decimal(match.group(1)) * _SUFFIX[match.group(2)]
    except InvalidOperation:
        return None


def same_value(field, desired, current):
    """Whether a desired value equals the server's value for ``field`` (quantities by amount)."""
    if field in ("cpus", "memory", "storage"):
        left, right = parse_quantity(desired), parse_quantity(current)
        if left is not None and right is not None:
            return left == right
    if isinstance(desired, bool) or isinstance(current, bool):
        return desired is current or desired == current
    if isinstance(desired, (int, float)) and isinstance(current, (int, float)):
        return float(desired) == float(current)
    return desired == current


def default_endpoint_type(framework):
    """The endpoint type to use when none is given: the server's default ``sync`` fails for these."""
    return "streaming" if framework in STREAMING_ONLY_FRAMEWORKS else "sync"


def needed_workers(min_workers, max_workers):
    """Workers that must be available before an endpoint counts as serving.

    ``min(max(min_workers, 1), max_workers)``: the endpoint's floor, but at least one worker, since
    READY alone only means the Kubernetes objects exist.
    """
    return min(max(min_workers or 0, 1), max_workers if max_workers is not None else 1)


# --------------------------------------------------------------------------------------------------
# Desired and current state

ENDPOINT_FIELDS = ("model_name", "inference_framework", "inference_framework_image_tag",
                   "checkpoint_path", "endpoint_type", "gpus", "gpu_type", "cpus", "memory", "storage",
                   "nodes_per_worker", "num_shards", "min_workers", "max_workers", "per_worker",
                   "labels", "metadata", "quantize", "public_inference", "engine_args")


def desired_state(params, current=None):
    """The endpoint fields a module run manages: unset options are None (left as they are).

    Fills the defaults the issue asks for: ``endpoint_type`` follows the framework and ``num_shards``
    follows ``gpus``. On update, values the user did not set stay unmanaged.
    """
    desired = dict((key, params.get(key)) for key in ENDPOINT_FIELDS)
    if desired.get("engine_args"):
        desired["engine_args"] = dict((k, v) for k, v in desired["engine_args"].items() if v is not None)
    if not desired.get("engine_args"):
        desired["engine_args"] = None
    framework = desired.get("inference_framework") or (current or {}).get("inference_framework")
    if desired.get("endpoint_type") is None and current is None and framework:
        desired["endpoint_type"] = default_endpoint_type(framework)
    if desired.get("num_shards") is None and desired.get("gpus") is not None:
        desired["num_shards"] = desired["gpus"]
    for key in ("cpus", "memory", "storage"):
        if desired.get(key) is not None:
            desired[key] = str(desired[key])
    return desired


def current_state(endpoint):
    """Flatten a GET answer into the same keys as ``desired_state()`` (None when not reported)."""
    if not endpoint:
        return None
    spec = endpoint.get("spec") or {}
    deployment = spec.get("deployment_state") or {}
    resources = spec.get("resource_state") or {}
    metadata = spec.get("metadata") or {}
    state = dict((key, endpoint.get(key)) for key in TOP_LEVEL_FIELDS)
    state["name"] = endpoint.get("name")
    state["endpoint_type"] = spec.get("endpoint_type")
    for key in DEPLOYMENT_FIELDS:
        state[key] = deployment.get(key)
    for key in HARDWARE_FIELDS:
        state[key] = resources.get(key)
    state["labels"] = spec.get("labels")
    state["metadata"] = dict((k, v) for k, v in metadata.items() if k not in RESERVED_METADATA_KEYS)
    state["public_inference"] = spec.get("public_inference")
    llm = metadata.get(LLM_METADATA_KEY) or {}
    # Newer servers keep explicit vLLM engine args in the endpoint's LLM metadata; older ones do not
    # report them at all (None: unknown, so not compared).
    state["engine_args"] = llm.get(ENGINE_ARGS_METADATA_KEY) if ENGINE_ARGS_METADATA_KEY in llm else None
    return state


# --------------------------------------------------------------------------------------------------
# Validation

def validation_errors(desired, current=None, name=None, scale_from_zero=False):
    """Every server rule the desired endpoint breaks, each naming the field and the fix.

    ``current`` is the flattened existing endpoint (None when creating). On update the rules apply to
    the endpoint as it will be after the PUT (desired values over current ones), as the server does.
    ``scale_from_zero`` says the gateway has a Prometheus address (only then may sync and streaming
    endpoints have ``min_workers: 0``).
    """
    errors = []
    creating = current is None
    merged = dict(current or {})
    for key, value in desired.items():
        if value is not None:
            merged[key] = value
    framework = merged.get("inference_framework")

    if name is not None and (len(name) > 63 or not _DNS_LABEL.match(name)):
        errors.append("name %r: use 1-63 lowercase letters, digits and '-', starting and ending with a "
                      "letter or digit (LLM Engine puts the name into Kubernetes object names and "
                      "labels)" % name)

    if creating:
        for key, hint in (("model_name", "the model's name, for example llama-3-8b-instruct"),
                          ("inference_framework", "one of %s" % ", ".join(FRAMEWORKS)),
                          ("inference_framework_image_tag", "a pinned image tag of the framework"),
                          ("labels", "a dict with at least team and product"),
                          ("min_workers", "the minimum number of workers"),
                          ("max_workers", "the maximum number of workers"),
                          ("per_worker", "the concurrent requests per worker before scaling out")):
            if desired.get(key) is None:
                errors.append("%s is required to create endpoint %s: set it to %s" % (key, name or "", hint))

    if framework is not None and framework not in FRAMEWORKS:
        errors.append("inference_framework %r is not one LLM Engine knows: use one of %s"
                      % (framework, ", ".join(FRAMEWORKS)))

    tag = desired.get("inference_framework_image_tag")
    if tag is not None:
        if not str(tag).strip():
            errors.append("inference_framework_image_tag is empty: pin the image tag of %s"
                          % (framework or "the framework"))
        elif str(tag).strip() == "latest":
            errors.append("inference_framework_image_tag 'latest' is resolved by the server from a "
                          "ConfigMap at create time, so the endpoint's tag would drift from the "
                          "playbook and never compare equal: pin a real tag (for example 0.6.3.post1)")

    endpoint_type = merged.get("endpoint_type")
    if endpoint_type is not None and endpoint_type not in ENDPOINT_TYPES:
        errors.append("endpoint_type %r: use one of %s" % (endpoint_type, ", ".join(ENDPOINT_TYPES)))
    elif (creating and framework in STREAMING_ONLY_FRAMEWORKS and endpoint_type is not None
          and endpoint_type != "streaming"):
        errors.append("endpoint_type %r: LLM Engine creates only streaming endpoints for %s; set "
                      "endpoint_type: streaming (or leave it unset)" % (endpoint_type, framework))

    errors.extend(_hardware_errors(desired, merged, creating, framework))
    errors.extend(_worker_errors(merged, endpoint_type, scale_from_zero))
    errors.extend(_label_errors(desired.get("labels")))

    metadata = desired.get("metadata")
    if metadata is not None:
        for key in RESERVED_METADATA_KEYS:
            if key in metadata:
                errors.append("metadata key %r is reserved by LLM Engine: rename or drop it" % key)

    quantize = merged.get("quantize")
    if quantize is not None and framework in SUPPORTED_QUANTIZATIONS:
        allowed = SUPPORTED_QUANTIZATIONS[framework]
        if quantize not in allowed:
            errors.append("quantize %r is not supported for %s: %s" % (
                quantize, framework,
                ("use %s" % " or ".join(allowed)) if allowed else "drop quantize"))

    checkpoint = desired.get("checkpoint_path")
    if checkpoint is not None:
        if not (checkpoint.startswith(CHECKPOINT_PREFIXES) or "blob.core.windows.net" in checkpoint):
            errors.append("checkpoint_path %r: LLM Engine loads weights only from s3:// (any "
                          "S3-compatible store), gs:// or azure:// paths; stage the model to a bucket and "
                          "give its s3:// prefix" % checkpoint)
        elif checkpoint.endswith(".tar"):
            errors.append("checkpoint_path %r: tar files are not supported; point at the directory "
                          "holding the *.safetensors files" % checkpoint)

    engine_args = desired.get("engine_args")
    if engine_args:
        if framework is not None and framework != "vllm":
            errors.append("engine_args are vLLM engine arguments but inference_framework is %s: drop "
                          "engine_args or use vllm" % framework)
        errors.extend(engine_args_errors(engine_args))

    if desired.get("public_inference") is not None and not isinstance(desired["public_inference"], bool):
        errors.append("public_inference must be true or false")
    return errors


def _hardware_errors(desired, merged, creating, framework):
    errors = []
    given = [key for key in HARDWARE_FIELDS if desired.get(key) is not None]
    if creating and given and len(given) != len(HARDWARE_FIELDS):
        missing = [key for key in HARDWARE_FIELDS if key not in given]
        errors.append("hardware is all or nothing: %s given but %s missing; set all of %s, or none "
                      "to let LLM Engine pick hardware for the model"
                      % (", ".join(given), ", ".join(missing), ", ".join(HARDWARE_FIELDS)))
    if creating and not given and desired.get("num_shards") is not None:
        errors.append("num_shards %s is ignored without explicit hardware (the server sets it to the "
                      "GPU count it picks): set gpus, gpu_type, cpus, memory, storage and "
                      "nodes_per_worker, or drop num_shards" % desired["num_shards"])

    gpus = merged.get("gpus")
    if gpus is not None and (isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1):
        errors.append("gpus %r: an LLM endpoint needs at least 1 GPU per worker" % (gpus,))
        gpus = None
    gpu_type = desired.get("gpu_type")
    if gpu_type is not None:
        if gpu_type not in GPU_TYPES:
            errors.append("gpu_type %r is not an LLM Engine GPU type: use one of %s (the node label "
                          "k8s.amazonaws.com/accelerator must carry the same value)"
                          % (gpu_type, ", ".join(GPU_TYPES)))
        elif creating and gpu_type in GPU_TYPES_REJECTED_ON_CREATE:
            errors.append("gpu_type %s is rejected on create by LLM Engine: use %s"
                          % (gpu_type, GPU_TYPES_REJECTED_ON_CREATE[gpu_type]))
    effective_type = merged.get("gpu_type")
    limits = INSTANCE_LIMITS.get(effective_type)
    for index, key in enumerate(("cpus", "memory", "storage")):
        value = desired.get(key)
        if value is None:
            continue
        amount = parse_quantity(value)
        if amount is None:
            errors.append("%s %r is not a Kubernetes quantity: write it like %s"
                          % (key, value, ("4 or 3500m", "16Gi", "100Gi")[index]))
        elif amount <= 0:
            errors.append("%s %r must be more than 0" % (key, value))
        elif limits:
            limit = parse_quantity(limits[index])
            usable = limit - parse_quantity(FORWARDER_USAGE[index])
            if amount > usable:
                errors.append("%s %s is more than LLM Engine allows per worker on %s (%s, after %s for "
                              "its forwarder sidecar): request at most that" % (
                                  key, value, effective_type, _format_quantity(usable, index),
                                  FORWARDER_USAGE[index]))
    nodes = merged.get("nodes_per_worker")
    if nodes is not None:
        if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
            errors.append("nodes_per_worker %r must be 1 or more" % (nodes,))
        elif nodes > 1 and framework is not None and framework != "vllm":
            errors.append("nodes_per_worker %s: multi-node workers are only supported for vllm; set "
                          "nodes_per_worker: 1" % nodes)
    shards = merged.get("num_shards")
    if shards is not None and gpus is not None and (desired.get("num_shards") is not None
                                                    or desired.get("gpus") is not None):
        if shards != gpus:
            errors.append("num_shards %s must equal gpus %s (one shard per GPU): drop num_shards to "
                          "default it to gpus" % (shards, gpus))
    if framework == "deepspeed" and shards is not None and shards <= 1:
        errors.append("num_shards %s: deepspeed needs more than 1 GPU; set gpus and num_shards to 2 "
                      "or more" % shards)
    return errors


def _format_quantity(amount, index):
    if index == 0:
        return str(amount.normalize())
    gib = amount / _SUFFIX["Gi"]
    return "%sGi" % (gib.quantize(Decimal("0.01")).normalize())


def _worker_errors(merged, endpoint_type, scale_from_zero):
    errors = []
    values = {}
    for key in DEPLOYMENT_FIELDS:
        value = merged.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            errors.append("%s %r must be a whole number" % (key, value))
            value = None
        values[key] = value
    low, high, per = values["min_workers"], values["max_workers"], values["per_worker"]
    if low is not None and low < 0:
        errors.append("min_workers %s must be 0 or more" % low)
    elif low == 0 and endpoint_type in ("sync", "streaming") and not scale_from_zero:
        errors.append("min_workers 0 on a %s endpoint needs a gateway that can scale from zero (its "
                      "Prometheus address is set): set min_workers to 1 or more, or set "
                      "scale_from_zero: true when the gateway has prometheus_server_address"
                      % endpoint_type)
    if high is not None:
        if high < 1:
            errors.append("max_workers %s must be 1 or more" % high)
        elif high > MAX_WORKERS:
            errors.append("max_workers %s is above LLM Engine's limit of %d per endpoint: lower it"
                          % (high, MAX_WORKERS))
        if low is not None and low > high:
            errors.append("min_workers %s is more than max_workers %s: raise max_workers or lower "
                          "min_workers" % (low, high))
    if per is not None and per < 1:
        errors.append("per_worker %s must be 1 or more (concurrent requests per worker)" % per)
    return errors


def _label_errors(labels):
    errors = []
    if labels is None:
        return errors
    if not isinstance(labels, dict):
        return ["labels must be a dict of strings, with at least team and product"]
    for key in REQUIRED_LABELS:
        if key not in labels:
            errors.append("labels need %r (LLM Engine requires %s): add %s: <value>"
                          % (key, " and ".join(REQUIRED_LABELS), key))
    for key in RESTRICTED_LABELS:
        if key in labels:
            errors.append("labels must not set %r: LLM Engine sets it itself; drop it" % key)
    for key, value in labels.items():
        if not isinstance(value, str):
            errors.append("labels.%s %r must be a string (quote it)" % (key, value))
        elif len(value) > 63 or not _K8S_LABEL_VALUE.match(value):
            errors.append("labels.%s %r is not a valid Kubernetes label value: use at most 63 letters, "
                          "digits, '-', '_' or '.', starting and ending with a letter or digit"
                          % (key, value))
    return errors


def engine_args_errors(engine_args):
    """Unknown vLLM engine argument names and values of the wrong type (names the fix)."""
    errors = []
    for key, value in sorted(engine_args.items()):
        if key not in VLLM_ENGINE_ARGS:
            close = difflib.get_close_matches(key, list(VLLM_ENGINE_ARGS), n=1)
            errors.append("engine_args.%s is not a vLLM engine argument LLM Engine accepts (the server "
                          "would drop it silently)%s" % (
                              key, ("; did you mean %s?" % close[0]) if close else
                              "; supported: %s" % ", ".join(sorted(VLLM_ENGINE_ARGS))))
            continue
        if value is None:
            continue
        kind = VLLM_ENGINE_ARGS[key]
        ok = {
            "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
            "bool": lambda v: isinstance(v, bool),
            "str": lambda v: isinstance(v, str),
            "dict": lambda v: isinstance(v, dict),
        }[kind](value)
        if not ok:
            errors.append("engine_args.%s %r must be of type %s" % (key, value, kind))
    util = engine_args.get("gpu_memory_utilization")
    if isinstance(util, (int, float)) and not isinstance(util, bool) and not 0 < util <= 1:
        errors.append("engine_args.gpu_memory_utilization %s must be in (0, 1], a fraction of GPU "
                      "memory" % util)
    return errors


# --------------------------------------------------------------------------------------------------
# Diff

def plan_changes(desired, current, name=None):
    """What to do to get from ``current`` (flattened, or None) to ``desired``.

    Returns a dict:
    ``action``: ``create`` | ``update`` | ``recreate_needed`` | ``none``;
    ``changes``: {field: {"before": x, "after": y}} for every managed field that differs;
    ``not_updatable``: fields among the changes a PUT cannot apply;
    ``body``: the PUT body (only what differs) or the POST body;
    ``engine_args_unknown``: True when the server does not report engine args (not compared).
    """
    if current is None:
        return {"action": "create", "changes": {}, "not_updatable": [],
                "body": create_body(desired, name), "engine_args_unknown": False}
    changes = {}
    unknown = False
    for key in ENDPOINT_FIELDS:
        want = desired.get(key)
        if want is None:
            continue
        have = current.get(key)
        if key == "metadata":
            differing = dict((k, v) for k, v in want.items() if not same_value(k, v, (have or {}).get(k)))
            if differing:
                changes[key] = {"before": dict((k, (have or {}).get(k)) for k in want), "after": want}
        elif key == "engine_args":
            if have is None:
                unknown = True
                continue
            if any(not same_value(k, v, have.get(k)) for k, v in want.items()):
                changes[key] = {"before": dict((k, have.get(k)) for k in want), "after": want}
        elif key == "labels":
            if dict(want) != dict(have or {}):
                changes[key] = {"before": have, "after": want}
        elif not same_value(key, want, have):
            changes[key] = {"before": have, "after": want}
    not_updatable = sorted(key for key in changes if key in NOT_UPDATABLE)
    if not changes:
        action = "none"
    elif not_updatable:
        action = "recreate_needed"
    else:
        action = "update"
    body = update_body(changes, current) if action == "update" else {}
    return {"action": action, "changes": changes, "not_updatable": not_updatable, "body": body,
            "engine_args_unknown": unknown}


def create_body(desired, name=None):
    """The POST body: the name, every managed field that has a value, engine args at the top level."""
    body = {"name": name} if name is not None else {}
    for key in ENDPOINT_FIELDS:
        value = desired.get(key)
        if value is None or key == "engine_args":
            continue
        body[key] = value
    body.setdefault("metadata", {})
    for key, value in (desired.get("engine_args") or {}).items():
        if value is not None:
            body[key] = value
    return body


def update_body(changes, current):
    """The PUT body carrying only the differing fields.

    Always names the endpoint's framework (the server picks the request type by it). Engine-arg
    changes are applied only when the server rebuilds the endpoint's bundle, and the rebuilt bundle
    holds only the args of this request: send them all and ask for the rebuild.
    """
    body = {"inference_framework": current.get("inference_framework")}
    for key, change in changes.items():
        if key == "engine_args":
            merged = dict(current.get("engine_args") or {})
            merged.update(change["after"])
            body.update(merged)
            body["force_bundle_recreation"] = True
        else:
            body[key] = change["after"]
    if body["inference_framework"] is None:
        del body["inference_framework"]
    return body


def managed_view(state, desired):
    """The fields of ``state`` the user manages (for diff output)."""
    if state is None:
        return {}
    view = {}
    for key in ENDPOINT_FIELDS:
        if desired.get(key) is None:
            continue
        value = state.get(key)
        if key in ("metadata", "engine_args") and isinstance(value, dict):
            value = dict((k, value.get(k)) for k in desired[key])
        view[key] = value
    return view


# --------------------------------------------------------------------------------------------------
# Readiness and waiting

def readiness(endpoint, needed):
    """Classify an endpoint: ("ready" | "failed" | "waiting", human-readable state).

    Serving means status READY **and** at least ``needed`` available workers: READY alone only says
    the Kubernetes objects exist.
    """
    if endpoint is None:
        return "waiting", "not found"
    spec = endpoint.get("spec") or {}
    status = endpoint.get("status") or spec.get("status")
    deployment = spec.get("deployment_state") or {}
    available = deployment.get("available_workers") or 0
    unavailable = deployment.get("unavailable_workers") or 0
    reason = spec.get("status_reason")
    text = "status %s, %s/%s worker(s) available" % (status, available, needed)
    if unavailable:
        text += ", %s unavailable" % unavailable
    if reason:
        text += "; reason: %s" % reason
    if status == UPDATE_FAILED:
        return "failed", text
    if status == READY and available >= needed:
        return "ready", text
    return "waiting", text


def wait_until(fetch, decide, timeout, interval=2.0, sleep=time.sleep, clock=time.monotonic):
    """Poll ``fetch()`` until ``decide(value)`` returns ("ready", _) or ("failed", _), or time runs out.

    Returns (outcome, value, text, waited) with outcome "ready", "failed" or "timeout".
    """
    started = clock()
    while True:
        value = fetch()
        outcome, text = decide(value)
        waited = clock() - started
        if outcome in ("ready", "failed"):
            return outcome, value, text, waited
        if waited >= timeout:
            return "timeout", value, text, waited
        sleep(min(interval, max(0.0, timeout - waited)))


# --------------------------------------------------------------------------------------------------
# Module runners

SETTLED = (READY, UPDATE_FAILED)


def endpoint_spec():
    """Argument spec of llm_endpoint's own options (documented in the module)."""
    # "token" in a name is about tokenizers here, not credentials.
    engine_options = dict((key, dict(type=kind, no_log=False) if "token" in key else dict(type=kind))
                          for key, kind in VLLM_ENGINE_ARGS.items())
    return dict(
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        model_name=dict(type="str"),
        inference_framework=dict(type="str", choices=list(FRAMEWORKS)),
        inference_framework_image_tag=dict(type="str"),
        checkpoint_path=dict(type="str"),
        endpoint_type=dict(type="str", choices=list(ENDPOINT_TYPES)),
        gpus=dict(type="int"),
        gpu_type=dict(type="str", choices=list(GPU_TYPES)),
        cpus=dict(type="raw"),
        memory=dict(type="raw"),
        storage=dict(type="raw"),
        nodes_per_worker=dict(type="int"),
        num_shards=dict(type="int"),
        min_workers=dict(type="int"),
        max_workers=dict(type="int"),
        per_worker=dict(type="int"),
        labels=dict(type="dict"),
        metadata=dict(type="dict"),
        quantize=dict(type="str", choices=list(QUANTIZATIONS)),
        public_inference=dict(type="bool"),
        engine_args=dict(type="dict", options=engine_options),
        scale_from_zero=dict(type="bool", default=False),
        recreate=dict(type="bool", default=False),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=900),
        wait_for_workers=dict(type="int"),
    )


class _RunError(Exception):
    def __init__(self, msg, **extra):
        super(_RunError, self).__init__(msg)
        self.msg = msg
        self.extra = extra


def run_endpoint(module):
    """llm_endpoint: make one endpoint present (and serving) or absent."""
    params = module.params
    client = client_from_module(module)
    result = {"changed": False}
    try:
        if params["wait_timeout"] < 0:
            raise _RunError("wait_timeout %s must be 0 or more seconds" % params["wait_timeout"])
        if params["wait_for_workers"] is not None and params["wait_for_workers"] < 0:
            raise _RunError("wait_for_workers %s must be 0 or more" % params["wait_for_workers"])
        if params["state"] == "absent":
            _run_absent(module, client, result)
        else:
            _run_present(module, client, result)
    except _RunError as exc:
        result.update(exc.extra)
        result["requests"] = client.log
        module.fail_json(msg=exc.msg, **result)
    except LLMEngineError as exc:
        result["requests"] = client.log
        module.fail_json(msg="endpoint %s: %s" % (params["name"], exc.message),
                         status=exc.status, detail=exc.detail, **result)
    result["requests"] = client.log
    module.exit_json(**result)


def _run_absent(module, client, result):
    name = module.params["name"]
    endpoint = client.get_endpoint(name)
    if endpoint is None:
        result["endpoint"] = {}
        return
    result["changed"] = True
    result["endpoint"] = endpoint
    if module._diff:
        result["diff"] = {"before": {"name": name, "state": "present"}, "after": {"name": name, "state": "absent"}}
    if module.check_mode:
        return
    deadline = time.monotonic() + module.params["wait_timeout"]
    _delete(client, name, deadline)
    if module.params["wait"]:
        _wait_gone(client, name, deadline)
    result["endpoint"] = {}


def _delete(client, name, deadline):
    """DELETE, and when the server refuses with 409 (an update in progress) wait for it to settle."""
    while True:
        try:
            client.delete_endpoint(name)
            return
        except LLMEngineError as exc:
            if exc.status == 404:
                return
            if exc.status != 409:
                raise
        left = deadline - time.monotonic()
        outcome, endpoint, text, _waited = wait_until(
            lambda: client.get_endpoint(name), _settled, max(left, 0))
        if outcome == "timeout":
            raise _RunError("endpoint %s: the server refused the delete while an update is in progress "
                            "(409), and the update did not finish within wait_timeout (%s)" % (name, text))
        if endpoint is None:
            return


def _settled(endpoint):
    if endpoint is None or endpoint.get("status") in SETTLED:
        return "ready", "settled"
    return "waiting", readiness(endpoint, 1)[1]


def _wait_gone(client, name, deadline):
    outcome, endpoint, text, waited = wait_until(
        lambda: client.get_endpoint(name),
        lambda e: ("ready", "gone") if e is None else ("waiting", readiness(e, 1)[1]),
        max(deadline - time.monotonic(), 0))
    if outcome != "ready":
        raise _RunError("endpoint %s still exists %.0fs after the delete (%s): raise wait_timeout or check "
                        "the endpoint builder" % (name, waited, text), endpoint=endpoint)


def _run_present(module, client, result):
    params = module.params
    name = params["name"]
    deadline = time.monotonic() + params["wait_timeout"]
    endpoint = client.get_endpoint(name)
    if endpoint is not None and endpoint.get("status") not in SETTLED:
        # An update or delete is under way: compare against where it lands, not a half-built state.
        outcome, endpoint, text, _waited = wait_until(
            lambda: client.get_endpoint(name), _settled, params["wait_timeout"])
        if outcome == "timeout":
            raise _RunError("endpoint %s is still busy after %ss (%s): raise wait_timeout or check the "
                            "endpoint builder" % (name, params["wait_timeout"], text))
    current = current_state(endpoint)
    desired = desired_state(params, current)
    errors = validation_errors(desired, current, name=name, scale_from_zero=params["scale_from_zero"])
    if errors:
        raise _RunError("endpoint %s: %s" % (name, "; ".join(errors)), errors=errors)
    plan = plan_changes(desired, current, name)
    if plan["engine_args_unknown"]:
        module.warn("endpoint %s: the gateway does not report vLLM engine arguments, so changes to "
                    "engine_args cannot be detected; set recreate: true with a changed field to apply "
                    "them" % name)
    result["changes"] = plan["changes"]
    result["endpoint"] = endpoint or {}
    if plan["action"] == "recreate_needed" and not params["recreate"]:
        raise _RunError(
            "endpoint %s: %s cannot be changed in place (%s); LLM Engine keeps them for the endpoint's "
            "life. Set recreate: true to delete and re-create the endpoint (it stops serving meanwhile), "
            "or keep the current values" % (
                name, ", ".join(plan["not_updatable"]),
                "; ".join("%s: %r -> %r" % (k, plan["changes"][k]["before"], plan["changes"][k]["after"])
                          for k in plan["not_updatable"])),
            changes=plan["changes"])
    action = plan["action"]
    if action == "recreate_needed":
        action = "recreate"
    result["operation"] = action
    result["changed"] = action != "none"
    if module._diff:
        after = managed_view(dict(current or {}, **dict((k, v) for k, v in desired.items() if v is not None)),
                             desired)
        result["diff"] = {"before": managed_view(current, desired), "after": after}
    if action in ("create", "recreate"):
        result["request_body"] = create_body(desired, name)
    elif action == "update":
        result["request_body"] = plan["body"]
    if module.check_mode:
        return
    if action == "update":
        client.update_endpoint(name, plan["body"])
    elif action in ("create", "recreate"):
        if action == "recreate":
            _delete(client, name, deadline)
            _wait_gone(client, name, deadline)
        _create(client, name, create_body(desired, name))
    if params["wait"]:
        merged = dict(current or {})
        merged.update(dict((k, v) for k, v in desired.items() if v is not None))
        needed = params["wait_for_workers"]
        if needed is None:
            needed = needed_workers(merged.get("min_workers"), merged.get("max_workers"))
        outcome, endpoint, text, waited = wait_until(
            lambda: client.get_endpoint(name), lambda e: readiness(e, needed),
            max(deadline - time.monotonic(), 0))
        result["waited"] = round(waited, 1)
        result["endpoint"] = endpoint or {}
        if outcome == "failed":
            raise _RunError("endpoint %s failed to deploy (%s): fix the cause and run again" % (name, text),
                            changed=result["changed"])
        if outcome == "timeout":
            raise _RunError("endpoint %s is not serving after %ds (%s). It needs status READY and %d "
                            "available worker(s); a Pending reason such as an unmatched node selector "
                            "means no node carries k8s.amazonaws.com/accelerator=%s with a free GPU"
                            % (name, params["wait_timeout"], text, needed, merged.get("gpu_type") or "<gpu_type>"),
                            changed=result["changed"])
    else:
        result["endpoint"] = client.get_endpoint(name) or {}


def _create(client, name, body):
    try:
        client.create_endpoint(body)
    except LLMEngineError as exc:
        # A retried POST whose first attempt reached the server finds its own endpoint.
        if exc.status == 400 and exc.attempts > 1 and "already exists" in (exc.detail or ""):
            return
        raise


def run_endpoint_info(module):
    """llm_endpoint_info: one endpoint by name, or all of the user's endpoints."""
    client = client_from_module(module)
    name = module.params["name"]
    try:
        if name:
            endpoint = client.get_endpoint(name)
            endpoints = [endpoint] if endpoint else []
        else:
            endpoints = client.list_endpoints(order_by=module.params["order_by"])
    except LLMEngineError as exc:
        module.fail_json(msg=exc.message, status=exc.status, detail=exc.detail, requests=client.log)
    module.exit_json(changed=False, endpoints=endpoints, requests=client.log)
