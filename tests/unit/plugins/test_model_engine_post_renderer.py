"""The model_engine post-renderer on a manifest stream: drops exactly the unserved kinds, rewrites
the cluster-admin binding, leaves everything else byte-for-byte. The script runs as Helm runs it:
a real process reading stdin and writing stdout."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from ansible_collections.llmops.serving.plugins.module_utils import model_engine_values as me

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SCRIPT = os.path.join(REPO, "roles", "model_engine", "files", "post_renderer.py")

# Shaped like Helm's output: "---\n# Source: ...\n<doc>\n" per object, with the odd formatting
# charts produce (flow maps, quoted strings, comments, trailing spaces, block scalars).
DEPLOYMENT = """---
# Source: model-engine/templates/gateway_deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: model-engine
  labels: {app: model-engine, team: "infra"}   # flow map and a comment
spec:
  replicas: 2
  selector:
    matchLabels:
      app: model-engine
  template:
    metadata:
      labels: {app: model-engine}
    spec:
      containers:
        - name: main
          image: "registry.local/model-engine:0.9.3"
          args:   [python, -m, x]\x20\x20
"""
SERVICE = """---
# Source: model-engine/templates/gateway_service.yaml
apiVersion: v1
kind: Service
metadata:
  name: model-engine
spec:
  ports:
    - {name: http, port: 80, targetPort: http}
"""
CONFIGMAP = """---
# Source: model-engine/templates/recommended_hardware_config_map.yaml
apiVersion: v1
kind: ConfigMap
metadata:
  name: model-engine-recommended-hardware-config
data:
  byGpuMemoryGb: |-
    - gpu_memory_le: 24
      gpu_type: nvidia-ampere-a10
    ---
    not a separator: it is indented inside a block scalar
"""
CRB = """---
# Source: model-engine/templates/cluster_rolebinding.yaml
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: model-engine
  labels:
    team: infra
    app.kubernetes.io/managed-by: Helm
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: cluster-admin
subjects:
  - kind: ServiceAccount
    name: model-engine
    namespace: llm-engine
"""
TELEMETRY = """---
# Source: model-engine/templates/istio-metrics.yaml
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata:
  name: model-engine-custom-tags
  namespace: istio-system
spec: {}
"""
WASM = """---
# Source: model-engine/templates/istio-metrics.yaml
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata:
  name: model-engine-attributegen
  namespace: istio-system
spec:
  phase: AUTHN
"""
SCALED = """---
# Source: model-engine/templates/x.yaml
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: x
  namespace: llm-engine-endpoints
spec: {}
"""
LWS = """---
# Source: model-engine/templates/lws.yaml
apiVersion: leaderworkerset.x-k8s.io/v1
kind: LeaderWorkerSet
metadata:
  name: lws
spec: {}
"""
VPA = """---
# Source: model-engine/templates/gateway_vpa.yaml
apiVersion: autoscaling.k8s.io/v1
kind: VerticalPodAutoscaler
metadata:
  name: model-engine
spec: {}
"""
TRIGGER_AUTH = """---
# Source: model-engine/templates/trigger_authentication.yaml
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata:
  name: keda-trigger-auth-redis-secret
  namespace: llm-engine-endpoints
spec:
  awsSecretManager:
    podIdentity:
      provider: aws
    secrets:
      - parameter: password
        name: redis-auth
"""

CORE_SERVED = ["apps/v1/Deployment", "v1/Service", "v1/ConfigMap", "v1/ServiceAccount",
               "rbac.authorization.k8s.io/v1/ClusterRoleBinding", "rbac.authorization.k8s.io/v1/ClusterRole",
               "rbac.authorization.k8s.io/v1/Role", "rbac.authorization.k8s.io/v1/RoleBinding",
               "batch/v1/Job", "scheduling.k8s.io/v1/PriorityClass"]
ISTIO_SERVED = ["telemetry.istio.io/v1alpha1/Telemetry", "extensions.istio.io/v1alpha1/WasmPlugin"]
KEDA_SERVED = ["keda.sh/v1alpha1/ScaledObject", "keda.sh/v1alpha1/TriggerAuthentication"]


def config(served, **extra):
    result = {"served": served, "endpoint_namespace": "llm-engine-endpoints",
              "control_namespace": "llm-engine"}
    result.update(extra)
    return result


def docs(stream):
    return [doc for doc in yaml.safe_load_all(stream) if doc]


def test_split_documents_round_trips_exactly():
    stream = "# leading comment\n" + DEPLOYMENT + SERVICE + CONFIGMAP + CRB + "--- # trailing doc\nkind: x\n"
    chunks = me.split_documents(stream)
    assert "".join(chunks) == stream
    assert len(chunks) == 6  # the indented '---' inside the block scalar does not split


def test_drops_exactly_the_unserved_kinds_and_keeps_the_rest_byte_for_byte():
    stream = DEPLOYMENT + TELEMETRY + SERVICE + WASM + CONFIGMAP + SCALED + LWS + VPA
    out, report = me.post_render(stream, config(CORE_SERVED))
    assert out == DEPLOYMENT + SERVICE + CONFIGMAP
    dropped = sorted((item["kind"], item["name"]) for item in report["dropped"])
    assert dropped == [("LeaderWorkerSet", "lws"), ("ScaledObject", "x"), ("Telemetry", "model-engine-custom-tags"),
                       ("VerticalPodAutoscaler", "model-engine"), ("WasmPlugin", "model-engine-attributegen")]
    assert report["dropped"][0]["source"] == "model-engine/templates/istio-metrics.yaml"
    assert report["kept"] == 3


def test_keeps_istio_and_keda_objects_when_the_cluster_serves_them():
    stream = DEPLOYMENT + TELEMETRY + WASM + SCALED
    out, report = me.post_render(stream, config(CORE_SERVED + ISTIO_SERVED + KEDA_SERVED))
    assert out == stream
    assert report["dropped"] == []


def test_served_version_matters_not_just_the_group():
    telemetry_v1 = ["telemetry.istio.io/v1/Telemetry", "extensions.istio.io/v1alpha1/WasmPlugin"]
    out, report = me.post_render(TELEMETRY + WASM, config(CORE_SERVED + telemetry_v1))
    assert out == WASM
    assert [item["kind"] for item in report["dropped"]] == ["Telemetry"]


def test_unserved_api_outside_droppable_groups_fails_loudly():
    custom = "---\n# Source: model-engine/templates/ingress.yaml\napiVersion: example.com/v1\nkind: Gizmo\n" \
             "metadata:\n  name: g\n"
    with pytest.raises(me.PostRenderError) as info:
        me.post_render(DEPLOYMENT + custom, config(CORE_SERVED))
    assert "example.com/v1 Gizmo 'g'" in str(info.value)
    assert "model_engine_droppable_api_groups" in str(info.value)


def test_refuses_to_guess_without_discovery():
    with pytest.raises(me.PostRenderError):
        me.post_render(DEPLOYMENT, config([]))


def test_cluster_admin_binding_is_replaced_by_least_privilege_rbac():
    out, report = me.post_render(DEPLOYMENT + CRB + SERVICE, config(CORE_SERVED))
    assert out.startswith(DEPLOYMENT + SERVICE)
    objects = docs(out)
    rbac = [o for o in objects if o["apiVersion"].startswith("rbac.")]
    kinds = sorted((o["kind"], o["metadata"]["name"], o["metadata"].get("namespace")) for o in rbac)
    assert kinds == [
        ("ClusterRole", "model-engine-node-reader-llm-engine", None),
        ("ClusterRoleBinding", "model-engine-node-reader-llm-engine", None),
        ("Role", "model-engine-control-plane", "llm-engine"),
        ("Role", "model-engine-endpoint-manager", "llm-engine-endpoints"),
        ("RoleBinding", "model-engine-control-plane", "llm-engine"),
        ("RoleBinding", "model-engine-endpoint-manager", "llm-engine-endpoints"),
    ]
    for obj in rbac:
        if obj["kind"].endswith("Binding"):
            assert obj["subjects"] == [{"kind": "ServiceAccount", "name": "model-engine",
                                        "namespace": "llm-engine"}]
            assert obj["roleRef"]["name"] != "cluster-admin"
        assert obj["metadata"]["labels"]["team"] == "infra"
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in rbac}
    cluster_rules = by_name[("ClusterRole", "model-engine-node-reader-llm-engine")]["rules"]
    assert cluster_rules == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}]
    endpoint_rules = by_name[("Role", "model-engine-endpoint-manager")]["rules"]
    granted = {(group, resource): set(rule["verbs"]) for rule in endpoint_rules
               for group in rule["apiGroups"] for resource in rule["resources"]}
    assert {"create", "delete", "patch"} <= granted[("apps", "deployments")]
    assert ("", "secrets") not in granted
    all_verbs = set().union(*granted.values())
    assert not all_verbs & {"*", "escalate", "bind", "impersonate"}
    assert [item["name"] for item in report["replaced"]] == ["model-engine"]
    assert len(report["added"]) == 6


def test_other_bindings_are_left_alone():
    view = CRB.replace("name: cluster-admin", "name: view")
    out, report = me.post_render(view, config(CORE_SERVED))
    assert out == view and report["replaced"] == []


def test_keda_trigger_authentication_reads_the_redis_secret():
    out, report = me.post_render(DEPLOYMENT + TRIGGER_AUTH,
                                 config(CORE_SERVED + KEDA_SERVED,
                                        keda_redis_secret={"name": "redis-auth", "key": "password"}))
    objects = docs(out)
    trigger = [o for o in objects if o["kind"] == "TriggerAuthentication"][0]
    assert trigger["spec"] == {"secretTargetRef": [{"parameter": "password", "name": "redis-auth",
                                                    "key": "password"}]}
    assert trigger["metadata"]["name"] == "keda-trigger-auth-redis-secret"
    assert out.startswith(DEPLOYMENT)


def test_keda_trigger_authentication_reads_the_redis_ca_with_tls():
    out, report = me.post_render(DEPLOYMENT + TRIGGER_AUTH, config(
        CORE_SERVED + KEDA_SERVED, keda_redis_secret={"name": "redis-auth", "key": "password",
                                                      "ca": {"name": "redis-ca", "key": "ca.crt"}}))
    trigger = [o for o in docs(out) if o["kind"] == "TriggerAuthentication"][0]
    assert trigger["spec"] == {"secretTargetRef": [
        {"parameter": "password", "name": "redis-auth", "key": "password"},
        {"parameter": "ca", "name": "redis-ca", "key": "ca.crt"}]}
    # no `tls` parameter: KEDA refuses it next to the ScaledObject's enableTLS
    assert "tls" not in [ref["parameter"] for ref in trigger["spec"]["secretTargetRef"]]
    assert "and the CA from Secret redis-ca" in report["replaced"][0]["reason"]


def test_hook_problems():
    hook_crb = CRB
    assert me.hook_problems([hook_crb, TELEMETRY], CORE_SERVED) == [
        "hook rbac.authorization.k8s.io/v1 ClusterRoleBinding 'model-engine' binds cluster-admin "
        "(Helm runs hooks without the post-renderer)",
        "hook telemetry.istio.io/v1alpha1 Telemetry 'model-engine-custom-tags' uses an API the cluster "
        "does not serve (Helm runs hooks without the post-renderer)",
    ]
    assert me.hook_problems([CONFIGMAP], CORE_SERVED) == []


def test_manifest_diff():
    changed = DEPLOYMENT.replace("0.9.3", "0.9.4")
    diff = me.manifest_diff(DEPLOYMENT + SERVICE, changed + CONFIGMAP)
    assert diff["changed"] == ["apps/v1/Deployment//model-engine"]
    assert diff["added"] == ["v1/ConfigMap//model-engine-recommended-hardware-config"]
    assert diff["removed"] == ["v1/Service//model-engine"]
    assert "0.9.3" in diff["before"] and "0.9.4" in diff["after"]
    assert me.manifest_diff(DEPLOYMENT, DEPLOYMENT)["changed"] == []


# --------------------------------------------------------------------------- the script, as Helm runs it


def run_script(tmp_path, stream, cfg, use_env=False):
    report = tmp_path / "report.json"
    cfg = dict(cfg, report_path=str(report))
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    env = dict(os.environ)
    args = [sys.executable, SCRIPT]
    if use_env:
        env["LLMOPS_MODEL_ENGINE_POST_RENDER_CONFIG"] = str(path)
    else:
        args += ["--config", str(path)]
    proc = subprocess.run(args, input=stream, text=True, capture_output=True, env=env, check=False)
    return proc, (json.loads(report.read_text()) if report.exists() else None)


def test_script_filters_stdin_to_stdout_and_writes_the_report(tmp_path):
    stream = DEPLOYMENT + TELEMETRY + CRB + WASM + SERVICE
    proc, report = run_script(tmp_path, stream, config(CORE_SERVED))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(DEPLOYMENT + SERVICE)
    assert "cluster-admin" not in proc.stdout
    assert [item["kind"] for item in report["dropped"]] == ["Telemetry", "WasmPlugin"]
    assert report["replaced"][0]["kind"] == "ClusterRoleBinding"


def test_script_reads_its_config_from_the_environment(tmp_path):
    proc, report = run_script(tmp_path, DEPLOYMENT + TELEMETRY, config(CORE_SERVED), use_env=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == DEPLOYMENT
    assert len(report["dropped"]) == 1


def test_script_fails_with_a_message_helm_shows(tmp_path):
    custom = "---\napiVersion: example.com/v1\nkind: Gizmo\nmetadata:\n  name: g\n"
    proc, report = run_script(tmp_path, DEPLOYMENT + custom, config(CORE_SERVED))
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "refusing to install" in proc.stderr and "Gizmo" in proc.stderr
    assert report is None


def test_script_without_config_explains_itself(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LLMOPS_MODEL_ENGINE_POST_RENDER_CONFIG"}
    proc = subprocess.run([sys.executable, SCRIPT], input="", text=True, capture_output=True, env=env, check=False)
    assert proc.returncode == 2
    assert "--config" in proc.stderr


def test_script_is_executable_with_a_shebang_ansible_test_accepts():
    # ansible-test's shebang sanity test allows `#!/usr/bin/env python` (not python3) outside
    # modules; the role runs the script through a wrapper with an explicit interpreter anyway.
    with open(SCRIPT, encoding="utf-8") as handle:
        assert handle.readline() == "#!/usr/bin/env python\n"
    assert os.access(SCRIPT, os.X_OK)


PRIORITY_CLASS = """---
# Source: model-engine/templates/model_engine_high_priority_class.yaml
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata:
  name: "model-engine-high-priority"
value: 100000
"""


def test_priority_classes_are_kept_unless_reused():
    served = CORE_SERVED + ["scheduling.k8s.io/v1/PriorityClass"]
    out, report = me.post_render(DEPLOYMENT + PRIORITY_CLASS, config(served))
    assert out == DEPLOYMENT + PRIORITY_CLASS and report["dropped"] == []
    out, report = me.post_render(DEPLOYMENT + PRIORITY_CLASS, config(served, reuse_priority_classes=True))
    assert out == DEPLOYMENT
    assert [(d["kind"], d["name"]) for d in report["dropped"]] == [("PriorityClass", "model-engine-high-priority")]


def priority_class(name, release=None, namespace=None):
    meta = {"name": name}
    if release:
        meta["annotations"] = {"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": namespace}
    return {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": meta, "value": 1}


def test_priority_classes_of_another_release_name_the_owner_and_the_fix():
    found = [priority_class(name, "llm-engine", "llm-engine") for name in me.CHART_PRIORITY_CLASSES]
    assert me.cluster_scoped_conflicts(found, "llm-engine", "llm-engine") == []
    problems = me.cluster_scoped_conflicts(found, "model-engine", "it-me-cp-1")
    assert len(problems) == 3
    assert problems[1].startswith("PriorityClass model-engine-high-priority belongs to Helm release 'llm-engine' "
                                  "in namespace 'llm-engine'")
    assert "model_engine_priority_classes: reuse" in problems[1]
    assert "helm uninstall llm-engine -n llm-engine" in problems[1]
    assert me.cluster_scoped_conflicts(found, "model-engine", "it-me-cp-1", reuse=True) == []


def test_priority_classes_missing_or_unowned():
    assert me.cluster_scoped_conflicts([], "model-engine", "ns") == []
    missing = me.cluster_scoped_conflicts([], "model-engine", "ns", reuse=True)
    assert len(missing) == 3 and "does not exist" in missing[0]
    unowned = me.cluster_scoped_conflicts([priority_class("model-engine-low-priority")], "model-engine", "ns")
    assert unowned == [unowned[0]] and "no Helm release owns it" in unowned[0]
