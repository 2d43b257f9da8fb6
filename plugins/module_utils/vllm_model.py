# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE)
"""One ``vllm_models`` entry -> the model record the role's templates print (``resolve_model``), each
part decided by its own ``_resolve_*`` function: GPU type and parallelism, resources, autoscaling,
image and vLLM release, engine arguments, environment, probes, labels, pod, Service, PDB, Ingress.
Pure functions; problems go to the plan's report.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


from ansible_collections.llmops.serving.plugins.module_utils import vllm_cli
from ansible_collections.llmops.serving.plugins.module_utils.k8s_names import is_dns1035_label, is_valid_label_value
from ansible_collections.llmops.serving.plugins.module_utils.vllm_inputs import (
    MANAGED_BY,
    MODEL_LABEL,
    PART_OF,
    VllmInputError,
    _as_env_list,
    _merge_tolerations,
    _truthy,
    merge_env,
    parse_bytes,
    parse_cpu,
    whole_number,
)
from ansible_collections.llmops.serving.plugins.module_utils.vllm_pod import (
    extra_arg_conflicts,
    render_cli_args,
    render_extra_args,
    runtime_probes,
    startup_probe,
)
from ansible_collections.llmops.serving.plugins.module_utils.vllm_source import (
    resolve_cache,
    resolve_source,
)

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
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
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


def resolve_model(report, model, settings, seen):
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
    resolve_source(report, model, spec, settings)
    _resolve_autoscaling(report, model, spec, settings)
    _resolve_gpu(report, model, spec, settings)
    resolve_cache(report, model, spec, settings)
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
    # Decided from what the role read from the cluster, in cluster_checks (decide_runtime_class,
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
