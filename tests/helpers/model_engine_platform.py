"""The model_engine role on the sandbox: namespaces with the Secrets its release references, the role's
variables for the pinned upstream chart (charts/model-engine of the LLM Engine checkout, see
tests/helpers/upstream.py), and cleanup.

The chart owns cluster-wide names (its PriorityClasses), so only one release
can exist at a time: every test module that installs it names its namespaces with its own prefix and
removes the leftovers of its earlier runs first (``model_engine_platform``).
"""

import base64
import contextlib
import json
import os
import shutil
import subprocess
import uuid

import yaml

from tests.helpers import upstream
from tests.helpers.sandbox import kubectl, kubectl_json, load_env, run_playbook

CHART = upstream.chart_dir()
TAG_1 = "0.9.3"
S3_KEYS = {"AWS_ACCESS_KEY_ID": "minio", "AWS_SECRET_ACCESS_KEY": "minio-secret"}


def suffix():
    return uuid.uuid4().hex[:6]


def secret(namespace, name, data, kind="Opaque"):
    """A Secret object with ``data`` (plain strings) base64-encoded."""
    return {"apiVersion": "v1", "kind": "Secret", "type": kind,
            "metadata": {"name": name, "namespace": namespace},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def namespace_object(name):
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def apply(*objects):
    kubectl("apply", "-f", "-", input_text=yaml.safe_dump_all(objects))


def uninstall_release(release_namespace):
    """``helm uninstall model-engine`` in ``release_namespace``; no error when there is none."""
    env = load_env()
    subprocess.run([env["SANDBOX_HELM"], "uninstall", "model-engine", "-n", release_namespace, "--wait"],
                   env=dict(os.environ, KUBECONFIG=env["KUBECONFIG"]), capture_output=True, check=False)


def _leftover_release_namespaces(prefix):
    """Namespaces of earlier releases (named ``prefix``...) that still own the chart's cluster-wide objects."""
    found = set()
    for kind, name in (("priorityclass", "model-engine-high-priority"),):
        result = kubectl("get", kind, name, "-o", "json", check=False)
        if result.returncode == 0:
            annotations = json.loads(result.stdout)["metadata"].get("annotations", {})
            release_namespace = annotations.get("meta.helm.sh/release-namespace", "")
            if release_namespace.startswith(prefix):
                found.add(release_namespace)
    return found


def remove_leftovers(prefix):
    """Uninstall earlier releases in namespaces named ``prefix``..., then delete cluster-wide chart objects
    they left behind when their namespace went away before the release (Helm cannot uninstall a release
    whose namespace, and so its release record, is gone)."""
    for release_namespace in _leftover_release_namespaces(prefix):
        uninstall_release(release_namespace)
    for kind in ("priorityclass", "clusterrole", "clusterrolebinding"):
        for item in kubectl_json("get", kind)["items"]:
            annotations = item["metadata"].get("annotations") or {}
            if annotations.get("meta.helm.sh/release-namespace", "").startswith(prefix):
                kubectl("delete", kind, item["metadata"]["name"], "--ignore-not-found", check=False)


def work_dir(release_namespace):
    return "/tmp/llmops-it-model-engine-" + release_namespace


def release_secrets(cp, ep):
    """The Secrets role_vars() references: database URL, Redis password, S3 keys, registry pull secret."""
    regcred = json.dumps({"auths": {"registry.local": {"auth": base64.b64encode(b"u:p").decode()}}})
    return [
        secret(cp, "llm-engine-postgres-credentials",
               {"database_url": "postgresql://llm:pw@postgres.%s:5432/llm_engine" % cp, "password": "pw"}),
        secret(cp, "redis-auth", {"password": "redis-pw"}),
        secret(cp, "llm-engine-s3", S3_KEYS),
        secret(ep, "llm-engine-s3", S3_KEYS),
        secret(cp, "regcred", {".dockerconfigjson": regcred}, "kubernetes.io/dockerconfigjson"),
        secret(ep, "regcred", {".dockerconfigjson": regcred}, "kubernetes.io/dockerconfigjson"),
    ]


@contextlib.contextmanager
def model_engine_platform(prefix, sandbox_env):
    """Control-plane and endpoint namespaces (``<prefix>cp-<suffix>``, ``<prefix>ep-<suffix>``) with the
    Secrets of ``release_secrets``; yields {cp, ep, helm, kubeconfig}. Afterwards the release, the
    namespaces and the role's work dir are removed."""
    remove_leftovers(prefix)
    tag = suffix()
    cp, ep = prefix + "cp-" + tag, prefix + "ep-" + tag
    apply(namespace_object(cp), namespace_object(ep), *release_secrets(cp, ep))
    try:
        yield {"cp": cp, "ep": ep, "helm": sandbox_env["SANDBOX_HELM"], "kubeconfig": sandbox_env["KUBECONFIG"]}
    finally:
        uninstall_release(cp)
        kubectl("delete", "namespace", cp, ep, "--wait=false", "--ignore-not-found", check=False)
        shutil.rmtree(work_dir(cp), ignore_errors=True)


def role_vars(platform, **overrides):
    """Variables of the model_engine role for the pinned upstream chart in ``platform``'s namespaces."""
    result = {
        "model_engine_chart_ref": CHART,
        "model_engine_namespace": platform["cp"],
        "model_engine_endpoint_namespace": platform["ep"],
        "model_engine_helm_binary": platform["helm"],
        "model_engine_tag": TAG_1,
        "model_engine_image_registry": "registry.local",
        "model_engine_image_repository": "registry.local/llm-engine/model-engine",
        "model_engine_inference_images": {"vllm": {"repository": "registry.local/vllm/vllm-openai",
                                                   "tag": "v0.6.3"}},
        "model_engine_image_pull_secret": "regcred",
        "model_engine_s3_endpoint_url": "http://minio.storage:9000",
        "model_engine_s3_credentials_secret": "llm-engine-s3",
        "model_engine_resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
        "model_engine_wait_timeout": 480,  # the sandbox is shared and often busy
        "model_engine_work_dir": work_dir(platform["cp"]),
        "redis_connection": {"host": "redis.%s.svc" % platform["cp"], "port": 6379, "tls": False,
                             "password_secret_name": "redis-auth", "password_secret_key": "password",
                             "namespace": platform["cp"], "url_scheme": "redis"},
        "postgres_connection": {"host": "postgres.%s.svc" % platform["cp"], "port": 5432,
                                "database": "llm_engine", "user": "llm",
                                "secret_name": "llm-engine-postgres-credentials", "password_key": "password",
                                "database_url_key": "database_url", "namespace": platform["cp"]},
        "gpu_discovery_types": {"nvidia-tesla-t4": {
            "nodes": ["sbx-t4-gfd"], "gpus_total": 1, "gpus_free": 1, "gpu_memory_mib": 15360,
            "resource_name": "nvidia.com/gpu",
            "node_selector": {"k8s.amazonaws.com/accelerator": "nvidia-tesla-t4"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "vendor": "nvidia"}},
        "gpu_discovery_recommended_hardware": {"byGpuMemoryGb": [
            {"gpu_memory_le": 12, "cpus": 4, "gpus": 1, "memory": "16Gi", "storage": "40Gi",
             "gpu_type": "nvidia-tesla-t4", "nodes_per_worker": 1}], "byModelName": []},
        "model_staging_checkpoints": {"tiny": {"checkpoint_path": "s3://models/tiny/",
                                               "manifest_key": "tiny/.manifest.json"}},
    }
    result.update(overrides)
    return result


def play(tasks_from=None):
    """A play that includes the model_engine role (its main tasks, or ``tasks_from``)."""
    role = {"name": "llmops.serving.model_engine"}
    if tasks_from:
        role["tasks_from"] = tasks_from
    return [{"hosts": "localhost", "gather_facts": False,
             "tasks": [{"name": "Run model_engine", "ansible.builtin.include_role": role}]}]


def run(platform, tasks_from=None, **kwargs):
    """Run the role (``extra_vars`` default: ``role_vars(platform)``); the run_playbook() result."""
    extra = kwargs.pop("extra_vars", None) or role_vars(platform)
    return run_playbook(play(tasks_from), extra_vars=extra, **kwargs)
