"""The vllm role against the sandbox: real kube-apiserver and scheduler, kwok GPU nodes, a PVC
provisioner and MinIO.

The gpu_discovery facts are given by the test (they describe tests/sandbox/nodes.yaml, with free
GPUs read from the live cluster), so this test depends on the vllm role only.
"""

import json
import os
import subprocess
import sys
import uuid

import pytest
import yaml

from tests.helpers.sandbox import REPO_ROOT, kubectl, kubectl_json, process_env, run_playbook, total_changed

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

SUFFIX = uuid.uuid4().hex[:6]
NS = "it-vllm-%s" % SUFFIX
NS_FAIL = "it-vllm-fail-%s" % SUFFIX
GIB = 1024 ** 3
MANAGED = "app.kubernetes.io/managed-by=llmops.serving.vllm"


# ----------------------------------------------------------------------------- helpers


def free_gpus(node_name, resource="nvidia.com/gpu"):
    """Allocatable GPUs of a node minus what bound, unfinished pods request (what gpu_discovery reports)."""
    node = kubectl_json("get", "node", node_name)
    allocatable = int(node["status"]["allocatable"].get(resource, "0"))
    pods = kubectl_json("get", "pods", "-A", "--field-selector", "spec.nodeName=%s" % node_name)["items"]
    used = 0
    for pod in pods:
        if pod["status"].get("phase") in ("Succeeded", "Failed"):
            continue
        for container in pod["spec"]["containers"]:
            used += int((container.get("resources", {}).get("requests") or {}).get(resource, "0"))
    return allocatable - used


def gpu_types():
    """gpu_discovery-shaped facts for two sandbox nodes: the device-plugin-only k3s L40 node (no GPU
    labels: selected by hostname) and the tainted A100 node with family-only labels."""
    return {
        "nvidia-l40": {
            "nodes": ["sbx-l40-k3s"], "gpus_total": 4, "gpus_free": free_gpus("sbx-l40-k3s"),
            "gpu_memory_mib": 46068, "resource_name": "nvidia.com/gpu",
            "node_selector": {"kubernetes.io/hostname": "sbx-l40-k3s"}, "tolerations": [], "vendor": "nvidia",
            "ephemeral_storage_bytes_min": 1811 * GIB, "runtime_class": "nvidia",
        },
        "nvidia-ampere-a100": {
            "nodes": ["sbx-a100-family"], "gpus_total": 8, "gpus_free": free_gpus("sbx-a100-family"),
            "gpu_memory_mib": 40960, "resource_name": "nvidia.com/gpu",
            "node_selector": {"nvidia.com/gpu.family": "ampere", "nvidia.com/gpu.memory": "40960"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "vendor": "nvidia", "ephemeral_storage_bytes_min": 189 * GIB, "runtime_class": None,
        },
    }


def role_play(namespace, models, **role_vars):
    role = {"role": "llmops.serving.vllm", "vars": dict(role_vars, vllm_namespace=namespace, vllm_models=models)}
    return [{"hosts": "localhost", "gather_facts": False,
             "vars": {"gpu_discovery_types": gpu_types(), "gpu_discovery_is_k3s": False},
             "roles": [role]}]


def run_role(namespace, models, check=False, diff=False, **role_vars):
    return run_playbook(role_play(namespace, models, **role_vars), check=check, diff=diff)


def ok(run):
    if run["rc"] != 0:
        failed = [dict(task=task["task"]["name"], result=host) for play in (run["json"] or {}).get("plays", [])
                  for task in play["tasks"] for host in task["hosts"].values() if host.get("failed")]
        state = kubectl("get", "deployments,replicasets,pods,pvc", "-n", NS, "-o", "wide", check=False).stdout
        raise AssertionError("role run failed: %s\n%s\n%s" % (json.dumps(failed, indent=1)[:6000], state,
                                                              run["stderr"][-2000:]))
    return run


def names(kind, namespace):
    out = kubectl("get", kind, "-n", namespace, "-l", MANAGED, "-o", "jsonpath={.items[*].metadata.name}")
    return sorted(out.stdout.split())


def pods_of(namespace, model):
    pods = kubectl_json("get", "pods", "-n", namespace, "-l", "app.kubernetes.io/instance=%s" % model)["items"]
    return [pod for pod in pods if not pod["metadata"].get("deletionTimestamp")]


def replicasets_of(namespace, model):
    return kubectl_json("get", "replicasets", "-n", namespace, "-l", "app.kubernetes.io/instance=%s" % model)["items"]


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def runtime_class(sandbox_env):
    """k3s ships a RuntimeClass `nvidia`; the sandbox gets one for the test if it has none."""
    created = kubectl("get", "runtimeclass", "nvidia", check=False).returncode != 0
    if created:
        manifest = {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "nvidia"},
                    "handler": "nvidia"}
        kubectl("apply", "-f", "-", input_text=yaml.safe_dump(manifest))
    yield "nvidia"
    if created:
        kubectl("delete", "runtimeclass", "nvidia", "--ignore-not-found", check=False)


@pytest.fixture(scope="module")
def namespace(sandbox_env, runtime_class):
    # The S3 credentials Secret exists before the role runs (cluster_prereqs' job in site.yml).
    kubectl("create", "namespace", NS)
    kubectl("create", "secret", "generic", "s3-creds", "-n", NS, "--from-literal=AWS_ACCESS_KEY_ID=minio",
            "--from-literal=AWS_SECRET_ACCESS_KEY=minio-secret")
    yield NS
    kubectl("delete", "namespace", NS, "--wait=false", "--ignore-not-found", check=False)
    kubectl("delete", "namespace", NS_FAIL, "--wait=false", "--ignore-not-found", check=False)


MODELS = [
    # device-plugin-only k3s L40 node, hostPath cache shared by all models
    {"name": "llama-l40", "gpu_type": "nvidia-l40", "max_model_len": 32768, "enable_prefix_caching": True,
     "source": {"type": "huggingface", "repo": "meta-llama/Llama-3.1-8B-Instruct", "revision": "0e9e39f2"},
     "resources": {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "32Gi"}}},
    # labelled, tainted A100 node, one ReadWriteOnce PVC for this model, two GPUs (tensor parallel 2)
    {"name": "mixtral-a100", "gpu_type": "nvidia-ampere-a100", "gpus": 2, "quantization": "awq",
     "max_model_len": 16384, "cache_type": "pvc", "cache_size": "60Gi", "cache_storage_class": "sandbox-hostpath",
     "source": {"type": "path", "path": "mixtral-8x7b-awq", "bytes": "24Gi"},
     "resources": {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "32Gi"}}},
    # shared ReadWriteMany cache, S3 checkpoint pulled and verified by the init container
    {"name": "coder-a100", "gpu_type": "nvidia-ampere-a100", "max_model_len": 65536, "trust_remote_code": True,
     "cache_type": "rwx", "source": {"type": "s3", "checkpoint": "deepseek-coder-v2-lite"},
     "resources": {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "32Gi"}}},
]

ROLE_VARS = {
    "vllm_cache_storage_class": "sandbox-rwx",
    "vllm_cache_size": "80Gi",
    "vllm_s3_puller_image": "registry.sandbox.local/llmops/serving-ee:0.1.0",
    "vllm_s3_credentials_secret_name": "s3-creds",
    "vllm_s3_endpoint_url": "http://minio.sandbox.local:9000",
    "vllm_checkpoints": {"deepseek-coder-v2-lite": {"checkpoint_path": "s3://models/deepseek-coder-v2-lite/",
                                                    "manifest_key": "deepseek-coder-v2-lite/.llmops-manifest.json",
                                                    "total_bytes": 31 * GIB}},
    "vllm_wait_timeout": 300,
}


@pytest.fixture(scope="module")
def deployed(namespace):
    first = ok(run_role(namespace, MODELS, **ROLE_VARS))
    return first


# ----------------------------------------------------------------------------- tests


def test_first_run_creates_everything(deployed, namespace):
    assert total_changed(deployed) > 0
    assert names("deployments", namespace) == ["coder-a100", "llama-l40", "mixtral-a100"]
    assert names("services", namespace) == ["coder-a100", "llama-l40", "mixtral-a100"]
    assert names("networkpolicies", namespace) == ["coder-a100", "llama-l40", "mixtral-a100"]
    assert names("configmaps", namespace) == ["vllm-s3-puller"]
    assert names("pvc", namespace) == ["mixtral-a100-cache", "vllm-model-cache"]


def test_k3s_l40_pod_lands_with_runtime_class_and_hostname_selector(deployed, namespace):
    pods = pods_of(namespace, "llama-l40")
    assert len(pods) == 1
    pod = pods[0]
    assert pod["spec"]["nodeName"] == "sbx-l40-k3s"
    assert pod["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "sbx-l40-k3s"}
    assert pod["spec"]["runtimeClassName"] == "nvidia"
    assert not [t for t in pod["spec"].get("tolerations", []) if t.get("key") == "nvidia.com/gpu"]
    container = pod["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["args"][0] == "meta-llama/Llama-3.1-8B-Instruct"
    assert "--max-model-len" in container["args"] and "--enable-prefix-caching" in container["args"]
    volumes = dict((volume["name"], volume) for volume in pod["spec"]["volumes"])
    assert volumes["model-cache"]["hostPath"]["path"] == "/var/lib/llmops/vllm-cache"
    assert pod["status"]["phase"] == "Running"


def test_labelled_tainted_a100_pods_land_with_toleration_and_pvcs_bind(deployed, namespace):
    for model, gpus in (("mixtral-a100", "2"), ("coder-a100", "1")):
        pods = pods_of(namespace, model)
        assert len(pods) == 1, model
        pod = pods[0]
        assert pod["spec"]["nodeName"] == "sbx-a100-family"
        assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.family": "ampere", "nvidia.com/gpu.memory": "40960"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"]["tolerations"]
        assert "runtimeClassName" not in pod["spec"]
        assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == gpus
        assert pod["status"]["phase"] == "Running"
    mixtral = pods_of(namespace, "mixtral-a100")[0]["spec"]["containers"][0]["args"]
    assert mixtral[mixtral.index("--tensor-parallel-size") + 1] == "2"
    rwo = kubectl_json("get", "pvc", "mixtral-a100-cache", "-n", namespace)
    assert rwo["status"]["phase"] == "Bound" and rwo["spec"]["accessModes"] == ["ReadWriteOnce"]
    rwx = kubectl_json("get", "pvc", "vllm-model-cache", "-n", namespace)
    assert rwx["status"]["phase"] == "Bound" and rwx["spec"]["accessModes"] == ["ReadWriteMany"]
    assert rwx["spec"]["storageClassName"] == "sandbox-rwx"


def test_s3_model_gets_the_verifying_init_container(deployed, namespace):
    pod = pods_of(namespace, "coder-a100")[0]
    steps = dict((item["name"], item) for item in pod["spec"]["initContainers"])
    assert [item["name"] for item in pod["spec"]["initContainers"]] == ["cache-owner", "s3-pull"]
    init = steps["s3-pull"]
    assert init["command"] == ["python3", "/opt/llmops/vllm_s3_pull.py"]
    assert init["securityContext"]["runAsUser"] == 1000 and init["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["fsGroup"] == 1000
    assert init["args"][:4] == ["--source", "s3://models/deepseek-coder-v2-lite/", "--dest",
                                "/models/s3/models/deepseek-coder-v2-lite"]
    env = dict((item["name"], item) for item in init["env"])
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "s3-creds",
                                                                         "key": "AWS_SECRET_ACCESS_KEY"}
    assert pod["spec"]["containers"][0]["args"][0] == "/models/s3/models/deepseek-coder-v2-lite"
    # 31 GiB from the staging summary sized the startup probe
    probe = pod["spec"]["containers"][0]["startupProbe"]
    assert probe["failureThreshold"] == -(-(180 + 31 * GIB / (200 * 1024 ** 2)) // 10)


def test_second_run_changes_nothing(deployed, namespace):
    before = kubectl_json("get", "deployments", "-n", namespace)["items"]
    again = ok(run_role(namespace, MODELS, **ROLE_VARS))
    assert total_changed(again) == 0, [
        task["task"]["name"] for play in again["json"]["plays"] for task in play["tasks"]
        if any(host.get("changed") for host in task["hosts"].values())]
    after = kubectl_json("get", "deployments", "-n", namespace)["items"]
    assert [d["metadata"]["resourceVersion"] for d in before] == [d["metadata"]["resourceVersion"] for d in after]


def test_image_tag_change_in_check_mode_reports_but_changes_nothing(deployed, namespace):
    models = [dict(MODELS[0], image_tag="v0.10.3")] + MODELS[1:]
    run = ok(run_role(namespace, models, check=True, diff=True, **ROLE_VARS))
    assert total_changed(run) > 0
    deployment = kubectl_json("get", "deployment", "llama-l40", "-n", namespace)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "vllm/vllm-openai:v0.10.2"
    assert len(replicasets_of(namespace, "llama-l40")) == 1


def test_image_tag_change_rolls_out_a_new_replicaset(deployed, namespace):
    old = replicasets_of(namespace, "llama-l40")
    assert len(old) == 1
    models = [dict(MODELS[0], image_tag="v0.10.3")] + MODELS[1:]
    run = ok(run_role(namespace, models, **ROLE_VARS))
    assert total_changed(run) > 0
    sets = replicasets_of(namespace, "llama-l40")
    assert len(sets) == 2
    new = [rs for rs in sets if rs["metadata"]["name"] != old[0]["metadata"]["name"]][0]
    assert new["spec"]["template"]["spec"]["containers"][0]["image"] == "vllm/vllm-openai:v0.10.3"
    assert new["status"].get("readyReplicas") == 1
    retired = [rs for rs in sets if rs["metadata"]["name"] == old[0]["metadata"]["name"]][0]
    assert retired["spec"]["replicas"] == 0
    pods = pods_of(namespace, "llama-l40")
    assert [pod["spec"]["containers"][0]["image"] for pod in pods] == ["vllm/vllm-openai:v0.10.3"]
    # the other models were not touched
    assert len(replicasets_of(namespace, "mixtral-a100")) == 1


def test_prune_removes_only_unlisted_workloads_and_keeps_pvcs(deployed, namespace):
    kept = [dict(MODELS[0], image_tag="v0.10.3")]
    # without vllm_prune nothing of the other models goes
    run = ok(run_role(namespace, kept, **ROLE_VARS))
    assert names("deployments", namespace) == ["coder-a100", "llama-l40", "mixtral-a100"]
    run = ok(run_role(namespace, kept, vllm_prune=True, **ROLE_VARS))
    assert total_changed(run) > 0
    assert names("deployments", namespace) == ["llama-l40"]
    assert names("services", namespace) == ["llama-l40"]
    assert names("networkpolicies", namespace) == ["llama-l40"]
    assert names("configmaps", namespace) == []
    assert names("pvc", namespace) == ["mixtral-a100-cache", "vllm-model-cache"]
    assert kubectl_json("get", "secret", "s3-creds", "-n", namespace)["metadata"]["name"] == "s3-creds"
    # purge deletes the cache claims too; the listed model keeps running
    run = ok(run_role(namespace, kept, vllm_prune=True, vllm_purge=True, **ROLE_VARS))
    remaining = [pvc for pvc in names("pvc", namespace)
                 if not kubectl_json("get", "pvc", pvc, "-n", namespace)["metadata"].get("deletionTimestamp")]
    assert remaining == []
    assert names("deployments", namespace) == ["llama-l40"]
    assert len(pods_of(namespace, "llama-l40")) == 1


def test_more_gpus_than_any_node_fails_before_anything_is_created(sandbox_env):
    model = {"name": "too-big", "gpu_type": "nvidia-l40", "gpus": 5,
             "source": {"type": "huggingface", "repo": "meta-llama/Llama-3.1-70B-Instruct", "revision": "x"}}
    run = run_role(NS_FAIL, [model])
    assert run["rc"] != 0
    assert "asks 5 GPUs per replica but GPU type nvidia-l40 has 4" in run["stdout"]
    assert "nothing was changed" in run["stdout"]
    assert kubectl("get", "namespace", NS_FAIL, check=False).returncode != 0


def test_more_gpus_than_the_largest_node_fails_before_apply_even_when_the_type_total_allows(sandbox_env):
    types = gpu_types()
    types["nvidia-ampere-a100"].update(nodes=["sbx-a100-family", "sbx-h100-gfd"], gpus_total=16, gpus_free=16)
    model = {"name": "spans-nodes", "gpu_type": "nvidia-ampere-a100", "gpus": 12,
             "source": {"type": "path", "path": "big"}}
    play = role_play(NS_FAIL, [model])
    play[0]["vars"]["gpu_discovery_types"] = types
    run = run_playbook(play)
    assert run["rc"] != 0
    assert "the largest matching node (sbx-a100-family) has 8" in run["stdout"]
    assert kubectl("get", "namespace", NS_FAIL, check=False).returncode != 0


def test_s3_pull_script_verifies_against_the_staging_manifest(sandbox_env, tmp_path):
    """The init container's script pulls a model pushed by s3_model_stage, and refuses a tampered one."""
    src = tmp_path / "model"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "torch_dtype": "bfloat16",
                                                 "hidden_size": 64, "num_hidden_layers": 2}))
    (src / "model.safetensors").write_bytes(_tiny_safetensors())
    bucket = "it-vllm-%s" % SUFFIX
    prefix = "tiny-model"
    s3 = {"endpoint_url": sandbox_env["SANDBOX_S3_ENDPOINT"],
          "access_key": sandbox_env.get("SANDBOX_S3_ACCESS_KEY"),
          "secret_key": sandbox_env.get("SANDBOX_S3_SECRET_KEY")}
    push = run_playbook([{"hosts": "localhost", "gather_facts": False, "tasks": [{
        "name": "push",
        "llmops.serving.s3_model_stage": dict(s3, mode="push", bucket=bucket, prefix=prefix, src=str(src),
                                              create_bucket=True)}]}])
    assert push["rc"] == 0, push["stdout"][-4000:]
    dest = tmp_path / "cache" / "s3" / bucket / prefix
    env = process_env({"S3_ENDPOINT_URL": s3["endpoint_url"], "AWS_ACCESS_KEY_ID": s3["access_key"] or "",
                       "AWS_SECRET_ACCESS_KEY": s3["secret_key"] or "",
                       "ANSIBLE_COLLECTIONS_PATH": os.path.join(REPO_ROOT, ".collections")})
    script = os.path.join(REPO_ROOT, "roles", "vllm", "files", "vllm_s3_pull.py")
    cmd = [sys.executable, script, "--source", "s3://%s/%s/" % (bucket, prefix), "--dest", str(dest)]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, timeout=300)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["files_transferred"] == 2
    assert (dest / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, timeout=300)
    assert again.returncode == 0 and json.loads(again.stdout)["files_transferred"] == 0
    # tamper with the staged weights: the pull must refuse, naming the file
    tampered = tmp_path / "tampered.safetensors"
    tampered.write_bytes(_tiny_safetensors(fill=7))
    overwrite = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "aws"), "s3", "cp", str(tampered),
         "s3://%s/%s/model.safetensors" % (bucket, prefix), "--endpoint-url", s3["endpoint_url"]],
        env=env, capture_output=True, text=True, check=False, timeout=120)
    assert overwrite.returncode == 0, overwrite.stderr
    fresh = tmp_path / "fresh"
    refused = subprocess.run(cmd[:-1] + [str(fresh)], env=env, capture_output=True, text=True, check=False,
                             timeout=300)
    assert refused.returncode == 1
    assert "model.safetensors" in refused.stderr
    assert not (fresh / "model.safetensors").exists()


def _tiny_safetensors(fill=1):
    header = json.dumps({"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}}).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + bytes([fill]) * 64


def test_a_rollout_that_cannot_finish_fails_with_the_reason(namespace):
    """What the checks cannot foresee (here a required node affinity no node meets) ends in a clear
    failure naming the pod and the scheduler's reason, not a bare timeout."""
    model = {"name": "stuck", "gpu_type": "nvidia-l40", "source": {"type": "path", "path": "stuck"},
             "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                 {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["nowhere"]}]}]}}},
             "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}
    run = run_role(namespace, [model], vllm_wait_timeout=10)
    assert run["rc"] != 0
    assert "did not roll out within 10 seconds" in run["stdout"]
    assert "stuck-" in run["stdout"] and "not scheduled" in run["stdout"]
    kubectl("delete", "deployment", "stuck", "-n", namespace, "--ignore-not-found", check=False)


def test_check_mode_on_a_new_namespace_creates_nothing(sandbox_env):
    model = {"name": "dry", "gpu_type": "nvidia-l40", "source": {"type": "path", "path": "dry"},
             "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}
    run = ok(run_role(NS_FAIL, [model], check=True, diff=True))
    assert total_changed(run) > 0
    assert kubectl("get", "namespace", NS_FAIL, check=False).returncode != 0


def test_autoscaling_on_then_off(namespace):
    """With an HPA the role does not own spec.replicas (no fight with the HPA, re-run changed=0);
    turning autoscaling off removes the HPA and the PDB although vllm_prune is false."""
    model = {"name": "scaled", "gpu_type": "nvidia-ampere-a100", "source": {"type": "path", "path": "scaled"},
             "autoscaling": {"min_replicas": 2, "max_replicas": 3},
             "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}
    first = ok(run_role(namespace, [model], vllm_wait=False))
    assert total_changed(first) > 0
    hpa = kubectl_json("get", "hpa", "scaled", "-n", namespace)
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 3)
    assert kubectl_json("get", "pdb", "scaled", "-n", namespace)["spec"]["maxUnavailable"] == 1
    deployment = kubectl_json("get", "deployment", "scaled", "-n", namespace, "--show-managed-fields")
    ours = [entry for entry in deployment["metadata"]["managedFields"] if entry["manager"] == "llmops-serving-vllm"]
    assert ours and "f:replicas" not in ours[0]["fieldsV1"]["f:spec"]
    again = ok(run_role(namespace, [model], vllm_wait=False))
    assert total_changed(again) == 0
    off = dict(model, autoscaling={"enabled": False}, replicas=1)
    ok(run_role(namespace, [off], vllm_wait=False))
    assert kubectl("get", "hpa", "scaled", "-n", namespace, check=False).returncode != 0
    assert kubectl("get", "pdb", "scaled", "-n", namespace, check=False).returncode != 0
    assert kubectl_json("get", "deployment", "scaled", "-n", namespace)["spec"]["replicas"] == 1
    kubectl("delete", "deployment,service,networkpolicy", "scaled", "-n", namespace, "--ignore-not-found",
            check=False)
