"""Self-tests of the sandbox: the real scheduler places pods by GPU capacity, selectors and taints;
volumes bind through the PV controller; MinIO speaks S3; a second `up` changes nothing."""

import json
import os
import subprocess
import sys
import time
import uuid

import pytest
import yaml
from kubernetes import client

from tests.helpers.sandbox import REPO_ROOT, kube_client, kubectl

pytestmark = pytest.mark.sandbox

SANDBOX_PY = os.path.join(REPO_ROOT, "tests", "sandbox", "sandbox.py")


@pytest.fixture(scope="module")
def api(sandbox_env):
    return client.CoreV1Api(kube_client())


@pytest.fixture(scope="module")
def apps(api):
    return client.AppsV1Api(api.api_client)


@pytest.fixture()
def namespace(api):
    name = "sbx-selftest-" + uuid.uuid4().hex[:6]
    api.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    api.delete_namespace(name)


def wait_until(predicate, timeout=60, interval=0.5, what="condition"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("timed out after %ss waiting for %s (last: %r)" % (timeout, what, last))


def gpu_deployment(name, gpus, node_selector=None, tolerations=None, resource="nvidia.com/gpu"):
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "nodeSelector": node_selector or {},
                    "tolerations": tolerations or [],
                    "containers": [{"name": "main", "image": "registry.invalid/gpu-workload:1",
                                    "resources": {"limits": {resource: str(gpus)}}}],
                },
            },
        },
    }


def create(apps, namespace, body):
    return apps.create_namespaced_deployment(namespace, body)


def pods_of(api, namespace, app):
    return api.list_namespaced_pod(namespace, label_selector="app=%s" % app).items


def test_nodes_match_fixture(api):
    with open(os.path.join(REPO_ROOT, "tests", "sandbox", "nodes.yaml"), encoding="utf-8") as handle:
        expected = {d["metadata"]["name"]: d for d in yaml.safe_load(handle)["items"]}
    nodes = {n.metadata.name: n for n in api.list_node().items}
    assert set(expected) <= set(nodes)
    for name, doc in expected.items():
        node = nodes[name]
        ready = [c.status for c in node.status.conditions if c.type == "Ready"]
        assert ready == ["True"], name
        for resource, quantity in doc["status"]["allocatable"].items():
            assert node.status.allocatable[resource] == quantity, (name, resource)
        assert node.status.node_info.kubelet_version == doc["status"]["nodeInfo"]["kubeletVersion"]


def test_gpu_pod_lands_on_t4_and_becomes_available(api, apps, namespace):
    create(apps, namespace, gpu_deployment("t4", 1, {"nvidia.com/gpu.product": "Tesla-T4"}))

    def available():
        dep = apps.read_namespaced_deployment("t4", namespace)
        return (dep.status.available_replicas or 0) >= 1

    wait_until(available, what="deployment t4 Available")
    pods = pods_of(api, namespace, "t4")
    assert [p.spec.node_name for p in pods] == ["sbx-t4-gfd"]
    assert pods[0].status.phase == "Running"


def test_too_many_gpus_stay_pending_with_insufficient_gpu(api, apps, namespace):
    create(apps, namespace, gpu_deployment("huge", 16))

    def failed_scheduling():
        events = api.list_namespaced_event(namespace, field_selector="reason=FailedScheduling").items
        return [e.message for e in events if "Insufficient nvidia.com/gpu" in e.message]

    messages = wait_until(failed_scheduling, what="FailedScheduling event")
    assert "Insufficient nvidia.com/gpu" in messages[0]
    pods = pods_of(api, namespace, "huge")
    assert len(pods) == 1 and pods[0].status.phase == "Pending" and not pods[0].spec.node_name


def test_taint_keeps_untolerating_pods_off_the_a100(api, apps, namespace):
    on_a100 = {"kubernetes.io/hostname": "sbx-a100-family"}
    create(apps, namespace, gpu_deployment("no-toleration", 1, on_a100))
    tolerate = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    create(apps, namespace, gpu_deployment("with-toleration", 1, on_a100, tolerate))

    wait_until(lambda: (apps.read_namespaced_deployment("with-toleration", namespace).status.available_replicas or 0)
               >= 1, what="tolerating deployment Available")
    assert [p.spec.node_name for p in pods_of(api, namespace, "with-toleration")] == ["sbx-a100-family"]

    def untolerated_message():
        pods = pods_of(api, namespace, "no-toleration")
        conds = [c for p in pods for c in (p.status.conditions or []) if c.type == "PodScheduled"]
        return [c.message for c in conds if c.status == "False" and "untolerated taint" in (c.message or "")]

    assert wait_until(untolerated_message, what="untolerated taint reason")
    assert all(not p.spec.node_name for p in pods_of(api, namespace, "no-toleration"))


def test_mig_resources_schedule_on_the_mig_node(api, apps, namespace):
    create(apps, namespace, gpu_deployment("mig", 1, resource="nvidia.com/mig-3g.40gb"))
    wait_until(lambda: (apps.read_namespaced_deployment("mig", namespace).status.available_replicas or 0) >= 1,
               what="MIG deployment Available")
    assert [p.spec.node_name for p in pods_of(api, namespace, "mig")] == ["sbx-h100-mig"]


def test_pvc_binds_immediately_and_after_scheduling(api, apps, namespace):
    def pvc(name, cls, modes):
        return client.V1PersistentVolumeClaim(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1PersistentVolumeClaimSpec(
                access_modes=modes, storage_class_name=cls,
                resources=client.V1VolumeResourceRequirements(requests={"storage": "5Gi"})))

    api.create_namespaced_persistent_volume_claim(namespace, pvc("shared", "sandbox-rwx", ["ReadWriteMany"]))
    wait_until(lambda: api.read_namespaced_persistent_volume_claim("shared", namespace).status.phase == "Bound",
               what="RWX claim Bound")
    bound = api.read_namespaced_persistent_volume_claim("shared", namespace)
    assert bound.status.capacity["storage"] == "5Gi"
    assert bound.status.access_modes == ["ReadWriteMany"]

    # WaitForFirstConsumer (default class): binds only once a pod using it is scheduled
    api.create_namespaced_persistent_volume_claim(namespace, pvc("cache", None, ["ReadWriteOnce"]))
    time.sleep(2)
    assert api.read_namespaced_persistent_volume_claim("cache", namespace).status.phase == "Pending"
    body = gpu_deployment("with-volume", 1, {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"})
    spec = body["spec"]["template"]["spec"]
    spec["volumes"] = [{"name": "cache", "persistentVolumeClaim": {"claimName": "cache"}}]
    spec["containers"][0]["volumeMounts"] = [{"name": "cache", "mountPath": "/cache"}]
    create(apps, namespace, body)
    wait_until(lambda: api.read_namespaced_persistent_volume_claim("cache", namespace).status.phase == "Bound",
               what="WaitForFirstConsumer claim Bound")
    claim = api.read_namespaced_persistent_volume_claim("cache", namespace)
    assert claim.spec.storage_class_name == "sandbox-hostpath"
    pv = api.read_persistent_volume(claim.spec.volume_name)
    node_terms = pv.spec.node_affinity.required.node_selector_terms
    assert node_terms[0].match_expressions[0].values == ["sbx-h100-gfd"]
    wait_until(lambda: [p.spec.node_name for p in pods_of(api, namespace, "with-volume")] == ["sbx-h100-gfd"],
               what="pod with volume scheduled")


def test_minio_round_trip_with_boto3(sandbox_env):
    import boto3
    from botocore.config import Config

    s3 = boto3.client(
        "s3", endpoint_url=sandbox_env["SANDBOX_S3_ENDPOINT"], region_name=sandbox_env["SANDBOX_S3_REGION"],
        aws_access_key_id=sandbox_env["SANDBOX_S3_ACCESS_KEY"],
        aws_secret_access_key=sandbox_env["SANDBOX_S3_SECRET_KEY"],
        config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                      response_checksum_validation="when_required"))
    bucket = "sbx-selftest-" + uuid.uuid4().hex[:6]
    s3.create_bucket(Bucket=bucket)
    try:
        payload = os.urandom(256 * 1024)
        s3.put_object(Bucket=bucket, Key="dir/blob.bin", Body=payload)
        assert s3.get_object(Bucket=bucket, Key="dir/blob.bin")["Body"].read() == payload
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
        assert keys == ["dir/blob.bin"]
    finally:
        for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=obj["Key"])
        s3.delete_bucket(Bucket=bucket)


def test_kubectl_reports_the_built_version(sandbox_env):
    out = json.loads(kubectl("version", "-o", "json").stdout)
    assert out["clientVersion"]["gitVersion"] == out["serverVersion"]["gitVersion"]
    assert out["serverVersion"]["gitVersion"].startswith("v1.3")


def test_second_up_is_a_no_op(sandbox_env):
    before = json.load(open(os.path.join(sandbox_env["SANDBOX_DIR"], "state.json")))["pids"]
    proc = subprocess.run([sys.executable, SANDBOX_PY, "up"], capture_output=True, text=True, check=True,
                          cwd=REPO_ROOT, env=dict(os.environ, LLMOPS_SANDBOX_DIR=sandbox_env["SANDBOX_DIR"]))
    assert "started" not in proc.stderr and "building" not in proc.stderr, proc.stderr
    after = json.load(open(os.path.join(sandbox_env["SANDBOX_DIR"], "state.json")))["pids"]
    assert after == before


def test_crds_come_and_go_repeatedly(sandbox_env):
    """crds.remove finishes in seconds even when the apiserver's CRD cleanup stalls (crds.stalled):
    before the retry annotation, one such stall held the cert-manager CRDs past a 180 s wait in CI."""
    from tests.sandbox import crds

    for _round in range(4):
        crds.install("cert-manager", sandbox_env)
        start = time.monotonic()
        crds.remove("cert-manager", sandbox_env, timeout=60.0)
        assert time.monotonic() - start < 30
    assert [n for n in kubectl("get", "crd", "-o", "name").stdout.split() if n.endswith(".cert-manager.io")] == []


def test_a_stalled_crd_cleanup_is_recognised():
    from tests.sandbox import crds

    def crd(reason, deleting=True):
        return {"metadata": {"deletionTimestamp": "2026-12-04T20:23:55Z"} if deleting else {},
                "status": {"conditions": [{"type": "Established", "status": "True"},
                                          {"type": "Terminating", "status": "True", "reason": reason}]}}
    assert crds.stalled(crd("InstanceDeletionFailed"))
    assert not crds.stalled(crd("InstanceDeletionInProgress"))
    assert not crds.stalled(crd("InstanceDeletionFailed", deleting=False))
    assert not crds.stalled({"metadata": {}})
