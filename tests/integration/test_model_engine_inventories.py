"""The pinned upstream chart for every inventory that enables LLM Engine: the model_engine role runs in
check mode with each inventory's own variables against the sandbox (its preflight checks, the Helm
server-side dry run of the pinned chart through the post-renderer), and the values it builds pass
`helm lint`. The inventories' clusters do not exist here, so what points at them is redirected to the
sandbox: kubeconfig/context, namespaces (a test pair), the chart path (the pinned checkout) and the
S3 CA file (a temporary PEM); the facts of the redis, postgres and gpu_discovery roles are given.
Without Istio in the sandbox no Istio object and no cluster-admin binding survives the post-renderer.
"""

import json
import os
import subprocess

import pytest
import yaml

from tests.helpers import upstream
from tests.helpers.model_engine_platform import model_engine_platform, role_vars, work_dir
from tests.helpers.sandbox import REPO_ROOT, run_playbook

pytestmark = pytest.mark.sandbox


def _cluster_gateway_vars():
    with open(os.path.join(REPO_ROOT, "inventories", "cluster", "group_vars", "all", "gateway.yml"),
              encoding="utf-8") as handle:
        return yaml.safe_load(handle)


# inventory, host (--limit), extra settings the inventory's phases need
INVENTORIES = [
    ("sandbox", "localhost", {}),
    # docs/k3s-single-node.md section 5: the gateway phase on, with the settings of the cluster inventory's
    # gateway.yml and the inventory-wide names they use
    ("k3s_single_node", "localhost", dict(
        _cluster_gateway_vars(),
        llmops_phase_gateway=True, llmops_environment="k3s", llmops_registry="registry.local",
        llmops_s3_endpoint_url="http://minio.workstation.local:9000", llmops_s3_bucket="models",
        llmops_s3_secret="llm-engine-s3", llmops_pull_secret="regcred", llmops_gateway_host="llm.workstation.local",
        llmops_s3_ca_bundle="", llmops_namespace="llm-engine", llmops_endpoint_namespace="llm-engine-endpoints")),
    ("cluster", "llmops-dev", {}),
    ("cluster", "llmops-staging", {}),
    ("cluster", "llmops-prod", {}),
    ("cluster", "llmops-eks", {}),
]
PEM = "-----BEGIN CERTIFICATE-----\nMIIBdummy\n-----END CERTIFICATE-----\n"


@pytest.fixture(scope="module")
def platform(sandbox_env):
    with model_engine_platform("it-mei-", sandbox_env) as created:
        yield created


def play():
    return [{"hosts": "all", "gather_facts": False, "tasks": [
        {"name": "Run model_engine up to the server-side dry run",
         "ansible.builtin.include_role": {"name": "llmops.serving.model_engine"}},
        {"name": "Show the values", "ansible.builtin.debug": {"var": "model_engine_base_values"}}]}]


def values_of(result):
    for play_result in (result["json"] or {}).get("plays", []):
        for task in play_result.get("tasks", []):
            if task["task"]["name"] == "Show the values":
                return next(iter(task["hosts"].values()))["model_engine_base_values"]
    return None


@pytest.mark.parametrize("inventory,host,extra", INVENTORIES,
                         ids=["%s-%s" % (case[0], case[1]) for case in INVENTORIES])
def test_pinned_chart_renders_for_the_inventory(platform, sandbox_env, tmp_path, inventory, host, extra):
    ca = tmp_path / "s3-ca.pem"
    ca.write_text(PEM)
    base = role_vars(platform)
    # only what points at the inventory's cluster, and the other roles' facts, come from the test
    overrides = dict((k, base[k]) for k in (
        "model_engine_namespace", "model_engine_endpoint_namespace", "model_engine_helm_binary",
        "model_engine_work_dir",
        "redis_connection", "postgres_connection", "gpu_discovery_types", "gpu_discovery_recommended_hardware"))
    overrides.update({
        "model_engine_chart_ref": upstream.chart_dir(), "model_engine_kubeconfig": sandbox_env["KUBECONFIG"],
        "llmops_kubeconfig": sandbox_env["KUBECONFIG"], "llmops_kube_context": "llmops-sandbox",
        "llmops_s3_ca_bundle": str(ca) if inventory == "cluster" and host != "llmops-eks" else "",
        "model_engine_s3_ca_bundle": str(ca) if inventory == "cluster" and host != "llmops-eks" else "",
        "model_engine_wait": False,
    })
    overrides = dict(extra, **overrides)  # the test's redirections win over the inventory's settings
    result = run_playbook(play(), inventory=os.path.join(REPO_ROOT, "inventories", inventory), extra_vars=overrides,
                          check=True, extra_args=["--limit", host])
    assert result["rc"] == 0, (result["stdout"] + result["stderr"])[-6000:]
    values = values_of(result)
    assert values and values["config"]["file"]["launch"].startswith("/etc/llmops/")
    # helm lint of the pinned chart with exactly these values
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    lint = subprocess.run([sandbox_env["SANDBOX_HELM"], "lint", upstream.chart_dir(), "-f", str(path)],
                          capture_output=True, text=True, check=False)
    assert lint.returncode == 0 and "[ERROR]" not in lint.stdout, lint.stdout + lint.stderr
    # the dry run's manifest after the post-renderer: no Istio object, no cluster-admin binding
    report_path = os.path.join(work_dir(platform["cp"]), "post-render-report.json")
    assert os.path.exists(report_path)
    manifest_kinds = []
    for play_result in result["json"]["plays"]:
        for task in play_result["tasks"]:
            if task["task"]["name"].endswith("Render the release with Helm's server-side dry run"):
                release = json.loads(next(iter(task["hosts"].values()))["stdout"])
                manifest_kinds = [(d["apiVersion"], d["kind"], (d.get("roleRef") or {}).get("name"))
                                  for d in yaml.safe_load_all(release["manifest"]) if d]
    assert manifest_kinds, "no server-side dry run found"
    assert not [k for k in manifest_kinds if "istio.io" in k[0]]
    assert not [k for k in manifest_kinds if k[2] == "cluster-admin"]
    assert ("scheduling.k8s.io/v1", "PriorityClass", None) in manifest_kinds
