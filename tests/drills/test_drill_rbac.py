"""Drill 7 (issue 10): what the LLM Engine gateway's ServiceAccount may do, asked of the API server.

The model_engine role installs the pinned upstream chart (charts/model-engine, tests/helpers/upstream.py)
through its post-renderer, which replaces the chart's cluster-admin binding with the least-privilege
RBAC in roles/model_engine/README.md. Every row of ``MATRIX`` is then asked of the real
kube-apiserver with ``kubectl auth can-i --as=system:serviceaccount:<ns>:model-engine``: what it must
not do (Secrets anywhere, binding or escalating roles, impersonation, exec, nodes) and what the
endpoint builder needs in the endpoint namespace.

Then a sweep over every ServiceAccount in the namespaces the drill's roles created: each may hold
only the bindings documented for it (``DOCUMENTED_BINDINGS``), and each pod's token mount is
reported against whether it talks to the API server.

The chart owns cluster-wide names (its PriorityClasses): one release per
cluster, so the drill removes leftovers of earlier drill runs first and its own release afterwards.
"""

import json
import re

import pytest
import yaml

from tests.helpers.model_engine_platform import model_engine_platform, role_vars, run
from tests.helpers.sandbox import kubectl, kubectl_json

PREFIX = "drill-rbac-"
SA = "model-engine"
KUBE_SYSTEM, DEFAULT = "kube-system", "default"
CP, EP, ALL = "<control-plane>", "<endpoint>", "<all-namespaces>"
CLUSTER = None

# (allowed?, verb, resource, namespace): asked as the gateway's ServiceAccount in the release namespace.
MATRIX = [
    # Secrets: none anywhere (the pods get theirs as env/volumes from the kubelet, not the API)
    *[(False, verb, "secrets", ns) for verb in ("get", "list", "watch")
      for ns in (KUBE_SYSTEM, DEFAULT, CP, EP, ALL)],
    (False, "create", "secrets", EP),
    # no way to more rights: RBAC objects, bind/escalate, impersonation, tokens of other accounts
    (False, "bind", "clusterroles/cluster-admin", CLUSTER),
    (False, "bind", "clusterroles/cluster-admin", EP),  # a RoleBinding in its own namespace to cluster-admin
    (False, "bind", "clusterroles", CLUSTER),
    (False, "escalate", "clusterroles", CLUSTER),
    (False, "escalate", "roles", EP),
    (False, "create", "clusterrolebindings", CLUSTER),
    (False, "create", "clusterroles", CLUSTER),
    (False, "create", "rolebindings", EP),
    (False, "create", "rolebindings", CP),
    (False, "create", "roles", EP),
    (False, "patch", "roles", EP),
    (False, "impersonate", "users", CLUSTER),
    (False, "impersonate", "groups", CLUSTER),
    (False, "impersonate", "serviceaccounts", KUBE_SYSTEM),
    (False, "create", "serviceaccounts/token", KUBE_SYSTEM),
    (False, "create", "serviceaccounts/token", CP),
    (False, "*", "*", CLUSTER),
    # workloads outside its namespaces, exec, nodes, namespaces
    (False, "create", "pods/exec", KUBE_SYSTEM),
    (False, "create", "pods/exec", DEFAULT),
    (False, "create", "pods/exec", EP),  # not needed by the builder either
    (False, "create", "pods", KUBE_SYSTEM),
    (False, "create", "deployments.apps", DEFAULT),
    (False, "create", "deployments.apps", KUBE_SYSTEM),
    (False, "create", "deployments.apps", CP),  # its own control plane is Helm's, not the gateway's
    (False, "patch", "nodes", CLUSTER),
    (False, "update", "nodes", CLUSTER),
    (False, "delete", "nodes", CLUSTER),
    (False, "patch", "nodes/status", CLUSTER),
    (False, "create", "namespaces", CLUSTER),
    (False, "delete", "namespaces", CLUSTER),
    (False, "create", "mutatingwebhookconfigurations.admissionregistration.k8s.io", CLUSTER),
    (False, "create", "customresourcedefinitions.apiextensions.k8s.io", CLUSTER),
    # what the endpoint builder needs in the endpoint namespace
    *[(True, verb, resource, EP) for verb in ("get", "list", "watch", "create", "update", "patch", "delete")
      for resource in ("deployments.apps", "services", "configmaps", "horizontalpodautoscalers.autoscaling",
                       "poddisruptionbudgets.policy", "jobs.batch")],
    (True, "list", "replicasets.apps", EP),
    (True, "delete", "pods", EP),
    (True, "get", "pods/log", EP),
    (True, "list", "events", EP),
    # and in its own namespace: read its ConfigMaps (hardware, service templates) and pods
    (True, "get", "configmaps", CP),
    (True, "list", "pods", CP),
    (False, "update", "configmaps", CP),
    # cluster-wide: read nodes (GPU capacity and accelerator labels)
    (True, "list", "nodes", CLUSTER),
    (True, "watch", "nodes", CLUSTER),
]

# The only bindings the collection gives any ServiceAccount: (kind, name, namespace) -> who.
DOCUMENTED_BINDINGS = {
    ("ClusterRoleBinding", "model-engine-node-reader-" + CP, None): ("model-engine", CP),
    ("RoleBinding", "model-engine-endpoint-manager", EP): ("model-engine", CP),
    ("RoleBinding", "model-engine-control-plane", CP): ("model-engine", CP),
}
# Pods that talk to the API server (and so need a token): the gateway, builder and cacher.
API_CLIENTS = ("model-engine", "model-engine-endpoint-builder", "model-engine-cacher")


@pytest.fixture(scope="module")
def release(sandbox_env):
    with model_engine_platform(PREFIX, sandbox_env) as platform:
        # RBAC and pod templates are there once Helm is done: no need to wait for the rollouts
        installed = run(platform, extra_vars=role_vars(platform, model_engine_wait=False))
        assert installed["rc"] == 0, (installed["stdout"] + installed["stderr"])[-5000:]
        yield platform


def _namespace(release, placeholder):
    return {CP: release["cp"], EP: release["ep"]}.get(placeholder, placeholder)


def can_i(release, verb, resource, namespace, account=None):
    account = account or "system:serviceaccount:%s:%s" % (release["cp"], SA)
    args = ["auth", "can-i", verb, resource, "--as", account]
    if namespace == ALL:
        args.append("--all-namespaces")
    elif namespace is not None:
        args += ["-n", _namespace(release, namespace)]
    answer = kubectl(*args, check=False)
    assert answer.stdout.strip() in ("yes", "no"), answer.stderr  # an error is not a "no"
    return answer.stdout.strip() == "yes"


def test_the_gateway_service_account_can_do_exactly_what_the_matrix_says(release):
    wrong = []
    for allowed, verb, resource, namespace in MATRIX:
        if can_i(release, verb, resource, namespace) != allowed:
            wrong.append("%s %s %s in %s" % ("cannot" if allowed else "CAN", verb, resource,
                                             _namespace(release, namespace) or "the cluster"))
    print("gateway ServiceAccount: %d can-i checks, %d wrong" % (len(MATRIX), len(wrong)))
    assert wrong == []


def _rights(release, account, namespace):
    answer = kubectl("auth", "can-i", "--list", "--as", account, "-n", namespace, check=False)
    assert answer.returncode == 0, answer.stderr
    return answer.stdout


def test_every_other_service_account_has_the_rights_of_an_account_nobody_bound(release):
    """Each ServiceAccount in the drill's namespaces except the gateway's (the matrix above) may do
    exactly what an account that no binding names may do (discovery, self reviews). That covers the
    inference account ``model-engine`` of the endpoint namespace: same name as the gateway's, but it
    runs user models and must not share the endpoint-manager Role."""
    checked, extra = [], []
    for namespace in (release["cp"], release["ep"]):
        baseline = _rights(release, "system:serviceaccount:%s:drill-nobody" % namespace, namespace)
        for account in kubectl_json("get", "serviceaccounts", "-n", namespace)["items"]:
            name = account["metadata"]["name"]
            if (namespace, name) == (release["cp"], SA):
                continue
            checked.append("%s/%s" % (namespace, name))
            rights = _rights(release, "system:serviceaccount:%s:%s" % (namespace, name), namespace)
            if rights != baseline:
                extra.append("%s/%s:\n%s" % (namespace, name, rights))
    print("no rights beyond the baseline: %s" % ", ".join(checked))
    assert "%s/%s" % (release["ep"], SA) in checked
    assert extra == []


def _bindings():
    found = []
    for kind in ("clusterrolebindings", "rolebindings"):
        args = ["get", kind] + (["--all-namespaces"] if kind == "rolebindings" else [])
        for item in kubectl_json(*args)["items"]:
            # Kubernetes' own defaults (e.g. service-account-issuer-discovery for all accounts)
            if item["metadata"].get("labels", {}).get("kubernetes.io/bootstrapping") != "rbac-defaults":
                found.append(item)
    return found


def _binds(binding, namespace, name):
    for subject in binding.get("subjects") or []:
        if subject.get("kind") == "ServiceAccount" and subject.get("name") == name and \
                subject.get("namespace", binding["metadata"].get("namespace")) == namespace:
            return True
        if subject.get("kind") == "Group" and subject.get("name") in (
                "system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"):
            return True
    return False


def test_every_service_account_in_the_drill_namespaces_holds_only_documented_bindings(release):
    bindings = _bindings()
    documented = dict(((kind, name.replace(CP, release["cp"]), _namespace(release, ns)),
                       (sa, _namespace(release, sa_ns)))
                      for (kind, name, ns), (sa, sa_ns) in DOCUMENTED_BINDINGS.items())
    held, undocumented = set(), []
    for namespace in (release["cp"], release["ep"]):
        for account in kubectl_json("get", "serviceaccounts", "-n", namespace)["items"]:
            name = account["metadata"]["name"]
            for binding in bindings:
                if not _binds(binding, namespace, name):
                    continue
                key = (binding["kind"], binding["metadata"]["name"], binding["metadata"].get("namespace"))
                if documented.get(key) == (name, namespace):
                    held.add(key)
                else:
                    undocumented.append("%s %s -> %s/%s (%s %s)" % (
                        key[0], key[1], namespace, name, binding["roleRef"]["kind"], binding["roleRef"]["name"]))
    assert undocumented == []
    assert held == set(documented)  # the documented bindings exist (the sweep looked at the right objects)


def _pod_templates(namespace):
    """(kind/name, pod spec) of every workload in the namespace."""
    for kind in ("deployments", "statefulsets", "daemonsets", "jobs"):
        for item in kubectl_json("get", kind, "-n", namespace)["items"]:
            yield "%s/%s" % (kind, item["metadata"]["name"]), item["spec"]["template"]["spec"]


def _mounts_token(spec, accounts):
    account = accounts.get(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default", {})
    return spec.get("automountServiceAccountToken", account.get("automountServiceAccountToken", True))


def test_only_workloads_that_call_the_api_server_mount_a_token(release):
    """The gateway, builder and cacher talk to the API server; nothing else the role runs should
    carry a ServiceAccount token."""
    mounted = {}
    for namespace in (release["cp"], release["ep"]):
        accounts = dict((a["metadata"]["name"], a)
                        for a in kubectl_json("get", "serviceaccounts", "-n", namespace)["items"])
        for workload, spec in _pod_templates(namespace):
            mounted["%s/%s" % (namespace, workload)] = _mounts_token(spec, accounts)
    print("token mounted: %s" % json.dumps(mounted, sort_keys=True))
    assert sorted(w for w, on in mounted.items() if on) == sorted(
        "%s/deployments/%s" % (release["cp"], name) for name in API_CLIENTS)


def test_endpoint_pods_the_builder_creates_would_not_mount_a_token(release):
    """The role turns token automount off on the inference service account (the chart leaves it on)."""
    templates = kubectl_json("get", "configmap", "model-engine-service-template-config", "-n", release["cp"])["data"]
    accounts = dict((a["metadata"]["name"], a)
                    for a in kubectl_json("get", "serviceaccounts", "-n", release["ep"])["items"])
    mounting, checked = [], []
    for key, text in templates.items():
        if "kind: Deployment" not in text:
            continue
        # the server fills ${NAME} placeholders (string.Template); whole-line ones stand for mapping
        # entries (${STORAGE_DICT} under resources.requests), the others for scalars
        text = re.sub(r"(?m)^\s*\$\{[A-Z_]+\}\s*$", "", text)
        doc = yaml.safe_load(text.replace("${", "").replace("}", ""))
        if doc.get("kind") != "Deployment":
            continue  # e.g. a LeaderWorkerSet template that names a Deployment in a comment or label
        spec = doc["spec"]["template"]["spec"]
        checked.append(key)
        if _mounts_token(spec, accounts):
            mounting.append(key)
    assert checked and mounting == []
