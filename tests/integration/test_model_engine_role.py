"""The model_engine role against the sandbox: the pinned upstream chart (charts/model-engine of the LLM
Engine checkout, tests/helpers/upstream.py) installed through the role's post-renderer on a real
kube-apiserver.

One lifecycle test (install, second run unchanged, RBAC as the service account, check mode, tag
upgrade, rollback) because the chart owns cluster-wide names (its PriorityClasses)
and only one release can exist at a time; the other tests stop before installing.
"""

import base64
import json
import os
import shutil
import subprocess

import pytest
import yaml

from tests.helpers.model_engine_platform import (
    CHART,
    S3_KEYS,
    TAG_1,
    apply,
    model_engine_platform,
    namespace_object,
    remove_leftovers,
    role_vars,
    run,
    secret,
    suffix,
    uninstall_release,
    work_dir,
)
from tests.helpers.playbook import changed_tasks
from tests.helpers.sandbox import REPO_ROOT, kubectl, kubectl_json

pytestmark = pytest.mark.sandbox

SCRIPT = os.path.join(REPO_ROOT, "roles", "model_engine", "files", "post_renderer.py")
TAG_2 = "0.9.4"
DEPLOYMENTS = ("model-engine", "model-engine-endpoint-builder", "model-engine-cacher")
PREFIX = "it-me-"


@pytest.fixture(scope="module")
def platform(sandbox_env):
    """Two namespaces with the Secrets the release references; removed afterwards."""
    with model_engine_platform(PREFIX, sandbox_env) as created:
        yield created


def helm(platform, *args):
    proc = subprocess.run([platform["helm"], *args, "-n", platform["cp"]], capture_output=True, text=True,
                          env=dict(os.environ, KUBECONFIG=platform["kubeconfig"]), check=True)
    return proc.stdout


def history(platform):
    return json.loads(helm(platform, "history", "model-engine", "-o", "json"))


def gateway_image(platform):
    deployment = kubectl_json("get", "deployment", "model-engine", "-n", platform["cp"])
    return deployment["spec"]["template"]["spec"]["containers"][0]["image"]


def can_i(platform, verb, resource, namespace=None):
    args = ["auth", "can-i", verb, resource, "--as", "system:serviceaccount:%s:model-engine" % platform["cp"]]
    args += ["-n", namespace] if namespace else []
    result = kubectl(*args, check=False)
    return result.stdout.strip() == "yes"


def task_results(result, name):
    """Host results of the role task called ``name`` (the json callback prefixes the role name)."""
    found = []
    for play_result in (result["json"] or {}).get("plays", []):
        for task in play_result.get("tasks", []):
            task_name = task["task"]["name"]
            if task_name == name or task_name.endswith(" : " + name):
                found.extend(task["hosts"].values())
    return found


def failure_text(result):
    """The run's output, then the pods of the test namespaces (why a rollout did not finish)."""
    pods = kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout
    pods = "\n".join(line for line in pods.splitlines() if line.startswith(("NAMESPACE", PREFIX)))
    return result["stdout"] + result["stderr"] + "\n--- pods:\n" + pods


def test_lifecycle_install_idempotence_rbac_check_mode_upgrade_rollback(platform):
    cp, ep = platform["cp"], platform["ep"]

    # --- install
    first = run(platform)
    assert first["rc"] == 0, failure_text(first)[-6000:]
    assert [r["revision"] for r in history(platform)] == [1]
    for name in DEPLOYMENTS:
        deployment = kubectl_json("get", "deployment", name, "-n", cp)
        assert deployment["status"].get("availableReplicas") == 1, name
        assert deployment["spec"]["template"]["spec"].get("nodeSelector") is None  # chart default cleared
    assert gateway_image(platform) == "registry.local/llm-engine/model-engine:" + TAG_1

    # post-renderer: Istio and KEDA objects dropped (the sandbox serves neither), RBAC replaced
    manifest = helm(platform, "get", "manifest", "model-engine")
    kinds = [doc["kind"] for doc in yaml.safe_load_all(manifest) if doc]
    assert "Telemetry" not in kinds and "WasmPlugin" not in kinds and "TriggerAuthentication" not in kinds
    assert "cluster-admin" not in manifest
    assert kubectl("get", "clusterrolebinding", "model-engine", check=False).returncode != 0
    binding = kubectl_json("get", "clusterrolebinding", "model-engine-node-reader-" + cp)
    assert binding["roleRef"]["name"] == "model-engine-node-reader-" + cp
    assert kubectl_json("get", "role", "model-engine-endpoint-manager", "-n", ep)["rules"]
    shown = task_results(first, "Show what the post-renderer drops and replaces")[0]["msg"]
    assert sorted(shown["dropped"]) == ["Telemetry model-engine-custom-tags",
                                        "TriggerAuthentication keda-trigger-auth-redis-secret",
                                        "WasmPlugin model-engine-attributegen"]
    assert shown["replaced"] == ["ClusterRoleBinding model-engine"]

    # values on the cluster: on-prem config, secrets by reference only
    config = kubectl_json("get", "configmap", "model-engine-service-config", "-n", cp)["data"]
    infra = yaml.safe_load(config["infra_service_config"])
    assert infra["cloud_provider"] == "onprem" and infra["s3_bucket"] == "models"
    launch = yaml.safe_load(config["launch_service_config"])
    assert launch["endpoint_namespace"] == ep and launch["istio_enabled"] is False
    # PriorityClasses of the chart exist (endpoint ReplicaSets are refused without them) and are the release's
    for name in ("model-engine-default-priority", "model-engine-high-priority", "model-engine-low-priority"):
        annotations = kubectl_json("get", "priorityclass", name)["metadata"]["annotations"]
        assert annotations["meta.helm.sh/release-namespace"] == cp, name
    # what the server reads (DEPLOY_SERVICE_CONFIG_PATH): the role's Secret, with the password in the cache
    # URL and dd_trace_enabled a boolean
    env = dict((e["name"], e) for e in kubectl_json("get", "deployment", "model-engine", "-n", cp)
               ["spec"]["template"]["spec"]["containers"][0]["env"])
    assert env["DEPLOY_SERVICE_CONFIG_PATH"]["value"] == "/etc/llmops/service-config/service_config.yaml"
    served = kubectl_json("get", "secret", "model-engine-llmops-service-config", "-n", cp)["data"]
    served = yaml.safe_load(base64.b64decode(served["service_config.yaml"]).decode())
    assert served["cache_redis_onprem_url"] == "redis://:redis-pw@redis.%s.svc:6379/15" % cp
    assert served["dd_trace_enabled"] is False and served["gateway_namespace"] == cp
    values_text = helm(platform, "get", "values", "model-engine", "-o", "json")
    for secret_value in ("redis-pw", "minio-secret", "postgresql://"):
        assert secret_value not in values_text

    # the inference service account carries the pull secret; the gateway URL is reported
    account = kubectl_json("get", "serviceaccount", "model-engine", "-n", ep)
    assert {"name": "regcred"} in account.get("imagePullSecrets", [])
    report = task_results(first, "Report the LLM Engine gateway")[0]["msg"]
    assert report["gateway_url"] == "http://model-engine.%s.svc.cluster.local:80" % cp

    # --- second run: nothing changes
    second = run(platform)
    assert second["rc"] == 0, failure_text(second)[-6000:]
    assert changed_tasks(second) == []
    assert [r["revision"] for r in history(platform)] == [1]

    # --- least privilege, asked of the API server as the service account
    assert not can_i(platform, "get", "secrets", "kube-system")
    assert not can_i(platform, "list", "secrets", "default")
    assert not can_i(platform, "get", "secrets", ep)
    assert not can_i(platform, "create", "clusterrolebindings")
    assert not can_i(platform, "create", "rolebindings", ep)
    assert can_i(platform, "create", "deployments.apps", ep)
    assert can_i(platform, "delete", "deployments.apps", ep)
    assert can_i(platform, "patch", "services", ep)
    assert not can_i(platform, "create", "deployments.apps", "default")
    assert can_i(platform, "list", "nodes")
    assert not can_i(platform, "delete", "nodes")

    # --- check mode with a new tag: reports the change, shows the diff, installs nothing
    checked = run(platform, extra_vars=role_vars(platform, model_engine_tag=TAG_2), check=True, diff=True)
    assert checked["rc"] == 0, failure_text(checked)[-4000:]
    assert task_results(checked, "Install or upgrade the LLM Engine release")[0]["changed"] is True
    diff = task_results(checked, "Show the planned changes")[0]["msg"]
    assert "apps/v1/Deployment//model-engine" in diff["changed"]  # chart objects carry no namespace
    assert TAG_2 in diff["after"] and TAG_2 not in diff["before"]
    assert [r["revision"] for r in history(platform)] == [1]
    assert gateway_image(platform).endswith(":" + TAG_1)

    # --- upgrade by changing the tag
    upgraded = run(platform, extra_vars=role_vars(platform, model_engine_tag=TAG_2))
    assert upgraded["rc"] == 0, failure_text(upgraded)[-4000:]
    assert [r["revision"] for r in history(platform)] == [1, 2]
    for name in DEPLOYMENTS:
        deployment = kubectl_json("get", "deployment", name, "-n", cp)
        assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":" + TAG_2)
        assert deployment["status"].get("updatedReplicas") == 1 and deployment["status"].get("availableReplicas") == 1

    # --- rollback to the previous revision
    rolled = run(platform, tasks_from="rollback.yml")
    assert rolled["rc"] == 0, failure_text(rolled)[-4000:]
    revisions = history(platform)
    assert [r["revision"] for r in revisions] == [1, 2, 3]
    assert revisions[-1]["description"] == "Rollback to 1"
    assert gateway_image(platform).endswith(":" + TAG_1)
    assert "cluster-admin" not in helm(platform, "get", "manifest", "model-engine")
    for name in DEPLOYMENTS:
        status = kubectl_json("get", "deployment", name, "-n", cp)["status"]
        assert status.get("updatedReplicas") == 1 and status.get("availableReplicas") == 1

    # --- a misspelled key fails before anything changes
    bad = run(platform, extra_vars=role_vars(platform, model_engine_tag=TAG_2, model_engine_extra_values={
        "config": {"values": {"launch": {"s3_file_llm_fine_tuning_job_repository": "s3://models/ft"}}}}))
    assert bad["rc"] != 0
    assert "did you mean config.values.launch.cloud_file_llm_fine_tune_repository" in failure_text(bad)
    assert [r["revision"] for r in history(platform)] == [1, 2, 3]


def test_a_second_release_is_told_whose_priority_classes_they_are(platform, sandbox_env):
    """Issue 17: the chart names its PriorityClasses the same in every release. A second release in other
    namespaces fails before Helm runs, naming the owner and the fix (not Helm's ownership error), and
    installs with model_engine_priority_classes: reuse."""
    first = run(platform)  # installed by the lifecycle test already, or now
    assert first["rc"] == 0, failure_text(first)[-4000:]
    with model_engine_platform("it-me2-", sandbox_env) as second:
        refused = run(second, extra_vars=role_vars(second, model_engine_wait=False))
        assert refused["rc"] != 0
        text = failure_text(refused)
        assert ("PriorityClass model-engine-high-priority belongs to Helm release 'model-engine' in namespace %r"
                % platform["cp"]) in text
        assert "model_engine_priority_classes: reuse" in text
        assert "cannot be imported into the current release" not in text  # Helm never ran
        assert task_results(refused, "Install or upgrade the LLM Engine release") == []

        reused = run(second, extra_vars=role_vars(second, model_engine_wait=False,
                                                  model_engine_priority_classes="reuse"))
        assert reused["rc"] == 0, failure_text(reused)[-6000:]
        kinds = [doc["kind"] for doc in yaml.safe_load_all(helm(second, "get", "manifest", "model-engine")) if doc]
        assert "PriorityClass" not in kinds and "Deployment" in kinds
        owner = kubectl_json("get", "priorityclass", "model-engine-high-priority")["metadata"]["annotations"]
        assert owner["meta.helm.sh/release-namespace"] == platform["cp"]
        # each release has its own node-reader binding (the name carries the namespace)
        for cp in (platform["cp"], second["cp"]):
            binding = kubectl_json("get", "clusterrolebinding", "model-engine-node-reader-" + cp)
            assert binding["subjects"][0]["namespace"] == cp


def test_missing_secret_fails_before_anything_changes(platform):
    broken = role_vars(platform, model_engine_s3_credentials_secret="no-such-secret",
                       model_engine_namespace=platform["cp"])
    result = run(platform, extra_vars=broken)
    assert result["rc"] != 0
    text = failure_text(result)
    assert "Secret %s/no-such-secret does not exist" % platform["cp"] in text
    assert "Secret %s/no-such-secret does not exist" % platform["ep"] in text
    assert "minio-secret" not in text  # secret values never reach the output
    assert task_results(result, "Install or upgrade the LLM Engine release") == []


def test_post_renderer_on_real_chart_output(platform, tmp_path):
    """Contract: helm template of the pinned upstream chart with the role's values, piped through the
    post-renderer as a process, keeps every served document byte-for-byte."""
    import sys

    sys.path.insert(0, os.path.join(REPO_ROOT, ".collections"))
    from ansible_collections.llmops.serving.plugins.module_utils import model_engine_values as me

    inputs = {
        "namespace": platform["cp"], "endpoint_namespace": platform["ep"], "tag": TAG_1,
        "image_repository": "registry.local/llm-engine/model-engine",
        "inference_images": {"vllm": {"repository": "registry.local/vllm", "tag": "v0.6.3"}},
        "postgres": {"secret_name": "llm-engine-postgres-credentials", "namespace": platform["cp"]},
        "redis": {"host": "redis", "password_secret_name": "redis-auth", "password_secret_key": "password"},
        "s3_bucket": "models", "require_gpu": False,
    }
    values_path = tmp_path / "values.json"
    values_path.write_text(json.dumps(me.finalize_values(me.build_values(inputs))))
    rendered = subprocess.run([platform["helm"], "template", "model-engine", CHART, "-n", platform["cp"],
                               "-f", str(values_path)], capture_output=True, text=True, check=True).stdout
    served = me.served_api_kinds(kubectl_served_apis())
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps({"served": served, "endpoint_namespace": platform["ep"],
                                       "control_namespace": platform["cp"],
                                       "report_path": str(tmp_path / "report.json")}))
    proc = subprocess.run([sys.executable, SCRIPT, "--config", str(config_path)], input=rendered,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert sorted(item["kind"] for item in report["dropped"]) == ["Telemetry", "TriggerAuthentication", "WasmPlugin"]
    kept = [chunk for chunk in me.split_documents(rendered)
            if "kind: Telemetry" not in chunk and "kind: WasmPlugin" not in chunk
            and "kind: TriggerAuthentication" not in chunk and "name: cluster-admin" not in chunk]
    assert proc.stdout.startswith("".join(kept))
    # what remains is accepted by the API server as it is (server-side dry run)
    check = kubectl("apply", "--dry-run=server", "-f", "-", input_text=proc.stdout, check=False)
    assert check.returncode == 0, check.stderr


def kubectl_served_apis():
    """group/version -> {Kind: {}} from the API server, like k8s_cluster_info's `apis`."""
    result = {}
    for line in kubectl("api-resources", "--no-headers", "-o", "wide").stdout.splitlines():
        parts = line.split()
        # NAME [SHORTNAMES] APIVERSION NAMESPACED KIND VERBS...
        index = next(i for i, part in enumerate(parts) if part in ("true", "false"))
        result.setdefault(parts[index - 1], {})[parts[index + 1]] = {}
    return result


@pytest.fixture()
def served_platform(sandbox_env):
    """Namespaces with TLS Redis Secrets (password + CA), and Istio's and KEDA's real CRDs served.

    The CRDs are cluster-wide: they are removed again afterwards (and the test removes them itself
    half-way to see the objects dropped)."""
    from tests.sandbox import crds

    remove_leftovers(PREFIX)
    tag = suffix()
    cp, ep = PREFIX + "cp-" + tag, PREFIX + "ep-" + tag
    created_istio_system = kubectl("get", "namespace", "istio-system", check=False).returncode != 0
    objects = [namespace_object(ns) for ns in (cp, ep) + (("istio-system",) if created_istio_system else ())]
    pem = "-----BEGIN CERTIFICATE-----\nstandin\n-----END CERTIFICATE-----\n"
    for ns in (cp, ep):
        objects += [secret(ns, "redis-cluster", {"password": "redis-pw"}),
                    secret(ns, "redis-ca", {"ca.crt": pem}), secret(ns, "llm-engine-s3", S3_KEYS)]
    objects.append(secret(cp, "llm-engine-postgres-credentials",
                          {"database_url": "postgresql://llm:pw@postgres.%s:5432/llm_engine" % cp}))
    apply(*objects)
    for addon in ("istio", "keda"):
        crds.install(addon)
    yield {"cp": cp, "ep": ep, "helm": sandbox_env["SANDBOX_HELM"], "kubeconfig": sandbox_env["KUBECONFIG"],
           "crds": crds}
    uninstall_release(cp)
    for addon in ("istio", "keda"):
        crds.remove(addon)
    namespaces = [cp, ep] + (["istio-system"] if created_istio_system else [])
    kubectl("delete", "namespace", *namespaces, "--wait=false", "--ignore-not-found", check=False)
    shutil.rmtree(work_dir(cp), ignore_errors=True)


def test_istio_and_keda_served_then_removed(served_platform):
    cp, ep = served_platform["cp"], served_platform["ep"]
    tls_redis = {"host": "redis.%s.svc" % cp, "port": 6379, "tls": True, "ca_secret_name": "redis-ca",
                 "ca_secret_key": "ca.crt", "password_secret_name": "redis-cluster",
                 "password_secret_key": "password", "namespace": cp, "url_scheme": "rediss"}
    extra = role_vars(served_platform, redis_connection=tls_redis, model_engine_image_pull_secret="",
                      model_engine_istio="false")

    first = run(served_platform, extra_vars=extra)
    assert first["rc"] == 0, failure_text(first)[-6000:]
    shown = task_results(first, "Show what the post-renderer drops and replaces")[0]["msg"]
    assert shown["dropped"] == []
    assert sorted(shown["replaced"]) == ["ClusterRoleBinding model-engine",
                                         "TriggerAuthentication keda-trigger-auth-redis-secret"]
    # Helm created them, so the real CRD schemas (server-side validation) accepted them
    telemetry = kubectl_json("get", "telemetries.telemetry.istio.io", "model-engine-custom-tags", "-n", "istio-system")
    assert telemetry["spec"]["metrics"][0]["providers"] == [{"name": "prometheus"}]
    wasm = kubectl_json("get", "wasmplugins.extensions.istio.io", "model-engine-attributegen", "-n", "istio-system")
    assert wasm["spec"]["phase"] == "AUTHN"
    trigger = kubectl_json("get", "triggerauthentications.keda.sh", "keda-trigger-auth-redis-secret", "-n", ep)
    assert trigger["spec"] == {"secretTargetRef": [
        {"parameter": "password", "name": "redis-cluster", "key": "password"},
        {"parameter": "ca", "name": "redis-ca", "key": "ca.crt"}]}
    # the kept Istio documents are the chart's bytes
    manifest = helm(served_platform, "get", "manifest", "model-engine")
    assert "# Source: model-engine/templates/istio-metrics.yaml" in manifest
    # the CA is mounted where the cache URL says, in every control-plane pod
    for name in DEPLOYMENTS:
        spec = kubectl_json("get", "deployment", name, "-n", cp)["spec"]["template"]["spec"]
        volume = {"name": "llmops-redis-ca", "secret": {"secretName": "redis-ca", "defaultMode": 0o444,
                                                        "items": [{"key": "ca.crt", "path": "ca.crt"}]}}
        assert volume in spec["volumes"]
        assert {"name": "llmops-redis-ca", "mountPath": "/etc/llmops/redis-ca", "readOnly": True} in \
            spec["containers"][0]["volumeMounts"]
    launch = yaml.safe_load(kubectl_json("get", "configmap", "model-engine-service-config", "-n", cp)
                            ["data"]["launch_service_config"])
    # no query string (upstream's cache_redis_db_index reads what follows the last "/"); redis-py finds
    # the CA through SSL_CERT_FILE, the result backend through ssl_ca_certs
    assert launch["cache_redis_onprem_url"] == "rediss://redis.%s.svc:6379/15" % cp
    builder = kubectl_json("get", "deployment", "model-engine-endpoint-builder", "-n", cp)
    env = dict((e["name"], e.get("value")) for e in builder["spec"]["template"]["spec"]["containers"][0]["env"])
    assert env["SSL_CERT_FILE"] == "/etc/llmops/redis-ca/ca.crt"
    assert env["CELERY_RESULT_BACKEND"] == (
        "rediss://:$(REDIS_AUTH_TOKEN)@redis.%s.svc:6379/14?ssl_cert_reqs=required"
        "&ssl_ca_certs=%%2Fetc%%2Fllmops%%2Fredis-ca%%2Fca.crt" % cp)

    # --- the add-ons go away: a new install drops their objects and says so. (An upgrade of a release
    # whose stored manifest holds kinds that are no longer served fails in Helm itself: it cannot map
    # the old objects. Uninstall, or reinstall the CRDs, before removing an add-on.)
    uninstall_release(cp)
    for addon in ("istio", "keda"):
        served_platform["crds"].remove(addon)
    second = run(served_platform, extra_vars=extra)
    assert second["rc"] == 0, failure_text(second)[-6000:]
    shown = task_results(second, "Show what the post-renderer drops and replaces")[0]["msg"]
    assert sorted(shown["dropped"]) == ["Telemetry model-engine-custom-tags",
                                        "TriggerAuthentication keda-trigger-auth-redis-secret",
                                        "WasmPlugin model-engine-attributegen"]
    kinds = [doc["kind"] for doc in yaml.safe_load_all(helm(served_platform, "get", "manifest", "model-engine")) if doc]
    assert "Telemetry" not in kinds and "WasmPlugin" not in kinds and "TriggerAuthentication" not in kinds
    assert [r["revision"] for r in history(served_platform)] == [1]
