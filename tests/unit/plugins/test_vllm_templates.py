"""The vllm role's templates rendered by a real ansible-playbook run (no cluster): the manifests are
plain Kubernetes objects carrying the plan's decisions."""

import json
import os
import subprocess
import sys
import tempfile

import pytest
import yaml
from vllm_fixtures import REPO_ROOT, cluster, gpu_types

CRDS = ["servicemonitors.monitoring.coreos.com", "middlewares.traefik.io"]


def render(models, **role_vars):
    play = [{
        "hosts": "localhost", "gather_facts": False,
        "tasks": [
            {"name": "render",
             "ansible.builtin.include_role": {"name": "llmops.serving.vllm", "tasks_from": "render.yml"},
             "vars": {"_vllm_plan": "{{ vllm_models | llmops.serving.vllm_plan(_vllm_settings, test_cluster) }}"}},
            {"name": "out", "ansible.builtin.copy": {"content": "{{ _vllm_manifests | to_json }}", "dest": "{{ out }}",
                                                     "mode": "0600"}},
        ],
    }]
    tmp = tempfile.mkdtemp(prefix="vllm-render-")
    play_path = os.path.join(tmp, "play.yml")
    out = os.path.join(tmp, "manifests.json")
    with open(play_path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(play, handle)
    extra = dict(role_vars, vllm_models=models, out=out, test_cluster=cluster(crds=CRDS),
                 vllm_gpu_types=gpu_types(), vllm_is_k3s=True, vllm_gpu_type="nvidia-l40")
    vars_path = os.path.join(tmp, "vars.json")
    with open(vars_path, "w", encoding="utf-8") as handle:
        json.dump(extra, handle)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO_ROOT, "ansible.cfg"))
    proc = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), play_path, "-i", "localhost,", "-c",
         "local", "-e", "@" + vars_path, "-e", "ansible_python_interpreter=" + sys.executable],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(out, encoding="utf-8") as handle:
        return json.load(handle)


def by_kind(manifests):
    out = {}
    for item in manifests:
        out[(item["kind"], item["metadata"]["name"])] = item
    return out


@pytest.fixture(scope="module")
def manifests():
    models = [
        {"name": "llama", "source": {"type": "huggingface", "repo": "meta-llama/Llama-3.1-8B-Instruct",
                                     "revision": "abc", "token_secret": "hf-token"},
         "max_model_len": 32768, "autoscaling": {"min_replicas": 2, "max_replicas": 3}, "ingress": {"enabled": True}},
        {"name": "mixtral", "gpus": 2, "quantization": "awq", "cache_type": "pvc", "cache_size": "60Gi",
         "gpu_type": "nvidia-ampere-a100", "source": {"type": "s3", "uri": "s3://models/mixtral/"}},
    ]
    return by_kind(render(models, vllm_s3_puller_image="registry.local/llmops/ee:1",
                          vllm_service_session_affinity=True, vllm_s3_credentials_secret_name="s3"))


def test_objects_rendered_in_apply_order(manifests):
    kinds = list(manifests)
    assert kinds[0] == ("ConfigMap", "vllm-s3-puller")
    assert ("PersistentVolumeClaim", "mixtral-cache") in kinds
    assert kinds.index(("PersistentVolumeClaim", "mixtral-cache")) < kinds.index(("Deployment", "mixtral"))
    for key in [("Deployment", "llama"), ("Service", "llama"), ("HorizontalPodAutoscaler", "llama"),
                ("PodDisruptionBudget", "llama"), ("NetworkPolicy", "llama"), ("ServiceMonitor", "llama"),
                ("Middleware", "llama-strip"), ("Ingress", "llama"), ("Deployment", "mixtral")]:
        assert key in manifests, key
    assert ("HorizontalPodAutoscaler", "mixtral") not in manifests
    assert ("PodDisruptionBudget", "mixtral") not in manifests


def test_k3s_l40_deployment(manifests):
    deployment = manifests[("Deployment", "llama")]
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    pod = deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/hostname": "sbx-l40-k3s"}
    assert pod["runtimeClassName"] == "nvidia"
    assert "tolerations" not in pod
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["args"][0] == "meta-llama/Llama-3.1-8B-Instruct"
    assert container["startupProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]  # noqa: S108 - the shared-memory mount point the role must render
    assert deployment["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "vllm",
                                                             "app.kubernetes.io/instance": "llama"}


def test_a100_deployment_with_pvc_and_puller(manifests):
    deployment = manifests[("Deployment", "mixtral")]
    assert deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]["spec"]
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert "runtimeClassName" not in pod
    assert [item["name"] for item in pod["initContainers"]] == ["cache-owner", "s3-pull"]
    volumes = dict((volume["name"], volume) for volume in pod["volumes"])
    assert volumes["model-cache"]["persistentVolumeClaim"] == {"claimName": "mixtral-cache"}
    assert volumes["s3-puller"]["configMap"] == {"name": "vllm-s3-puller"}
    pvc = manifests[("PersistentVolumeClaim", "mixtral-cache")]
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "60Gi"
    assert "storageClassName" not in pvc["spec"]


def test_puller_configmap_ships_the_script(manifests):
    script = manifests[("ConfigMap", "vllm-s3-puller")]["data"]["vllm_s3_pull.py"]
    with open(os.path.join(REPO_ROOT, "roles", "vllm", "files", "vllm_s3_pull.py"), encoding="utf-8") as handle:
        assert script.rstrip("\n") == handle.read().rstrip("\n")


def test_service_ingress_and_middleware(manifests):
    service = manifests[("Service", "llama")]["spec"]
    assert service["sessionAffinity"] == "ClientIP"
    assert service["ports"] == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]
    ingress = manifests[("Ingress", "llama")]
    assert ingress["spec"]["ingressClassName"] == "traefik"
    paths = ingress["spec"]["rules"][0]["http"]["paths"]
    assert [(path["path"], path["pathType"]) for path in paths] == [("/llama/v1", "Prefix"), ("/llama/health", "Exact")]
    assert all(path["backend"]["service"] == {"name": "llama", "port": {"name": "http"}} for path in paths)
    assert ingress["metadata"]["annotations"]["traefik.ingress.kubernetes.io/router.middlewares"] == (
        "vllm-llama-strip@kubernetescrd")
    assert manifests[("Middleware", "llama-strip")]["spec"] == {"stripPrefix": {"prefixes": ["/llama"]}}
