# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE)
"""Where a model's weights come from and where they are kept: ``resolve_source`` (Hugging Face,
a path in the cache, or S3 pulled by an init container or streamed by vLLM) and ``resolve_cache``
(hostPath, PVC, shared RWX PVC or emptyDir). Pure functions filling a model record.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.llmops.serving.plugins.module_utils.vllm_inputs import (
    VllmInputError,
    format_bytes,
    parse_bytes,
)
from ansible_collections.llmops.serving.plugins.module_utils.vllm_pod import (
    cache_owner_step,
    puller_identity,
    puller_security_context,
)

SOURCE_TYPES = ("huggingface", "s3", "path")
S3_MODES = ("pull", "stream")
CACHE_TYPES = ("hostPath", "pvc", "rwx", "emptyDir")
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


def resolve_source(report, model, spec, settings):
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


def resolve_cache(report, model, spec, settings):
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
