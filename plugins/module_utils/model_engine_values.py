# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE)
"""Decisions of the model_engine role, as pure functions.

* Helm values for LLM Engine's ``charts/model-engine`` built from role inputs and the facts of
  gpu_discovery, redis, postgres and model_staging (:func:`build_values`).
* The key set the chart and the server really read (:data:`KNOWN_VALUES`) and the check that finds
  misspelled keys, which the chart and server would otherwise drop or choke on (:func:`unknown_keys`).
* The post-renderer's transformation of a manifest stream (:func:`post_render`): drop objects whose
  API the cluster does not serve, replace the cluster-admin binding with least-privilege RBAC
  (:func:`least_privilege_rbac`), leave every other document byte-for-byte.

This file is also copied next to the role's post-renderer script and imported from there, so it
depends on the standard library and PyYAML only.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import json
import re

try:
    from urllib.parse import quote as _url_quote
except ImportError:  # pragma: no cover - Python 2 (ansible-test sanity compile)
    from urllib import quote as _url_quote

try:
    import yaml

    HAS_YAML = True
except ImportError:  # pragma: no cover - PyYAML ships with ansible-core
    yaml = None
    HAS_YAML = False


class ModelEngineInputError(ValueError):
    """Bad role input; ``errors`` lists every problem found, each naming the input and the fix."""

    def __init__(self, errors):
        self.errors = list(errors)
        super(ModelEngineInputError, self).__init__("\n".join(self.errors))


class PostRenderError(RuntimeError):
    """The manifest stream cannot be installed safely as it is."""


# --------------------------------------------------------------------------- the chart's key set

# What charts/model-engine and model_engine_server read. A dict lists known sub-keys; ANY accepts
# any content below (free-form maps and lists such as nodeSelector, annotations, resources).
ANY = "any"

_INFRA_KEYS = (
    # model_engine_server.core.config._InfraConfig and DBEngineConfig; `env` comes from `context`.
    "cloud_provider", "k8s_cluster_name", "dns_host_domain", "default_region", "ml_account_id",
    "docker_repo_prefix", "s3_bucket", "redis_host", "redis_aws_secret_name", "profile_ml_worker",
    "profile_ml_inference_worker", "identity_service_url", "firehose_role_arn",
    "firehose_stream_name", "prometheus_server_address",
    "docker_registry_type", "gcp_project_id",
    "db_engine_pool_size", "db_engine_max_overflow", "db_engine_echo", "db_engine_echo_pool",
    "db_engine_disconnect_strategy",
)

# model_engine_server.common.config.HostedModelInferenceServiceConfig (common/config.py:50-83 of the
# pinned source): the server builds it with cls(**data) (config.py:86-87), so every field without a
# default must be present. `dd_trace_enabled` and `gateway_namespace` are required too, but the chart
# writes them itself (templates/service_config_map.yaml:13-14): a second entry in config.values.launch
# would make a duplicate YAML key.
LAUNCH_REQUIRED_KEYS = (
    "endpoint_namespace", "billing_queue_arn", "sqs_profile",
    "sqs_queue_policy_template", "sqs_queue_tag_template", "model_primitive_host",
    "cloud_file_llm_fine_tune_repository", "hf_user_fine_tuned_weights_prefix", "istio_enabled",
    "tgi_repository", "vllm_repository", "lightllm_repository",
    "tensorrt_llm_repository", "batch_inference_vllm_repository", "user_inference_base_repository",
    "user_inference_pytorch_repository", "user_inference_tensorflow_repository",
    "docker_image_layer_cache_repository", "sensitive_log_mode",
)
_LAUNCH_OPTIONAL_KEYS = (
    "cache_redis_aws_url", "cache_redis_azure_host", "cache_redis_aws_secret_name",
    "cache_redis_onprem_url", "cache_redis_gcp_url", "sglang_repository",
)
INFRA_REQUIRED_KEYS = (
    "cloud_provider", "k8s_cluster_name", "dns_host_domain", "default_region", "ml_account_id",
    "docker_repo_prefix", "s3_bucket",
)

KNOWN_VALUES = {
    "tag": ANY,
    "context": ANY,
    "serviceIdentifier": ANY,
    "serviceBuilderQueue": ANY,
    "message": ANY,
    # the cacher runs image.gatewayRepository (templates/cacher_deployment.yaml:42)
    "image": {"gatewayRepository": ANY, "builderRepository": ANY, "forwarderRepository": ANY,
              "pullPolicy": ANY},
    "imagePullSecrets": ANY,
    "secrets": {"kubernetesDatabaseSecretName": ANY, "cloudDatabaseSecretName": ANY},
    "db": {"runDbInitScript": ANY, "runDbMigrationScript": ANY},
    "serviceAccount": {"annotations": ANY, "namespaces": ANY},
    "imageBuilderServiceAccount": {"create": ANY, "annotations": ANY, "namespaces": ANY},
    "service": {"type": ANY, "port": ANY, "nodePort": ANY},
    "virtualservice": {"enabled": ANY, "annotations": ANY, "hostDomains": ANY, "gateways": ANY},
    "destinationrule": {"enabled": ANY, "annotations": ANY},
    "hostDomain": {"prefix": ANY},
    "replicaCount": {"gateway": ANY, "cacher": ANY, "builder": ANY},
    "balloonConfig": {"reserveHighPriority": ANY},
    "balloons": ANY,
    "balloonNodeSelector": ANY,
    "autoscaling": {
        "horizontal": {"enabled": ANY, "minReplicas": ANY, "maxReplicas": ANY,
                       "targetConcurrency": ANY},
        "vertical": {"enabled": ANY, "updateMode": ANY, "minAllowed": ANY, "maxAllowed": ANY},
        "prewarming": {"enabled": ANY},
    },
    "celery_autoscaler": {"enabled": ANY, "num_shards": ANY},
    "podDisruptionBudget": {"enabled": ANY, "minAvailable": ANY, "maxUnavailable": ANY},
    "resources": ANY,
    "nodeSelector": ANY,
    "tolerations": ANY,
    "affinity": ANY,
    "podSecurityContext": ANY,
    "containerSecurityContext": ANY,
    "aws": {"configMap": {"name": ANY, "create": ANY, "mountPath": ANY, "namespaces": ANY},
            "profileName": ANY, "s3WriteProfileName": ANY},
    "azure": ANY,
    "gcp": {"project_id": ANY, "pubsub_topic_prefix": ANY, "pubsub_subscription_prefix": ANY,
            "inference_service_account": ANY, "iam_service_account": ANY},
    "serviceTemplate": {"securityContext": ANY, "mountInfraConfig": ANY,
                        "createServiceAccount": ANY, "serviceAccountName": ANY,
                        "serviceAccountAnnotations": ANY, "awsConfigMapName": ANY},
    "config": {
        "values": {
            "infra": dict((key, ANY) for key in _INFRA_KEYS
                          + ("celery_broker_type_redis", "celery_enable_sha256", "debug_mode")),
            # gateway_namespace and dd_trace_enabled are known but forbidden (FORBIDDEN_VALUES)
            "launch": dict((key, ANY) for key in LAUNCH_REQUIRED_KEYS + _LAUNCH_OPTIONAL_KEYS
                           + ("gateway_namespace", "dd_trace_enabled")),
        },
        "file": {"launch": ANY, "infra": ANY},
    },
    "triton": {"image": {"repository": ANY, "tag": ANY}},
    "imageCache": {"devices": ANY},
    "endpointBuilder": {"readinessProbe": ANY},
    "populateFineTuningRepository": ANY,
    "restartKedaOperator": ANY,
    "celeryBrokerType": ANY,
    "celeryBrokerUrl": ANY,
    "celeryResultBackend": ANY,
    "celeryElasticacheEnabled": ANY,
    "datadog": {"enabled": ANY, "env": ANY},
    "dd_trace_enabled": ANY,
    "recommendedHardware": {"byGpuMemoryGb": ANY, "byModelName": ANY},
    "spellbook": {"enabled": ANY},
    "celery_enable_sha256": ANY,
    "debug_mode": ANY,
    "celery_broker_type_redis": ANY,
    "redis": {"auth": ANY, "authSecretName": ANY, "authSecretKey": ANY, "enableTLS": ANY,
              "enableAuth": ANY, "kedaSecretName": ANY, "unsafeSsl": ANY},
    "redisHost": ANY,
    "redisPort": ANY,
    "s3EndpointUrl": ANY,
    "keda": {"cooldownPeriod": ANY},
    "inferenceFramework": {"vllm": ANY, "deepspeed": ANY, "text_generation_inference": ANY,
                           "lightllm": ANY, "tensorrt_llm": ANY, "vllm_batch": ANY, "vllm_batch_v2": ANY},
    "extraEnvVars": ANY,
    "extraVolumes": ANY,
    "extraVolumeMounts": ANY,
    "extraPodEnvFrom": ANY,
    "modelCache": {"enabled": ANY, "storage": ANY, "storageClassName": ANY, "accessMode": ANY,
                   "mountPath": ANY, "lockStaleSeconds": ANY},
    "automountServiceAccountToken": ANY,
    "utilityImages": ANY,
    "gpuTolerations": ANY,
    "forwarder": {"forceUseIPv4": ANY},
    # Internal record of how the release was rendered (see build_values); the chart ignores it.
    "llmopsServing": ANY,
}

# Keys that exist but break the installation when set: the reason is the error message.
FORBIDDEN_VALUES = {
    "fullnameOverride": "renames every object while the server looks its ConfigMaps up under the fixed "
                        "name 'model-engine-...'; remove it",
    "serviceIdentifier": "renames the objects (model-engine-<id>) while the server looks its ConfigMaps "
                         "up under the fixed name 'model-engine-...'; remove it",
    "config.values.infra.env": "is written by the chart from the top-level `context` value; set "
                               "model_engine_context instead",
    "config.values.launch.dd_trace_enabled": "is written by the chart from the top-level dd_trace_enabled; "
                                             "a second entry makes a duplicate YAML key",
    "config.values.launch.gateway_namespace": "is written by the chart from the release namespace; a second "
                                              "entry makes a duplicate YAML key",
    "config.values.infra.celery_broker_type_redis": "is written by the chart from the top-level "
                                                    "celery_broker_type_redis; a second entry makes a duplicate "
                                                    "YAML key",
    "config.values.infra.celery_enable_sha256": "is written by the chart from the top-level "
                                                "celery_enable_sha256; set that instead",
    "config.values.infra.debug_mode": "is written by the chart from the top-level debug_mode; set that instead",
    "redis.auth": "would put the Redis password into the Helm values in clear text; pass the Secret by "
                  "reference (redis_connection.password_secret_name/password_secret_key)",
}

# Well-known misspellings and renamed keys: dotted path -> the key to use instead.
KNOWN_MISSPELLINGS = {
    "config.values.launch.s3_file_llm_fine_tuning_job_repository":
        "config.values.launch.cloud_file_llm_fine_tune_repository",
    "config.values.launch.s3_file_llm_fine_tune_repository":
        "config.values.launch.cloud_file_llm_fine_tune_repository",
    "config.values.launch.datadog_trace_enabled": "dd_trace_enabled (top level)",
    "datadog_trace_enabled": "dd_trace_enabled",
}


def _closest(name, candidates):
    """The candidate that differs least from name (case-insensitive edit distance), or None."""
    best, best_distance = None, None
    for candidate in candidates:
        distance = _edit_distance(name.lower(), candidate.lower())
        if best_distance is None or distance < best_distance:
            best, best_distance = candidate, distance
    if best is not None and best_distance <= max(2, len(name) // 4):
        return best
    return None


def _edit_distance(left, right):
    previous = list(range(len(right) + 1))
    for i, char_left in enumerate(left, 1):
        current = [i]
        for j, char_right in enumerate(right, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (char_left != char_right)))
        previous = current
    return previous[-1]


def _extend_known(known, extra_paths):
    known = copy.deepcopy(known)
    for path in extra_paths or ():
        node = known
        parts = [part for part in str(path).split(".") if part]
        for index, part in enumerate(parts):
            if node is ANY:
                break
            if index == len(parts) - 1:
                node[part] = ANY
            else:
                child = node.get(part)
                if child is None:
                    child = node[part] = {}
                node = child
    return known


def unknown_keys(values, extra_known=(), known=None):
    """Every key path in ``values`` that the chart and server do not read.

    Returns a list of dicts ``{"path": "a.b.c", "suggestion": "a.b.d" or None}`` in sorted order.
    ``extra_known`` adds dotted paths (for keys of a newer chart) to the known set.
    """
    tree = _extend_known(KNOWN_VALUES if known is None else known, extra_known)
    found = []

    def walk(node, spec, prefix):
        if spec is ANY or not isinstance(node, dict):
            return
        for key in sorted(node, key=str):
            path = prefix + str(key)
            if key not in spec:
                suggestion = KNOWN_MISSPELLINGS.get(path)
                if suggestion is None:
                    close = _closest(str(key), [str(k) for k in spec])
                    suggestion = prefix + close if close else None
                found.append({"path": path, "suggestion": suggestion})
                continue
            walk(node[key], spec[key], path + ".")

    walk(values or {}, tree, "")
    return found


def forbidden_keys(values):
    """Dotted paths of keys in ``values`` that are known but break the install, with the reason."""
    found = []
    for path, reason in sorted(FORBIDDEN_VALUES.items()):
        node = values
        present = True
        for part in path.split("."):
            if isinstance(node, dict) and part in node:
                node = node[part]
            else:
                present = False
                break
        if present and node not in (None, "", {}):
            found.append({"path": path, "reason": reason})
    return found


def deep_merge(base, override):
    """A new dict: ``override`` merged into ``base``; dicts merge key by key, anything else replaces.

    A ``None`` in ``override`` is kept (Helm reads a null value as "delete the chart default").
    """
    result = copy.deepcopy(base) if isinstance(base, dict) else {}
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = deep_merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


# --------------------------------------------------------------------------- values generation

INFERENCE_FRAMEWORKS = {
    # framework -> (launch config key of its repository, inferenceFramework key of its tag,
    #               default repository name under the registry prefix)
    "vllm": ("vllm_repository", "vllm", "vllm"),
    "text_generation_inference": ("tgi_repository", "text_generation_inference",
                                  "text-generation-inference"),
    "lightllm": ("lightllm_repository", "lightllm", "lightllm"),
    "tensorrt_llm": ("tensorrt_llm_repository", "tensorrt_llm", "tensorrt-llm"),
    # the chart's inference-framework ConfigMap has no sglang tag (templates/inference_framework_config.yaml)
    "sglang": ("sglang_repository", None, "sglang"),
    "deepspeed": (None, "deepspeed", None),
}

ACCELERATOR_LABEL = "k8s.amazonaws.com/accelerator"
HARDWARE_ROW_KEYS = ("cpus", "gpus", "memory", "storage", "gpu_type")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_UNPINNED_TAGS = ("", "latest", "main", "master", "stable")

# Where the Redis CA (the redis role's `redis-ca` Secret) is mounted in the gateway, endpoint builder
# and cacher (chart values extraVolumes/extraVolumeMounts), and the volume's name.
REDIS_CA_MOUNT_DIR = "/etc/llmops/redis-ca"
REDIS_CA_FILE = "ca.crt"
REDIS_CA_VOLUME = "llmops-redis-ca"

# The server's launch service config as a Secret of the role's (the cache URL carries the Redis
# password, see service_config_document), mounted into the gateway, builder and cacher and named by
# config.file.launch (env DEPLOY_SERVICE_CONFIG_PATH, chart templates/_helpers.tpl:341-345). The infra
# config stays the chart's ConfigMap at the chart's own default path (_helpers.tpl:349-350, 243-248).
SERVICE_CONFIG_SECRET = "model-engine-llmops-service-config"  # noqa: S105 - a Secret's name
SERVICE_CONFIG_KEY = "service_config.yaml"
SERVICE_CONFIG_DIR = "/etc/llmops/service-config"
SERVICE_CONFIG_VOLUME = "llmops-service-config"
INFRA_CONFIG_PATH = "/workspace/model-engine/model_engine_server/core/configs/config.yaml"
# Redis database of the Celery result backend: upstream's broker uses the TaskVisibility indexes 0-3
# (core/celery/app.py:80-83, get_redis_endpoint(task_visibility) at app.py:493), the cache db 15 by default.
RESULT_BACKEND_REDIS_DB = 14

# Private S3 CA (HTTPS endpoint signed by a CA of your own): mounted into the gateway, builder and cacher.
S3_CA_DIR = "/etc/llmops/s3-ca"
S3_CA_FILE = "ca.crt"
S3_CA_VOLUME = "llmops-s3-ca"


def redis_tls_query(ca_file):
    """Query string that makes redis-py (``Redis.from_url``) and kombu verify the server certificate.

    Both read ``ssl_cert_reqs`` and ``ssl_ca_certs`` from a ``rediss://`` URL; kombu wants the path
    URL-encoded, redis-py decodes it too. Never ``ssl_cert_reqs=none``.
    """
    query = "ssl_cert_reqs=required"
    if ca_file:
        query += "&ssl_ca_certs=" + _url_quote(ca_file, safe="")
    return query


def _secret_ref_ok(errors, label, name, key):
    if not name:
        errors.append("%s: the Secret name is empty; set it to the name of an existing Secret" % label)
        return False
    if not _DNS_LABEL.match(str(name)) or len(str(name)) > 253:
        errors.append("%s: %r is not a valid Secret name (lowercase letters, digits and '-')"
                      % (label, name))
        return False
    if key is not None and not key:
        errors.append("%s: the Secret key is empty; name the key inside Secret %r" % (label, name))
        return False
    return True


def _s3_bucket_of(path):
    match = re.match(r"^s3://([^/]+)(/.*)?$", str(path or ""))
    return match.group(1) if match else None


def gpu_tolerations(gpu_types):
    """Union of the tolerations every discovered GPU type needs, in first-seen order."""
    seen, result = set(), []
    for gpu_type in sorted(gpu_types or {}):
        for toleration in (gpu_types[gpu_type] or {}).get("tolerations") or []:
            key = json.dumps(toleration, sort_keys=True)
            if key not in seen:
                seen.add(key)
                result.append(copy.deepcopy(toleration))
    return result


def llm_engine_gpu_types(gpu_types):
    """{LLM Engine gpu_type: [discovered gpu_type, ...]} for the types whose nodes carry an accelerator
    label (gpu_discovery's llm_engine_gpu_type; a type record without that key names itself)."""
    found = {}
    for gpu_type in sorted(gpu_types or {}):
        llm_type = (gpu_types[gpu_type] or {}).get("llm_engine_gpu_type", gpu_type)
        if llm_type:
            found.setdefault(llm_type, []).append(gpu_type)
    return found


def image_cache_devices(gpu_types, accelerator_label=ACCELERATOR_LABEL):
    """imageCache.devices entries: one per accelerator label value (LLM Engine gpu_type) in use."""
    devices = []
    for llm_type, names in sorted(llm_engine_gpu_types(gpu_types).items()):
        device = {"name": llm_type, "nodeSelector": {accelerator_label: llm_type}}
        tolerations = []
        for name in names:
            for toleration in (gpu_types[name] or {}).get("tolerations") or []:
                if toleration not in tolerations:
                    tolerations.append(copy.deepcopy(toleration))
        if tolerations:
            device["tolerations"] = tolerations
        devices.append(device)
    return devices


def validate_recommended_hardware(hardware, gpu_types, errors):
    """Check recommendedHardware rows point at GPU types that exist and carry every field."""
    if not isinstance(hardware, dict):
        errors.append("model_engine_recommended_hardware must be a dict with byGpuMemoryGb and "
                      "byModelName lists (gpu_discovery_recommended_hardware provides one)")
        return
    for table, required in (("byGpuMemoryGb", ("gpu_memory_le",) + HARDWARE_ROW_KEYS),
                            ("byModelName", ("name",) + HARDWARE_ROW_KEYS)):
        rows = hardware.get(table) or []
        if not isinstance(rows, list):
            errors.append("model_engine_recommended_hardware.%s must be a list" % table)
            continue
        for index, row in enumerate(rows):
            where = "model_engine_recommended_hardware.%s[%d]" % (table, index)
            missing = [key for key in required if key not in (row or {})]
            if missing:
                errors.append("%s lacks %s" % (where, ", ".join(missing)))
                continue
            usable = llm_engine_gpu_types(gpu_types)
            if gpu_types and row["gpu_type"] not in usable:
                errors.append("%s uses gpu_type %r, but no discovered GPU carries that accelerator label "
                              "(LLM Engine types in use: %s); fix the row or label the nodes" % (
                                  where, row["gpu_type"], ", ".join(sorted(usable)) or "none"))
    unknown_tables = sorted(set(hardware) - {"byGpuMemoryGb", "byModelName"})
    if unknown_tables:
        errors.append("model_engine_recommended_hardware has unknown keys %s (known: byGpuMemoryGb, "
                      "byModelName)" % ", ".join(unknown_tables))


def cache_redis_url(scheme, host, port, db, password=None):
    """``scheme://[:password@]host:port/db``, the password URL-quoted (redis-py unquotes it)."""
    auth = (":%s@" % _url_quote(str(password), safe="")) if password else ""
    return "%s://%s%s:%d/%d" % (scheme, auth, host, int(port), int(db))


def result_backend_url(scheme, host, port, db, with_password, ca_file):
    """CELERY_RESULT_BACKEND: the role's Redis; the password as $(REDIS_AUTH_TOKEN), which Kubernetes
    expands from the env var the chart defines before it. Celery's redis backend wants ssl_cert_reqs in
    a rediss:// URL."""
    auth = ":$(REDIS_AUTH_TOKEN)@" if with_password else ""
    url = "%s://%s%s:%d/%d" % (scheme, auth, host, int(port), int(db))
    if scheme == "rediss":
        url += "?" + redis_tls_query(ca_file)
    return url


def gpu_toleration_problems(tolerations):
    """Tolerations the chart cannot express for endpoint pods.

    The chart renders each gpuTolerations entry as ``key: <key>, operator: Exists, effect: NoSchedule``
    (templates/service_template_config_map.yaml:113-117 and the same block at :582, :861, :1212):
    the value is dropped (Exists covers it) but so is any other effect, so a NoExecute taint stays
    untolerated and the endpoint pods are never scheduled (or are evicted)."""
    problems = []
    for toleration in tolerations or []:
        effect = toleration.get("effect") or ""
        if effect in ("NoExecute", ""):
            problems.append(
                "GPU nodes are tainted %s%s:%s, but LLM Engine's chart gives endpoint pods only "
                "'%s Exists NoSchedule' tolerations (charts/model-engine "
                "templates/service_template_config_map.yaml:113-117): they would never run there. Change the "
                "taint's effect to NoSchedule (kubectl taint nodes ... %s:NoSchedule) and run gpu_discovery again" % (
                    toleration.get("key"), ("=" + str(toleration["value"])) if toleration.get("value") else "",
                    effect or "<any effect>", toleration.get("key"), toleration.get("key")))
    return problems


def redis_upstream_notes(redis):
    """Warnings for what upstream LLM Engine does with this Redis regardless of the role's settings.

    Upstream's Celery broker URL (core/celery/app.py:199-216, get_redis_endpoint) is
    ``rediss://:TOKEN@host:port/N?ssl_cert_reqs=none`` whenever REDIS_AUTH_TOKEN is set, else
    ``redis://host:port/N``: TLS is forced by the password and never verified."""
    redis = redis or {}
    notes = []
    password = bool(redis.get("password_secret_name"))
    tls = bool(redis.get("tls"))
    if password and not tls:
        notes.append("Redis has a password but no TLS: LLM Engine's Celery broker connects with rediss:// whenever "
                     "REDIS_AUTH_TOKEN is set (model_engine_server/core/celery/app.py:212-214) and cannot reach this "
                     "Redis; turn TLS on in the redis role (redis_tls_enabled: true)")
    if password and tls:
        notes.append("Redis TLS: LLM Engine's Celery broker does not verify the server certificate "
                     "(ssl_cert_reqs=none, model_engine_server/core/celery/app.py:214, and get_redis_instance at "
                     ":218-230); the cache (SSL_CERT_FILE) and the result backend (ssl_ca_certs) do. Upstream has no "
                     "setting for it")
    if tls and not password:
        notes.append("Redis TLS without a password: LLM Engine's Celery broker uses redis:// when REDIS_AUTH_TOKEN is "
                     "unset (model_engine_server/core/celery/app.py:215) and cannot reach a TLS-only Redis; set a "
                     "password Secret (redis_connection.password_secret_name)")
    return notes


def service_config_document(values, namespace, redis_password=None):
    """The server's launch service config (``HostedModelInferenceServiceConfig``) as YAML text, for the
    role's Secret that config.file.launch points at.

    The chart's own ConfigMap cannot be used: it writes dd_trace_enabled quoted (the string "false",
    which the server's `if hmi_config.dd_trace_enabled` reads as true; templates/service_config_map.yaml:13,
    api/dependencies.py:192) and the cache URL there has no password, which upstream uses as written
    (common/config.py:96-99). Here: the same launch values, dd_trace_enabled and gateway_namespace as
    the chart writes them but typed, and the cache URL with the password."""
    launch = copy.deepcopy(((values.get("config") or {}).get("values") or {}).get("launch") or {})
    launch["gateway_namespace"] = namespace
    launch["dd_trace_enabled"] = bool(values.get("dd_trace_enabled"))
    url = launch.get("cache_redis_onprem_url")
    if url and redis_password:
        match = re.match(r"^(rediss?)://([^/:@]+):(\d+)/(\d+)$", url)
        if not match:
            raise ModelEngineInputError(["config.values.launch.cache_redis_onprem_url %r is not "
                                         "redis[s]://host:port/db; the role cannot add the password to it" % url])
        launch["cache_redis_onprem_url"] = cache_redis_url(match.group(1), match.group(2), match.group(3),
                                                           match.group(4), redis_password)
    return yaml.safe_dump(launch, default_flow_style=False, sort_keys=True)


def _registry_join(prefix, name):
    if not prefix:
        return name
    return prefix.rstrip("/") + "/" + name


def build_values(inputs):
    """Helm values for charts/model-engine, or ModelEngineInputError listing every bad input.

    ``inputs`` holds the role's variables without the ``model_engine_`` prefix (see the role's
    defaults), with the facts of the other roles already resolved into them:
    ``redis`` (redis_connection), ``postgres`` (postgres_connection), ``gpu_types``
    (gpu_discovery_types), ``recommended_hardware``, ``checkpoints`` (model_staging_checkpoints).
    Secrets appear only by reference (Secret name and key).
    """
    errors = []
    inputs = dict(inputs or {})
    namespace = inputs.get("namespace") or ""
    endpoint_namespace = inputs.get("endpoint_namespace") or ""
    for name in ("namespace", "endpoint_namespace"):
        value = inputs.get(name) or ""
        if not _DNS_LABEL.match(value) or len(value) > 63:
            errors.append("model_engine_%s %r is not a valid namespace name (lowercase letters, digits, "
                          "'-', at most 63 characters)" % (name, value))

    tag = str(inputs.get("tag") or "")
    if tag in _UNPINNED_TAGS:
        errors.append("model_engine_tag %r is not a pinned image tag: set it to the LLM Engine image "
                      "tag to deploy (a release or commit tag), upgrades happen by changing it" % tag)
    registry = inputs.get("image_registry") or ""
    repository = inputs.get("image_repository") or ""
    if not repository:
        errors.append("model_engine_image_repository is required: the repository of the LLM Engine "
                      "server image in your registry, e.g. registry.local/llm-engine/model-engine")
    overrides = inputs.get("image_repositories") or {}
    if "cacher" in overrides:
        errors.append("model_engine_image_repositories.cacher has no effect: the chart runs the cacher from "
                      "the gateway's image (charts/model-engine templates/cacher_deployment.yaml:42); remove it, "
                      "or set model_engine_image_repositories.gateway")
    bad_components = sorted(set(overrides) - {"gateway", "builder", "cacher", "forwarder"})
    if bad_components:
        errors.append("model_engine_image_repositories has unknown components %s (known: gateway, "
                      "builder, forwarder)" % ", ".join(bad_components))

    # inference framework images: repository + pinned tag for each framework in use
    frameworks = inputs.get("inference_images") or {}
    unknown_frameworks = sorted(set(frameworks) - set(INFERENCE_FRAMEWORKS))
    if unknown_frameworks:
        errors.append("model_engine_inference_images has unknown frameworks %s (known: %s)"
                      % (", ".join(unknown_frameworks), ", ".join(sorted(INFERENCE_FRAMEWORKS))))
    if "vllm" not in frameworks:
        errors.append("model_engine_inference_images.vllm is required ({repository, tag}): LLM Engine "
                      "serves LLMs with vLLM by default")
    for framework, spec in sorted(frameworks.items()):
        if framework not in INFERENCE_FRAMEWORKS:
            continue
        spec = spec or {}
        if str(spec.get("tag") or "") in _UNPINNED_TAGS:
            errors.append("model_engine_inference_images.%s.tag %r is not pinned: the server resolves "
                          "'latest' from a ConfigMap at endpoint creation; set a real image tag"
                          % (framework, spec.get("tag")))
        bad = sorted(set(spec) - {"repository", "tag"})
        if bad:
            errors.append("model_engine_inference_images.%s has unknown keys %s (known: repository, tag)"
                          % (framework, ", ".join(bad)))

    # Postgres: the chart reads the URL from key `database_url` of secrets.kubernetesDatabaseSecretName
    postgres = inputs.get("postgres") or {}
    db_secret = postgres.get("secret_name")
    db_url_key = postgres.get("database_url_key") or "database_url"
    if _secret_ref_ok(errors, "postgres_connection.secret_name (model_engine_postgres)", db_secret, None):
        if db_url_key != "database_url":
            errors.append("postgres_connection.database_url_key is %r, but the chart always reads key "
                          "'database_url' of Secret %r; store the URL under 'database_url'"
                          % (db_url_key, db_secret))
        if postgres.get("namespace") and postgres.get("namespace") != namespace:
            errors.append("postgres_connection.namespace is %r but the gateway runs in %r: the chart reads "
                          "Secret %r from its own namespace; create the Secret in %r (the postgres role's "
                          "postgres_secret_namespaces) or set model_engine_namespace"
                          % (postgres.get("namespace"), namespace, db_secret, namespace))

    # Redis: broker and cache; password by Secret reference only
    redis = inputs.get("redis") or {}
    redis_host = redis.get("host")
    if not redis_host:
        errors.append("redis_connection.host is required (model_engine_redis): the Redis server LLM "
                      "Engine uses as Celery broker and cache")
    try:
        redis_port = int(redis.get("port") or 6379)
    except (TypeError, ValueError):
        errors.append("redis_connection.port %r is not a port number" % (redis.get("port"),))
        redis_port = 6379
    redis_tls = bool(redis.get("tls"))
    password_secret = redis.get("password_secret_name") or ""
    password_key = redis.get("password_secret_key") or ""
    if password_secret:
        _secret_ref_ok(errors, "redis_connection.password_secret_name", password_secret, password_key)
        if redis.get("namespace") and redis.get("namespace") != namespace:
            errors.append("redis_connection.namespace is %r but the gateway runs in %r: the chart reads "
                          "Secret %r from its own namespace; create it in %r too"
                          % (redis.get("namespace"), namespace, password_secret, namespace))
    scheme = redis.get("url_scheme") or ("rediss" if redis_tls else "redis")
    if scheme not in ("redis", "rediss"):
        errors.append("redis_connection.url_scheme %r must be redis or rediss" % scheme)
    if redis_tls and scheme != "rediss":
        errors.append("redis_connection.tls is true but url_scheme is %r: TLS clients need rediss; "
                      "remove url_scheme or set it to rediss" % scheme)
    ca_secret = (redis.get("ca_secret_name") or "") if redis_tls else ""
    ca_key = redis.get("ca_secret_key") or "ca.crt"
    if ca_secret:
        _secret_ref_ok(errors, "redis_connection.ca_secret_name", ca_secret, ca_key)
    ca_dir = str(inputs.get("redis_ca_mount_dir") or REDIS_CA_MOUNT_DIR)
    if not ca_dir.startswith("/"):
        errors.append("model_engine_redis_ca_mount_dir %r must be an absolute path" % ca_dir)
    ca_file = (ca_dir.rstrip("/") + "/" + REDIS_CA_FILE) if ca_secret else ""
    try:
        cache_db = int(inputs.get("cache_redis_db", 15))
    except (TypeError, ValueError):
        errors.append("model_engine_cache_redis_db must be a number (a Redis database index)")
        cache_db = 15

    # Object storage: endpoint, bucket, credentials Secret
    s3_endpoint = inputs.get("s3_endpoint_url") or ""
    if s3_endpoint and not re.match(r"^https?://[^\s/]+", s3_endpoint):
        errors.append("model_engine_s3_endpoint_url %r must be an http(s) URL, e.g. http://minio.storage:9000"
                      % s3_endpoint)
    checkpoints = inputs.get("checkpoints") or {}
    bucket = inputs.get("s3_bucket") or ""
    checkpoint_buckets = {}
    for model, info in sorted(checkpoints.items()):
        path = (info or {}).get("checkpoint_path")
        found = _s3_bucket_of(path)
        if found is None:
            errors.append("model_staging_checkpoints[%r].checkpoint_path %r is not an s3:// URL; the "
                          "endpoint pods fetch weights with s5cmd from S3" % (model, path))
            continue
        checkpoint_buckets.setdefault(found, []).append(model)
    if not bucket:
        if len(checkpoint_buckets) == 1:
            bucket = list(checkpoint_buckets)[0]
        else:
            errors.append("model_engine_s3_bucket is required (the bucket of staged models and "
                          "fine-tuning artifacts)%s" % (
                              "; staged checkpoints span buckets %s" % ", ".join(sorted(checkpoint_buckets))
                              if checkpoint_buckets else ""))
    for other, models in sorted(checkpoint_buckets.items()):
        if bucket and other != bucket:
            errors.append("model_staging_checkpoints %s are in bucket %r, not in model_engine_s3_bucket %r: "
                          "the inference pods' credentials are for one bucket; stage them into %r"
                          % (", ".join(models), other, bucket, bucket))
    s3_ca = inputs.get("s3_ca_configmap") or ""
    if s3_ca and (not _DNS_LABEL.match(str(s3_ca)) or len(str(s3_ca)) > 253):
        errors.append("model_engine_s3_ca_configmap %r is not a valid ConfigMap name (lowercase letters, digits "
                      "and '-')" % (s3_ca,))
    s3_secret = inputs.get("s3_credentials_secret") or ""
    access_key_key = inputs.get("s3_access_key_key") or "AWS_ACCESS_KEY_ID"
    secret_key_key = inputs.get("s3_secret_key_key") or "AWS_SECRET_ACCESS_KEY"
    if s3_secret:
        _secret_ref_ok(errors, "model_engine_s3_credentials_secret", s3_secret, access_key_key)
    # inference pods get the S3 Secret's keys as environment (keys must be env names) plus extras
    inference_env_from = [s3_secret] if s3_secret else []
    for name in inputs.get("inference_env_from_secrets") or []:
        if name not in inference_env_from:
            inference_env_from.append(name)
    for name in inference_env_from:
        _secret_ref_ok(errors, "model_engine_inference_env_from_secrets", name, None)

    # GPU facts
    gpu_types = inputs.get("gpu_types") or {}
    if not gpu_types and inputs.get("require_gpu", True):
        errors.append("no GPU types discovered (gpu_discovery_types is empty): run the gpu_discovery "
                      "role first, or set model_engine_require_gpu: false for a CPU-only control plane")
    errors.extend(gpu_toleration_problems(gpu_tolerations(gpu_types)))
    hardware = inputs.get("recommended_hardware")
    if hardware is None:
        hardware = {"byGpuMemoryGb": [], "byModelName": []}
    validate_recommended_hardware(hardware, gpu_types, errors)

    pull_secret = inputs.get("image_pull_secret") or ""
    if pull_secret:
        _secret_ref_ok(errors, "model_engine_image_pull_secret", pull_secret, None)

    service_type = inputs.get("service_type") or "ClusterIP"
    if service_type not in ("ClusterIP", "NodePort", "LoadBalancer"):
        errors.append("model_engine_service_type %r must be ClusterIP, NodePort or LoadBalancer" % service_type)
    node_port = inputs.get("service_node_port")
    if node_port not in (None, "", 0) and service_type != "NodePort":
        errors.append("model_engine_service_node_port is set but model_engine_service_type is %r; "
                      "set the type to NodePort" % service_type)

    context = inputs.get("context") or "onprem"
    if not _LABEL_VALUE.match(context) or len(context) > 63:
        errors.append("model_engine_context %r must be a valid label value (it labels every pod)" % context)

    if errors:
        raise ModelEngineInputError(errors)

    def component_repository(component):
        return overrides.get(component) or repository

    docker_repo_prefix = inputs.get("docker_repo_prefix") or registry or repository.rsplit("/", 1)[0]
    launch = {
        "endpoint_namespace": endpoint_namespace,
        # AWS-named fields the server still requires; harmless on-prem placeholders.
        "billing_queue_arn": "none",
        "sqs_profile": "default",
        "sqs_queue_policy_template": "{}",
        "sqs_queue_tag_template": "{}",
        "model_primitive_host": "none",
        "cloud_file_llm_fine_tune_repository": "s3://%s/%s" % (
            bucket, (inputs.get("fine_tune_prefix") or "llm-ft-job-repository").strip("/")),
        "hf_user_fine_tuned_weights_prefix": "s3://%s/%s" % (
            bucket, (inputs.get("fine_tuned_weights_prefix") or "fine_tuned_weights").strip("/")),
        # real booleans: the chart writes them unquoted (templates/service_config_map.yaml:17-18)
        "istio_enabled": bool(inputs.get("istio_enabled", False)),
        "sensitive_log_mode": bool(inputs.get("sensitive_log_mode", False)),
        "batch_inference_vllm_repository": _registry_join(docker_repo_prefix, "llm-engine/batch-infer-vllm"),
        "user_inference_base_repository": _registry_join(docker_repo_prefix, "launch/inference"),
        "user_inference_pytorch_repository": _registry_join(docker_repo_prefix, "launch/inference/pytorch"),
        "user_inference_tensorflow_repository": _registry_join(docker_repo_prefix, "launch/inference/tf"),
        "docker_image_layer_cache_repository": _registry_join(docker_repo_prefix, "launch-docker-build-cache"),
        # Without the password (values are not secret): the server reads the copy with the password
        # from the role's service-config Secret (service_config_document). No query string: upstream's
        # cache_redis_db_index takes the text after the last "/" (common/config.py:149-156), so
        # "/15?ssl_cert_reqs=..." would read as db 0; the CA comes from SSL_CERT_FILE instead.
        "cache_redis_onprem_url": cache_redis_url(scheme, redis_host, redis_port, cache_db),
    }
    framework_tags = {}
    for framework, (repo_key, tag_key, default_name) in sorted(INFERENCE_FRAMEWORKS.items()):
        spec = frameworks.get(framework) or {}
        # every repository the server requires gets one; optional ones only when configured
        if repo_key and (repo_key in LAUNCH_REQUIRED_KEYS or spec.get("repository")):
            launch[repo_key] = spec.get("repository") or _registry_join(docker_repo_prefix, default_name)
        if tag_key and spec.get("tag"):
            framework_tags[tag_key] = str(spec["tag"])

    infra = {
        "cloud_provider": "onprem",
        "k8s_cluster_name": inputs.get("cluster_name") or "onprem",
        "dns_host_domain": inputs.get("dns_host_domain") or "cluster.local",
        "default_region": inputs.get("region") or "local",
        "ml_account_id": "000000000000",
        "docker_repo_prefix": docker_repo_prefix,
        "docker_registry_type": "onprem",
        "s3_bucket": bucket,
        "redis_host": redis_host,
    }
    if inputs.get("prometheus_server_address"):
        infra["prometheus_server_address"] = inputs["prometheus_server_address"]

    env_vars = []
    if s3_secret:
        env_vars.append({"name": "AWS_ACCESS_KEY_ID",
                         "valueFrom": {"secretKeyRef": {"name": s3_secret, "key": access_key_key}}})
        env_vars.append({"name": "AWS_SECRET_ACCESS_KEY",
                         "valueFrom": {"secretKeyRef": {"name": s3_secret, "key": secret_key_key}}})
    if s3_endpoint:
        env_vars.append({"name": "AWS_ENDPOINT_URL_S3", "value": s3_endpoint})
    # Celery result backend: upstream picks "s3" on-prem (service_builder/celery.py:31-35), whose backend
    # needs a boto3 session that only AWS gets (core/celery/app.py:556-579, core/celery/s3.py:39-41).
    # Celery reads CELERY_RESULT_BACKEND from the environment before its own settings. Set through
    # extraEnvVars, which the chart writes after REDIS_AUTH_TOKEN (templates/_helpers.tpl:382-386, 430-432),
    # so that $(REDIS_AUTH_TOKEN) expands; the chart's own celeryResultBackend comes before it (:378-380).
    env_vars.append({"name": "CELERY_RESULT_BACKEND", "value": result_backend_url(
        scheme, redis_host, redis_port, int(inputs.get("result_backend_redis_db", RESULT_BACKEND_REDIS_DB)),
        bool(password_secret), ca_file)})
    if ca_file:
        # redis-py verifies against the default CA paths when the URL names none; OpenSSL reads
        # SSL_CERT_FILE for them. This is how the cache URL (no query string, see above) finds the CA.
        env_vars.append({"name": "SSL_CERT_FILE", "value": ca_file})
    if s3_ca:
        env_vars.append({"name": "AWS_CA_BUNDLE", "value": S3_CA_DIR + "/" + S3_CA_FILE})

    replicas = inputs.get("replicas") or {}
    values = {
        "tag": tag,
        "context": context,
        "image": {
            "gatewayRepository": component_repository("gateway"),
            "builderRepository": component_repository("builder"),
            "forwarderRepository": component_repository("forwarder"),
            "pullPolicy": inputs.get("image_pull_policy") or "IfNotPresent",
        },
        "secrets": {"kubernetesDatabaseSecretName": db_secret},
        "db": {"runDbMigrationScript": bool(inputs.get("run_db_migrations", True)),
               "runDbInitScript": False},
        # The control-plane ServiceAccount lives in the release namespace only: the inference
        # ServiceAccount (serviceTemplate) has the same name in the endpoint namespace.
        "serviceAccount": {"annotations": {}, "namespaces": []},
        "serviceTemplate": {
            "createServiceAccount": True,
            "serviceAccountName": inputs.get("inference_service_account") or "model-engine",
            # the chart creates the inference ServiceAccount only when it has annotations
            "serviceAccountAnnotations": {"llmops.serving/purpose": "inference"},
            "mountInfraConfig": True,
            "securityContext": {"capabilities": {"drop": ["all"]}},
        },
        "service": {"type": service_type, "port": int(inputs.get("service_port") or 80)},
        # The VirtualService's hosts are "<fullname>.<hostDomain>" and its gateways the list as given
        # (templates/istio-virtualservice.yaml:14-21); without both it renders hosts: null, gateways: null.
        # "mesh": the sidecars of the mesh route to the gateway Service under its cluster DNS name.
        "virtualservice": {"enabled": bool(inputs.get("istio_enabled", False)),
                           "hostDomains": ["%s.svc.%s" % (namespace, inputs.get("dns_host_domain") or "cluster.local")],
                           "gateways": ["mesh"]},
        "destinationrule": {"enabled": bool(inputs.get("istio_enabled", False))},
        "hostDomain": {"prefix": "http://"},
        "replicaCount": {"gateway": int(replicas.get("gateway", 1)),
                         "builder": int(replicas.get("builder", 1)),
                         "cacher": int(replicas.get("cacher", 1))},
        "autoscaling": {"horizontal": {"enabled": bool(inputs.get("hpa_enabled", False))},
                        "vertical": {"enabled": False}, "prewarming": {"enabled": False}},
        "celery_autoscaler": {"enabled": bool(inputs.get("celery_autoscaler_enabled", False))},
        "podDisruptionBudget": {"enabled": bool(inputs.get("pdb_enabled", True)), "minAvailable": 1},
        "resources": copy.deepcopy(inputs.get("resources") or {"requests": {"cpu": "1", "memory": "2Gi"}}),
        # null clears the chart default (node-lifecycle: normal), which on-prem nodes lack; the chart
        # also puts this selector on every endpoint pod, so it must match the GPU nodes as well.
        "nodeSelector": copy.deepcopy(inputs.get("node_selector")) or None,
        "tolerations": copy.deepcopy(inputs.get("tolerations") or []),
        "gpuTolerations": gpu_tolerations(gpu_types),
        "imageCache": {"devices": image_cache_devices(gpu_types, inputs.get("accelerator_label")
                                                      or ACCELERATOR_LABEL)},
        "balloons": [],
        # charts/model-engine templates/service_template_config_map.yaml:4-5 read triton.image.* with
        # no default in values.yaml: without them the chart does not render (only the
        # triton-enhanced-runnable-image flavor uses the image; LLM endpoints do not).
        "triton": {"image": {"repository": _registry_join(docker_repo_prefix, "tritonserver"), "tag": tag}},
        "recommendedHardware": {"byGpuMemoryGb": copy.deepcopy(hardware.get("byGpuMemoryGb") or []),
                                "byModelName": copy.deepcopy(hardware.get("byModelName") or [])},
        "config": {"values": {"infra": infra, "launch": launch},
                   # DEPLOY_SERVICE_CONFIG_PATH / ML_INFRA_SERVICES_CONFIG_PATH (templates/_helpers.tpl:341-345)
                   "file": {"launch": SERVICE_CONFIG_DIR + "/" + SERVICE_CONFIG_KEY, "infra": INFRA_CONFIG_PATH}},
        "celeryBrokerType": "elasticache",
        "celery_broker_type_redis": True,
        "redisHost": redis_host,
        "redisPort": str(redis_port),
        "redis": {"enableTLS": redis_tls, "enableAuth": bool(password_secret),
                  "authSecretName": password_secret, "authSecretKey": password_key,
                  "kedaSecretName": password_secret, "unsafeSsl": False},
        "dd_trace_enabled": False,
        "datadog": {"enabled": False},
        "spellbook": {"enabled": False},
        "extraEnvVars": env_vars,
        "extraPodEnvFrom": [{"secretRef": {"name": name}} for name in inference_env_from],
    }
    if framework_tags:
        values["inferenceFramework"] = framework_tags
    if s3_endpoint:
        values["s3EndpointUrl"] = s3_endpoint
    if pull_secret:
        values["imagePullSecrets"] = [{"name": pull_secret}]
    if node_port not in (None, "", 0):
        values["service"]["nodePort"] = int(node_port)
    # the chart adds extraVolumes/extraVolumeMounts to the gateway, endpoint builder and cacher
    # (templates/_helpers.tpl:491-493, 514-516)
    values["extraVolumes"] = [{"name": SERVICE_CONFIG_VOLUME, "secret": {
        "secretName": SERVICE_CONFIG_SECRET, "items": [{"key": SERVICE_CONFIG_KEY, "path": SERVICE_CONFIG_KEY}],
        "defaultMode": 0o440}}]
    values["extraVolumeMounts"] = [{"name": SERVICE_CONFIG_VOLUME, "mountPath": SERVICE_CONFIG_DIR, "readOnly": True}]
    if ca_secret:
        values["extraVolumes"].append({"name": REDIS_CA_VOLUME, "secret": {
            "secretName": ca_secret, "items": [{"key": ca_key, "path": REDIS_CA_FILE}], "defaultMode": 0o444}})
        values["extraVolumeMounts"].append({"name": REDIS_CA_VOLUME, "mountPath": ca_dir, "readOnly": True})
    if s3_ca:
        values["extraVolumes"].append({"name": S3_CA_VOLUME, "configMap": {
            "name": s3_ca, "items": [{"key": S3_CA_FILE, "path": S3_CA_FILE}], "defaultMode": 0o444}})
        values["extraVolumeMounts"].append({"name": S3_CA_VOLUME, "mountPath": S3_CA_DIR, "readOnly": True})
    if inputs.get("hpa_enabled"):
        values["autoscaling"]["horizontal"].update({"minReplicas": int(replicas.get("gateway", 1)),
                                                    "maxReplicas": int(inputs.get("hpa_max_replicas") or 10),
                                                    "targetConcurrency": 50})
    return values


def chart_values(inputs, extra_values=None, extra_known=(), render_record=None):
    """build_values + finalize_values, reporting the problems of both in one ModelEngineInputError."""
    errors = []
    try:
        generated = build_values(inputs)
    except ModelEngineInputError as exc:
        errors = list(exc.errors)
    if errors:
        # the generated part only holds known keys: check the extra values on their own too, so
        # every mistake is named in one run
        try:
            finalize_values({}, extra_values or {}, extra_known, None, check_required=False)
        except ModelEngineInputError as exc:
            errors.extend(exc.errors)
        raise ModelEngineInputError(errors)
    return finalize_values(generated, extra_values, extra_known, render_record)


def finalize_values(generated, extra_values=None, extra_known=(), render_record=None, check_required=True):
    """Merge ``extra_values`` over the generated values and check the result.

    Raises ModelEngineInputError naming every unknown or forbidden key. ``render_record`` (how the
    post-renderer will transform the release) is stored under ``llmopsServing`` so that a change
    there upgrades the release, and ``helm get values`` shows it.
    """
    values = deep_merge(generated, extra_values or {})
    errors = []
    for item in unknown_keys(values, extra_known):
        hint = (" (did you mean %s?)" % item["suggestion"]) if item["suggestion"] else ""
        errors.append("unknown chart value %s%s: the chart and LLM Engine server do not read it, so it "
                      "would be silently dropped; fix model_engine_extra_values, or list the key in "
                      "model_engine_extra_known_keys if your chart version reads it" % (item["path"], hint))
    for item in forbidden_keys(values):
        errors.append("chart value %s must not be set: it %s" % (item["path"], item["reason"]))
    launch = ((values.get("config") or {}).get("values") or {}).get("launch") or {}
    infra = ((values.get("config") or {}).get("values") or {}).get("infra") or {}
    for key in LAUNCH_REQUIRED_KEYS if check_required else ():
        if key not in launch:
            errors.append("config.values.launch.%s is missing: the LLM Engine server refuses to start "
                          "without it" % key)
    for key in INFRA_REQUIRED_KEYS if check_required else ():
        if infra.get(key) in (None, ""):
            errors.append("config.values.infra.%s is missing or empty: the LLM Engine server needs it" % key)
    if errors:
        raise ModelEngineInputError(errors)
    if render_record is not None:
        values["llmopsServing"] = copy.deepcopy(render_record)
    return values


# --------------------------------------------------------------------------- API discovery

# API groups whose objects the post-renderer may drop when the cluster does not serve them:
# optional integrations of the chart (service mesh, event autoscaling, VPA, multi-node serving,
# Prometheus operator). Anything else that is unserved fails the render instead.
DEFAULT_DROPPABLE_GROUPS = (
    "networking.istio.io", "security.istio.io", "telemetry.istio.io", "extensions.istio.io",
    "keda.sh", "autoscaling.k8s.io", "leaderworkerset.x-k8s.io", "monitoring.coreos.com",
)


def served_api_kinds(apis):
    """``group/version/Kind`` strings (``v1/Kind`` for the core group) from k8s_cluster_info's apis."""
    served = set()
    for group_version, kinds in (apis or {}).items():
        for kind in kinds or {}:
            served.add("%s/%s" % (group_version, kind))
    return sorted(served)


def api_group(api_version):
    return api_version.split("/", 1)[0] if "/" in api_version else ""


# --------------------------------------------------------------------------- manifest streams

_SEPARATOR = re.compile(r"^---(\s.*)?$")


def split_documents(stream):
    """Split a YAML stream into document chunks; joining the chunks gives the stream back exactly.

    Each chunk starts at its ``---`` line (the first chunk may have none).
    """
    chunks, current = [], []
    for line in stream.splitlines(True):
        if _SEPARATOR.match(line.rstrip("\r\n")) and current:
            chunks.append("".join(current))
            current = []
        current.append(line)
    if current:
        chunks.append("".join(current))
    return chunks


def _source_of(chunk):
    for line in chunk.splitlines()[:3]:
        if line.startswith("# Source: "):
            return line[len("# Source: "):].strip()
    return None


def _load(chunk):
    if not HAS_YAML:
        raise PostRenderError("PyYAML is required to read the manifest stream")
    try:
        doc = yaml.safe_load(chunk)
    except yaml.YAMLError:
        return None
    return doc if isinstance(doc, dict) else None


def object_key(doc):
    meta = doc.get("metadata") or {}
    return "%s/%s/%s/%s" % (doc.get("apiVersion", ""), doc.get("kind", ""), meta.get("namespace") or "",
                            meta.get("name") or "")


def _describe(doc, chunk=None):
    meta = doc.get("metadata") or {}
    item = {"apiVersion": doc.get("apiVersion"), "kind": doc.get("kind"), "name": meta.get("name"),
            "namespace": meta.get("namespace")}
    if chunk is not None:
        item["source"] = _source_of(chunk)
    return item


def _is_cluster_admin_binding(doc):
    if doc.get("kind") not in ("ClusterRoleBinding", "RoleBinding"):
        return False
    if api_group(str(doc.get("apiVersion", ""))) != "rbac.authorization.k8s.io":
        return False
    ref = doc.get("roleRef") or {}
    return ref.get("kind") == "ClusterRole" and ref.get("name") == "cluster-admin"


# --------------------------------------------------------------------------- least-privilege RBAC

_MANAGE = ["get", "list", "watch", "create", "update", "patch", "delete"]
_READ = ["get", "list", "watch"]

# What the endpoint builder (and the gateway/cacher reading endpoint state) do in the endpoint
# namespace, from model_engine_server's k8s endpoint resource delegate and service templates.
ENDPOINT_NAMESPACE_RULES = [
    {"apiGroups": ["apps"], "resources": ["deployments", "daemonsets"], "verbs": _MANAGE},
    {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": _READ},
    {"apiGroups": [""], "resources": ["configmaps", "services"], "verbs": _MANAGE},
    {"apiGroups": [""], "resources": ["pods"], "verbs": _READ + ["delete"]},
    {"apiGroups": [""], "resources": ["pods/log", "events"], "verbs": _READ},
    {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": _MANAGE},
    {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": _MANAGE},
    {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": _MANAGE},
    {"apiGroups": ["keda.sh"], "resources": ["scaledobjects"], "verbs": _MANAGE},
    {"apiGroups": ["autoscaling.k8s.io"], "resources": ["verticalpodautoscalers"], "verbs": _MANAGE},
    {"apiGroups": ["networking.istio.io"],
     "resources": ["virtualservices", "destinationrules", "serviceentries"], "verbs": _MANAGE},
    {"apiGroups": ["leaderworkerset.x-k8s.io"], "resources": ["leaderworkersets"], "verbs": _MANAGE},
]
# The control plane's own namespace: it reads its ConfigMaps (recommended hardware, inference
# framework tags, service templates) and looks at its own pods.
CONTROL_NAMESPACE_RULES = [
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": _READ},
    {"apiGroups": [""], "resources": ["pods"], "verbs": _READ},
]
# Cluster-wide: node capacity and accelerator labels.
CLUSTER_RULES = [
    {"apiGroups": [""], "resources": ["nodes"], "verbs": _READ},
]


def least_privilege_rbac(binding, endpoint_namespace, control_namespace):
    """Roles, RoleBindings, a node-reading ClusterRole and its binding that replace ``binding``.

    ``binding`` is the chart's cluster-admin (Cluster)RoleBinding; its subjects get exactly the
    rules above. Returns a list of Kubernetes objects (dicts).
    """
    meta = binding.get("metadata") or {}
    base = meta.get("name") or "model-engine"
    labels = copy.deepcopy(meta.get("labels") or {})
    subjects = copy.deepcopy(binding.get("subjects") or [])

    def metadata(name, namespace=None):
        result = {"name": name}
        if namespace:
            result["namespace"] = namespace
        if labels:
            result["labels"] = copy.deepcopy(labels)
        return result

    objects = []

    def role_pair(name, namespace, rules):
        objects.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                        "metadata": metadata(name, namespace), "rules": copy.deepcopy(rules)})
        objects.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                        "metadata": metadata(name, namespace),
                        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                        "subjects": copy.deepcopy(subjects)})

    role_pair(base + "-endpoint-manager", endpoint_namespace, ENDPOINT_NAMESPACE_RULES)
    if control_namespace and control_namespace != endpoint_namespace:
        role_pair(base + "-control-plane", control_namespace, CONTROL_NAMESPACE_RULES)
    # cluster-scoped: the namespace in the name lets releases in other namespaces have their own
    cluster_name = base + "-node-reader" + (("-" + control_namespace) if control_namespace else "")
    objects.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                    "metadata": metadata(cluster_name), "rules": copy.deepcopy(CLUSTER_RULES)})
    objects.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                    "metadata": metadata(cluster_name),
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                "name": cluster_name},
                    "subjects": copy.deepcopy(subjects)})
    return objects


def _keda_secret_trigger_auth(doc, secret_name, secret_key, ca=None):
    """The chart's Redis TriggerAuthentication reads an AWS secret; on-prem it reads a Secret.

    With TLS, KEDA's Redis scalers also take the CA from the TriggerAuthentication (parameter ``ca``)
    and verify the server with it. TLS itself is switched on by the ScaledObject's ``enableTLS``
    metadata (from ``redis.enableTLS``); a ``tls`` parameter here as well would be refused by KEDA.
    """
    new = copy.deepcopy(doc)
    refs = [{"parameter": "password", "name": secret_name, "key": secret_key}]
    if ca:
        refs.append({"parameter": "ca", "name": ca["name"], "key": ca["key"]})
    new["spec"] = {"secretTargetRef": refs}
    return new


def redis_ca_secret(values):
    """``{name, key}`` of the Redis CA Secret the values mount (extraVolumes), or None."""
    for volume in (values or {}).get("extraVolumes") or []:
        if (volume or {}).get("name") == REDIS_CA_VOLUME:
            secret = volume.get("secret") or {}
            items = secret.get("items") or [{}]
            return {"name": secret.get("secretName"), "key": items[0].get("key") or REDIS_CA_FILE}
    return None


def keda_redis_auth(values, keda_served):
    """The post-renderer's ``keda_redis_secret`` setting: password (and CA) Secret refs, or None."""
    redis = (values or {}).get("redis") or {}
    if not keda_served or not redis.get("authSecretName"):
        return None
    result = {"name": redis["authSecretName"], "key": redis.get("authSecretKey") or "auth_token"}
    ca = redis_ca_secret(values) if redis.get("enableTLS") else None
    if ca:
        result["ca"] = ca
    return result


def _dump(doc, comment):
    return "---\n# Source: %s\n%s" % (comment, yaml.safe_dump(doc, default_flow_style=False, sort_keys=True))


def post_render(stream, config):
    """Transform Helm's rendered manifest stream; return ``(new_stream, report)``.

    ``config`` keys: ``served`` (list of ``group/version/Kind``), ``droppable_groups``,
    ``endpoint_namespace``, ``control_namespace``, ``replace_cluster_admin`` (default true),
    ``keda_redis_secret`` (``{name, key}`` plus optional ``ca: {name, key}``, or None).

    Documents are kept byte-for-byte unless dropped (unserved API in a droppable group) or replaced
    (cluster-admin bindings; the chart's AWS-based KEDA TriggerAuthentication when a Redis Secret is
    given). An unserved API outside the droppable groups raises PostRenderError.
    """
    served = set(config.get("served") or [])
    if not served:
        raise PostRenderError("the post-renderer got no list of served APIs; it refuses to guess")
    droppable = set(config.get("droppable_groups") or DEFAULT_DROPPABLE_GROUPS)
    endpoint_namespace = config.get("endpoint_namespace")
    control_namespace = config.get("control_namespace")
    replace_admin = config.get("replace_cluster_admin", True)
    keda_secret = config.get("keda_redis_secret") or None
    reuse_priority_classes = bool(config.get("reuse_priority_classes"))

    report = {"dropped": [], "replaced": [], "added": [], "kept": 0}
    out, problems, added = [], [], []
    for chunk in split_documents(stream):
        doc = _load(chunk)
        if not doc or "kind" not in doc or "apiVersion" not in doc:
            out.append(chunk)
            continue
        api_version, kind = str(doc["apiVersion"]), str(doc["kind"])
        if "%s/%s" % (api_version, kind) not in served:
            if api_group(api_version) in droppable:
                item = _describe(doc, chunk)
                item["reason"] = "the cluster does not serve %s %s" % (api_version, kind)
                report["dropped"].append(item)
                continue
            problems.append("%s %s %r (%s): the cluster does not serve this API; install what provides it, "
                            "or add its group to model_engine_droppable_api_groups"
                            % (api_version, kind, (doc.get("metadata") or {}).get("name"),
                               _source_of(chunk)))
            out.append(chunk)
            continue
        if replace_admin and _is_cluster_admin_binding(doc):
            if not endpoint_namespace:
                raise PostRenderError("endpoint_namespace is required to replace the cluster-admin binding")
            replacement = least_privilege_rbac(doc, endpoint_namespace, control_namespace)
            item = _describe(doc, chunk)
            item["reason"] = "bound cluster-admin; replaced by least-privilege RBAC"
            item["by"] = [_describe(obj) for obj in replacement]
            report["replaced"].append(item)
            for obj in replacement:
                if object_key(obj) not in [object_key(seen) for seen in added]:
                    added.append(obj)
            continue
        if (keda_secret and kind == "TriggerAuthentication" and api_group(api_version) == "keda.sh"
                and "awsSecretManager" in (doc.get("spec") or {})):
            new = _keda_secret_trigger_auth(doc, keda_secret["name"], keda_secret["key"], keda_secret.get("ca"))
            item = _describe(doc, chunk)
            item["reason"] = "read the Redis password from AWS Secrets Manager; now from Secret %s%s" % (
                keda_secret["name"],
                (" and the CA from Secret %s" % keda_secret["ca"]["name"]) if keda_secret.get("ca") else "")
            report["replaced"].append(item)
            out.append(_dump(new, "llmops.serving post-renderer (replaces %s)" % _source_of(chunk)))
            continue
        if reuse_priority_classes and kind == "PriorityClass":
            item = _describe(doc, chunk)
            item["reason"] = "model_engine_priority_classes is reuse: the PriorityClass of another release is used"
            report["dropped"].append(item)
            continue
        report["kept"] += 1
        out.append(chunk)
    if problems:
        raise PostRenderError("\n".join(problems))
    if out and not out[-1].endswith("\n"):
        out[-1] += "\n"
    for obj in added:
        out.append(_dump(obj, "llmops.serving post-renderer (least-privilege RBAC)"))
        report["added"].append(_describe(obj))
    return "".join(out), report


# Cluster-scoped objects of the chart whose names are the same in every release (fullname is fixed:
# FORBIDDEN_VALUES): templates/model_engine_{default,high,low}_priority_class.yaml.
CHART_PRIORITY_CLASSES = ("model-engine-default-priority", "model-engine-high-priority", "model-engine-low-priority")


def cluster_scoped_conflicts(priority_classes, release, namespace, reuse=False):
    """Problems with the chart's PriorityClasses as they exist in the cluster, before Helm runs.

    ``priority_classes``: PriorityClass objects (as k8s_info returns them). Helm refuses to install an
    object another release owns (annotations meta.helm.sh/release-name and release-namespace) with an
    ownership error; this says which object, which release, and what to do. With ``reuse`` the
    release leaves them out (post_render), so they must exist instead.
    """
    existing = dict(((obj.get("metadata") or {}).get("name"), obj) for obj in priority_classes or [])
    problems = []
    for name in CHART_PRIORITY_CLASSES:
        obj = existing.get(name)
        if obj is None:
            if reuse:
                problems.append("PriorityClass %s does not exist, but model_engine_priority_classes is reuse: set it "
                                "to create (this release then owns them), or install the release that creates "
                                "them first" % name)
            continue
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        owner = (annotations.get("meta.helm.sh/release-name"), annotations.get("meta.helm.sh/release-namespace"))
        if reuse or owner == (release, namespace):
            continue
        if owner[0]:
            problems.append(
                "PriorityClass %s belongs to Helm release %r in namespace %r, not to %r in %r: the chart gives it "
                "the same name in every release (charts/model-engine templates/model_engine_*_priority_class.yaml), "
                "so Helm would refuse to install. Either set model_engine_priority_classes: reuse (this release "
                "uses that release's PriorityClasses and leaves them out), or uninstall the other release "
                "(helm uninstall %s -n %s), or install into its namespace" % (
                    name, owner[0], owner[1], release, namespace, owner[0], owner[1]))
        else:
            problems.append(
                "PriorityClass %s exists but no Helm release owns it (no meta.helm.sh/release-name annotation): "
                "set model_engine_priority_classes: reuse to use it as it is, or delete it (kubectl delete "
                "priorityclass %s) so that this release creates it" % (name, name))
    return problems


def hook_problems(hook_manifests, served, droppable_groups=None):
    """Helm 3 does not pass hooks through the post-renderer: list the hooks it could not fix."""
    served = set(served or [])
    problems = []
    for manifest in hook_manifests or []:
        for chunk in split_documents(manifest):
            doc = _load(chunk)
            if not doc or "kind" not in doc:
                continue
            desc = "%s %s %r" % (doc.get("apiVersion"), doc.get("kind"), (doc.get("metadata") or {}).get("name"))
            if "%s/%s" % (doc.get("apiVersion"), doc.get("kind")) not in served:
                problems.append("hook %s uses an API the cluster does not serve (Helm runs hooks without the "
                                "post-renderer)" % desc)
            if _is_cluster_admin_binding(doc):
                problems.append("hook %s binds cluster-admin (Helm runs hooks without the post-renderer)" % desc)
    return problems


def manifest_objects(stream):
    """``{object_key: document text}`` for every object in a manifest stream."""
    result = {}
    for chunk in split_documents(stream or ""):
        doc = _load(chunk)
        if doc and "kind" in doc:
            result[object_key(doc)] = yaml.safe_dump(doc, default_flow_style=False, sort_keys=True)
    return result


def manifest_diff(current, planned):
    """What an upgrade from manifest ``current`` to ``planned`` adds, removes and changes."""
    before, after = manifest_objects(current), manifest_objects(planned)
    changed = sorted(key for key in set(before) & set(after) if before[key] != after[key])
    return {
        "added": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
        "changed": changed,
        "before": "".join("---\n" + before[key] for key in changed + sorted(set(before) - set(after))),
        "after": "".join("---\n" + after[key] for key in changed + sorted(set(after) - set(before))),
    }


# --------------------------------------------------------------------------- rollouts

CONTROL_PLANE_DEPLOYMENTS = ("model-engine", "model-engine-endpoint-builder", "model-engine-cacher")


def rollout_pending(deployments, expected_names=CONTROL_PLANE_DEPLOYMENTS):
    """Why each expected Deployment has not finished rolling out (an empty dict when all have).

    Complete means what ``kubectl rollout status`` waits for: the controller saw the latest spec,
    every replica runs the new template, all are available and no old replica is left.
    """
    by_name = dict(((d.get("metadata") or {}).get("name"), d) for d in deployments or [])
    pending = {}
    for name in expected_names:
        deployment = by_name.get(name)
        if deployment is None:
            pending[name] = "not found"
            continue
        spec = deployment.get("spec") or {}
        status = deployment.get("status") or {}
        want = spec.get("replicas", 1)
        generation = (deployment.get("metadata") or {}).get("generation", 0)
        if status.get("observedGeneration", 0) < generation:
            pending[name] = "the controller has not seen generation %s yet" % generation
        elif (status.get("updatedReplicas") or 0) < want:
            pending[name] = "%s of %s replicas updated" % (status.get("updatedReplicas") or 0, want)
        elif (status.get("replicas") or 0) > (status.get("updatedReplicas") or 0):
            pending[name] = "%s old replicas still terminating" % (
                (status.get("replicas") or 0) - (status.get("updatedReplicas") or 0))
        elif (status.get("availableReplicas") or 0) < want:
            pending[name] = "%s of %s updated replicas available" % (status.get("availableReplicas") or 0, want)
    return pending


# --------------------------------------------------------------------------- referenced Secrets


def secret_references(values, namespace, endpoint_namespace, keda_served=False):
    """Every Secret the release will read, as ``{namespace, name, keys, why}`` (sorted, merged)."""
    refs = {}

    def add(ns, name, key, why):
        if not name:
            return
        item = refs.setdefault((ns, name), {"namespace": ns, "name": name, "keys": [], "why": []})
        if key and key not in item["keys"]:
            item["keys"].append(key)
        if why not in item["why"]:
            item["why"].append(why)

    secrets = values.get("secrets") or {}
    add(namespace, secrets.get("kubernetesDatabaseSecretName"), "database_url", "database URL of the server")
    redis = values.get("redis") or {}
    if redis.get("authSecretName"):
        add(namespace, redis["authSecretName"], redis.get("authSecretKey") or "auth_token", "Redis password")
        if keda_served and redis.get("enableAuth"):
            add(endpoint_namespace, redis["authSecretName"], redis.get("authSecretKey") or "auth_token",
                "Redis password for KEDA's TriggerAuthentication")
    ca = redis_ca_secret(values)
    if ca:
        add(namespace, ca["name"], ca["key"], "Redis CA mounted into the gateway, endpoint builder and cacher")
        if keda_served and redis.get("authSecretName") and redis.get("enableTLS"):
            add(endpoint_namespace, ca["name"], ca["key"], "Redis CA for KEDA's TriggerAuthentication")
    for env in values.get("extraEnvVars") or []:
        ref = ((env or {}).get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            add(namespace, ref.get("name"), ref.get("key"), "environment variable %s of the server" % env.get("name"))
    for item in values.get("extraPodEnvFrom") or []:
        ref = (item or {}).get("secretRef") or {}
        add(endpoint_namespace, ref.get("name"), None, "environment of the inference pods")
    for item in values.get("imagePullSecrets") or []:
        add(namespace, (item or {}).get("name"), None, "image pull secret of the control plane")
        add(endpoint_namespace, (item or {}).get("name"), None, "image pull secret of the inference pods")
    return [refs[key] for key in sorted(refs)]


def missing_secrets(references, found):
    """Problems with the referenced Secrets. ``found`` maps ``namespace/name`` to the list of its keys
    (or None when the Secret does not exist). Never sees or returns secret values."""
    problems = []
    for ref in references:
        keys = found.get("%s/%s" % (ref["namespace"], ref["name"]))
        why = "; ".join(ref["why"])
        if keys is None:
            problems.append("Secret %s/%s does not exist (%s): create it before installing"
                            % (ref["namespace"], ref["name"], why))
            continue
        absent = [key for key in ref["keys"] if key not in keys]
        if absent:
            problems.append("Secret %s/%s lacks key(s) %s (%s)"
                            % (ref["namespace"], ref["name"], ", ".join(absent), why))
    return problems
