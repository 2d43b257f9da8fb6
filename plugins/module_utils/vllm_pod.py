# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE)
"""What runs in a vLLM pod, as pure functions: the vLLM command-line arguments (``render_cli_args``,
``render_extra_args`` checked against the release data), the startup / readiness / liveness probes
(``startup_probe``, ``runtime_probes``) and the cache-owner init step of the S3 puller.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math

from ansible_collections.llmops.serving.plugins.module_utils import vllm_cli
from ansible_collections.llmops.serving.plugins.module_utils.vllm_inputs import (
    VllmInputError,
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
