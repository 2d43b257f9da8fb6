"""What the vllm role removes (module_utils/vllm.py prune_targets())."""

from ansible_collections.llmops.serving.plugins.module_utils import vllm

MANAGED = {"app.kubernetes.io/managed-by": "llmops.serving.vllm"}


def obj(kind, name, model=None, api_version="v1", managed=True):
    labels = dict(MANAGED) if managed else {}
    if model:
        labels["llmops.serving/model"] = model
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": "vllm", "labels": labels}}


def names(targets):
    return [(item["kind"], item["metadata"]["name"]) for item in targets]


EXISTING = [
    obj("Deployment", "keep", "keep", "apps/v1"), obj("Service", "keep", "keep"),
    obj("HorizontalPodAutoscaler", "keep", "keep", "autoscaling/v2"),  # HPA turned off since
    obj("PersistentVolumeClaim", "keep-cache", "keep"),                # cache type changed since
    obj("Deployment", "gone", "gone", "apps/v1"), obj("Service", "gone", "gone"),
    obj("PersistentVolumeClaim", "gone-cache", "gone"),
    obj("ConfigMap", "vllm-s3-puller"),                                # no model uses S3 any more
    obj("Deployment", "someone-else", "x", "apps/v1", managed=False),
]
DESIRED = [obj("Deployment", "keep", "keep", "apps/v1"), obj("Service", "keep", "keep")]


def test_without_prune_only_stale_objects_of_listed_models_go():
    assert names(vllm.prune_targets(EXISTING, DESIRED, ["keep"])) == [("HorizontalPodAutoscaler", "keep")]


def test_prune_removes_unlisted_models_but_keeps_pvcs():
    assert names(vllm.prune_targets(EXISTING, DESIRED, ["keep"], prune=True)) == [
        ("ConfigMap", "vllm-s3-puller"), ("Deployment", "gone"), ("HorizontalPodAutoscaler", "keep"),
        ("Service", "gone")]


def test_purge_also_removes_pvcs_last():
    targets = names(vllm.prune_targets(EXISTING, DESIRED, ["keep"], prune=True, purge=True))
    assert targets[-2:] == [("PersistentVolumeClaim", "gone-cache"), ("PersistentVolumeClaim", "keep-cache")]
    assert ("Deployment", "someone-else") not in targets


def test_looped_k8s_info_results_are_understood():
    listing = [{"item": {"api_version": "apps/v1", "kind": "Deployment"},
                "resources": [{"metadata": {"name": "gone", "namespace": "vllm",
                                            "labels": dict(MANAGED, **{"llmops.serving/model": "gone"})}}]},
               {"item": {"api_version": "v1", "kind": "Service"}, "resources": []},
               {"skipped": True, "item": {"kind": "Ingress"}}]
    assert vllm.prune_targets(listing, [], [], prune=True) == [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "gone", "namespace": "vllm"}}]


def test_pod_problems_explain_a_stuck_rollout():
    pods = [
        {"metadata": {"name": "a"}, "status": {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": "0/8 nodes are available: 4 Insufficient nvidia.com/gpu."}]}},
        {"metadata": {"name": "b"}, "status": {"phase": "Pending", "initContainerStatuses": [
            {"name": "s3-pull", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}},
        {"metadata": {"name": "c"}, "status": {"phase": "Running", "containerStatuses": [
            {"name": "vllm", "ready": False, "state": {"running": {}}}]}},
        {"metadata": {"name": "d"}, "status": {"phase": "Pending", "containerStatuses": [
            {"name": "vllm", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}}]}},
    ]
    assert vllm.pod_problems(pods) == [
        "a: Pending - not scheduled: 0/8 nodes are available: 4 Insufficient nvidia.com/gpu.",
        "b: Pending - init container s3-pull exited 1 (Error)",
        "c: Running - container vllm runs but is not ready yet (startup or readiness probe on /health)",
        "d: Pending - container vllm ImagePullBackOff: not found",
    ]
    assert "no pods exist" in vllm.pod_problems([])[0]
