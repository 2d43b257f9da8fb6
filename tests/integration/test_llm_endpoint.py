"""llm_endpoint, llm_endpoint_info and the llm_endpoints role against the sandbox.

The sandbox's LLM Engine stand-in (tests/sandbox/llm_engine_standin.py) creates each endpoint's
Deployment in the ``llm-engine`` namespace with LLM Engine's nodeSelector, GPU limits and toleration;
the real scheduler places the pods on kwok nodes, so "serving" means a pod really landed on the A10G
node (``k8s.amazonaws.com/accelerator=nvidia-ampere-a10``, one GPU). Each test run uses its own user
id, so its endpoints, Deployments and request-log entries are its own; every endpoint is deleted
again after each test. Faults are injected through the stand-in's admin routes, scoped to this run's
endpoint paths.
"""

import base64
import json
import time
import urllib.error
import urllib.request
import uuid

import pytest

from tests.helpers.sandbox import kubectl, kubectl_json, run_playbook, task_results, total_changed

pytestmark = pytest.mark.sandbox

NAMESPACE = "llm-engine"
ACCELERATOR = "k8s.amazonaws.com/accelerator"
A10_NODE = "sbx-eks-a10g"


def a10_nodes():
    """The A10G node, and every node gpu_discovery gave the same accelerator label (the L40 node: an L40
    runs whatever an A10 runs)."""
    carriers = kubectl_json("get", "nodes", "-l", "%s=nvidia-ampere-a10" % ACCELERATOR)["items"]
    return set([A10_NODE] + [n["metadata"]["name"] for n in carriers])


TASK = "endpoint"

BASE = {
    "model_name": "llama-3-8b-instruct",
    "inference_framework": "vllm",
    "inference_framework_image_tag": "0.6.3.post1",
    "checkpoint_path": "s3://it-llm/llama-3-8b-instruct",
    "gpus": 1,
    "gpu_type": "nvidia-ampere-a10",
    "cpus": "2",
    "memory": "8Gi",
    "storage": "20Gi",
    "nodes_per_worker": 1,
    "min_workers": 1,
    "max_workers": 2,
    "per_worker": 4,
    "labels": {"team": "it", "product": "llm-endpoint"},
    "engine_args": {"max_model_len": 4096},
    "wait_timeout": 180,
}


class Engine:
    """The stand-in as seen by this test run: its URL, our user id, and its admin routes."""

    def __init__(self, url, user):
        self.url = url.rstrip("/")
        self.user = user

    def _call(self, method, path, body=None, auth=True):
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = "Basic " + base64.b64encode(("%s:" % self.user).encode()).decode()
        request = urllib.request.Request(self.url + path, method=method, headers=headers,  # noqa: S310 - URL of the local stand-in
                                         data=json.dumps(body).encode() if body is not None else None)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - 127.0.0.1 sandbox
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def get(self, name):
        status, data = self._call("GET", "/v1/llm/model-endpoints/" + name)
        return data if status == 200 else None

    def names(self):
        return [e["name"] for e in self._call("GET", "/v1/llm/model-endpoints")[1]["model_endpoints"]]

    def delete(self, name):
        return self._call("DELETE", "/v1/llm/model-endpoints/" + name)

    def fault(self, **fault):
        status, data = self._call("POST", "/_standin/faults", fault, auth=False)
        assert status == 200, data

    def clear_faults(self):
        self._call("DELETE", "/_standin/faults", auth=False)

    def log(self, name=None):
        """Our API requests (method, path, status), oldest first, optionally only those naming ``name``."""
        entries = self._call("GET", "/_standin/requests", auth=False)[1]["requests"]
        return [(e["method"], e["path"], e["status"]) for e in entries
                if e["user"] == self.user and (name is None or name in e["path"] or name in str(e["query"]))]


@pytest.fixture(scope="module")
def engine(sandbox_env):
    url = sandbox_env.get("SANDBOX_LLM_ENGINE_URL")
    assert url, "the sandbox env has no SANDBOX_LLM_ENGINE_URL: is tests/sandbox/llm_engine_standin.py running?"
    return Engine(url, "it-llmep-" + uuid.uuid4().hex[:6])


def _our_pods(engine):
    return kubectl_json("get", "pods", "-n", NAMESPACE, "-l", "user_id=" + engine.user)["items"]


def _deployments(engine, name):
    # Found by labels: the module masks the user id (a credential) wherever it appears in its result,
    # including the deployment name the server derives from it.
    selector = "user_id=%s,endpoint_name=%s" % (engine.user, name)
    return kubectl_json("get", "deployments", "-n", NAMESPACE, "-l", selector)["items"]


@pytest.fixture
def cleanup(engine):
    yield
    engine.clear_faults()
    for name in engine.names():
        status, _answer = engine.delete(name)
        for _attempt in range(100):
            if status != 409:
                break
            time.sleep(0.2)
            status, _answer = engine.delete(name)
    deadline = time.monotonic() + 60
    while engine.names() or _our_pods(engine):
        assert time.monotonic() < deadline, "endpoints or pods of %s left behind" % engine.user
        time.sleep(0.5)


def run_endpoint(engine, check=False, diff=False, **options):
    args = {"url": engine.url, "user_id": engine.user}
    args.update(options)
    play = [{"hosts": "localhost", "gather_facts": False,
             "tasks": [{"name": TASK, "llmops.serving.llm_endpoint": args, "register": "out"}]}]
    run = run_playbook(play, check=check, diff=diff)
    results = task_results(run, TASK)
    assert results, "no result for the task:\n%s\n%s" % (run["stdout"][-3000:], run["stderr"][-3000:])
    return run, results[0]


def present(engine, name, **overrides):
    options = dict(BASE, name=name)
    options.update(overrides)
    return run_endpoint(engine, **options)


def writes(log):
    return [entry for entry in log if entry[0] in ("POST", "PUT", "DELETE")]


# ------------------------------------------------------------------------------------------------ tests

def test_create_serves_rerun_sends_nothing_and_max_workers_is_one_put(engine, cleanup):
    name = "it-serve"
    run, result = present(engine, name)
    assert run["rc"] == 0, result.get("msg")
    assert result["changed"] is True and result["operation"] == "create"
    endpoint = result["endpoint"]
    assert endpoint["status"] == "READY"
    assert endpoint["spec"]["deployment_state"]["available_workers"] >= 1

    # like LLM Engine's builder: one Deployment with the accelerator selector, GPU limit and toleration
    assert "********" in endpoint["spec"]["deployment_name"]  # the user id never shows in results
    [deployment] = _deployments(engine, name)
    assert deployment["metadata"]["name"] == engine.get(name)["spec"]["deployment_name"]
    pod_spec = deployment["spec"]["template"]["spec"]
    assert pod_spec["nodeSelector"] == {ACCELERATOR: "nvidia-ampere-a10"}
    assert pod_spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod_spec["tolerations"]
    assert deployment["metadata"]["labels"]["endpoint_name"] == name
    assert deployment["metadata"]["labels"]["user_id"] == engine.user
    pods = _our_pods(engine)
    assert [p["spec"]["nodeName"] for p in pods][0] in a10_nodes() and len(pods) == 1
    assert engine.get(name)["spec"]["metadata"]["_llm"]["vllm_additional_args"] == {"max_model_len": 4096}

    # same options again (cpus written differently): nothing to do, not one write
    before = len(engine.log(name))
    run, result = present(engine, name, cpus="2000m")
    assert run["rc"] == 0, result.get("msg")
    assert result["changed"] is False and result["operation"] == "none"
    assert total_changed(run) == 0
    assert writes(engine.log(name)[before:]) == []

    # one field changed: exactly one PUT carrying only that field
    before = len(engine.log(name))
    run, result = present(engine, name, max_workers=3)
    assert run["rc"] == 0, result.get("msg")
    assert result["changed"] is True and result["operation"] == "update"
    assert result["request_body"] == {"inference_framework": "vllm", "max_workers": 3}
    assert writes(engine.log(name)[before:]) == [("PUT", "/v1/llm/model-endpoints/" + name, 200)]
    assert engine.get(name)["spec"]["deployment_state"]["max_workers"] == 3
    assert result["endpoint"]["status"] == "READY"


def test_check_mode_and_diff_send_no_write(engine, cleanup):
    name = "it-check"
    # check mode on a missing endpoint: would create, creates nothing
    run, result = present(engine, name, check=True, diff=True)
    assert run["rc"] == 0, result.get("msg")
    assert result["changed"] is True and result["operation"] == "create"
    assert result["request_body"]["name"] == name
    assert engine.get(name) is None
    assert writes(engine.log(name)) == []

    assert present(engine, name)[0]["rc"] == 0
    before = len(engine.log(name))
    run, result = present(engine, name, per_worker=8, labels={"team": "it", "product": "other"}, check=True,
                          diff=True)
    assert run["rc"] == 0, result.get("msg")
    assert result["changed"] is True
    assert result["diff"]["before"]["per_worker"] == 4 and result["diff"]["after"]["per_worker"] == 8
    assert result["changes"]["labels"]["after"] == {"team": "it", "product": "other"}
    assert writes(engine.log(name)[before:]) == []
    assert engine.get(name)["spec"]["deployment_state"]["per_worker"] == 4

    # check mode of a delete
    run, result = run_endpoint(engine, name=name, state="absent", check=True)
    assert run["rc"] == 0 and result["changed"] is True
    assert engine.get(name) is not None
    assert writes(engine.log(name)[before:]) == []


def test_absent_deletes_and_waits_until_gone(engine, cleanup):
    name = "it-gone"
    run, result = present(engine, name)
    assert run["rc"] == 0, result.get("msg")
    assert len(_deployments(engine, name)) == 1
    run, result = run_endpoint(engine, name=name, state="absent")
    assert run["rc"] == 0, result.get("msg")
    assert result["changed"] is True and result["endpoint"] == {}
    assert engine.get(name) is None
    assert _deployments(engine, name) == []
    run, result = run_endpoint(engine, name=name, state="absent")
    assert run["rc"] == 0 and result["changed"] is False


def test_unserved_gpu_type_times_out_naming_the_pending_reason(engine, cleanup):
    gpu_type = "nvidia-hopper-h100-3g40gb"
    carriers = kubectl_json("get", "nodes", "-l", "%s=%s" % (ACCELERATOR, gpu_type))["items"]
    assert carriers == [], "precondition: no node may carry %s=%s" % (ACCELERATOR, gpu_type)
    name = "it-pending"
    started = time.monotonic()
    run, result = present(engine, name, gpu_type=gpu_type, wait_timeout=10)
    assert run["rc"] != 0
    message = result["msg"]
    assert "not serving after 10s" in message
    assert "status READY, 0/1 worker(s) available" in message
    assert "Pending (Unschedulable)" in message and "didn't match Pod's node affinity/selector" in message
    assert "k8s.amazonaws.com/accelerator=%s" % gpu_type in message
    assert time.monotonic() - started < 120


def test_injected_500_and_429_are_retried(engine, cleanup):
    name = "it-retry"
    assert present(engine, name)[0]["rc"] == 0
    path = "/v1/llm/model-endpoints/" + name
    engine.fault(status=500, count=2, methods=["GET"], path_prefix=path)
    engine.fault(status=429, count=1, methods=["GET"], path_prefix=path, retry_after=1)
    before = len(engine.log(name))
    run, result = present(engine, name)
    assert run["rc"] == 0, result.get("msg")
    assert result["changed"] is False
    statuses = [entry[2] for entry in engine.log(name)[before:]]
    assert statuses[:4] == [500, 500, 429, 200]
    assert [e["status"] for e in result["requests"]][:4] == [500, 500, 429, 200]


def test_a_request_that_hangs_is_retried_after_the_timeout(engine, cleanup):
    name = "it-hang"
    assert present(engine, name)[0]["rc"] == 0
    engine.fault(hang_seconds=4, count=1, methods=["GET"], path_prefix="/v1/llm/model-endpoints/" + name)
    run, result = present(engine, name, timeout=1)
    assert run["rc"] == 0, result.get("msg")
    assert [e["status"] for e in result["requests"]][:2] == [None, 200]


def test_injected_400_fails_at_once_with_the_server_detail(engine, cleanup):
    name = "it-bad"
    assert present(engine, name)[0]["rc"] == 0
    detail = "Requested max workers 3 refused by the stand-in"
    engine.fault(status=400, count=1, detail=detail, methods=["PUT"], path_prefix="/v1/llm/model-endpoints/" + name)
    before = len(engine.log(name))
    run, result = present(engine, name, max_workers=3)
    assert run["rc"] != 0
    assert detail in result["msg"] and result["status"] == 400 and result["detail"] == detail
    assert writes(engine.log(name)[before:]) == [("PUT", "/v1/llm/model-endpoints/" + name, 400)]


def test_update_failed_fails_fast_with_the_status_reason(engine, cleanup):
    name = "it-failed"
    engine.fault(fail_builds=1, reason="image pull failed: model-engine/vllm:0.6.3.post1 not found",
                 path_prefix="/v1/llm/model-endpoints/" + name)
    started = time.monotonic()
    run, result = present(engine, name, wait_timeout=300)
    assert run["rc"] != 0
    assert "failed to deploy" in result["msg"] and "image pull failed" in result["msg"]
    assert time.monotonic() - started < 120  # not the 300s wait_timeout


def test_validation_fails_before_any_request(engine, cleanup):
    name = "it-invalid"
    before = len(engine.log())
    run, result = present(engine, name, endpoint_type="sync", inference_framework_image_tag="latest",
                          labels={"team": "it"}, cpus="2", memory=None)
    assert run["rc"] != 0
    errors = result["errors"]
    assert any("set endpoint_type: streaming" in e for e in errors)
    assert any("pin a real tag" in e for e in errors)
    assert any("labels need 'product'" in e for e in errors)
    assert any("hardware is all or nothing" in e for e in errors)
    # only the read of the current endpoint, no write
    assert writes(engine.log()[before:]) == []

    run, result = present(engine, name, engine_args={"max_model_length": 4096})
    assert run["rc"] != 0 and "engine_args.max_model_length" in result["msg"]
    assert writes(engine.log()[before:]) == []


def test_fields_that_cannot_change_need_recreate(engine, cleanup):
    name = "it-recreate"
    run, result = present(engine, name)
    assert run["rc"] == 0, result.get("msg")
    first_id = result["endpoint"]["id"]
    before = len(engine.log(name))
    run, result = present(engine, name, endpoint_type="async")
    assert run["rc"] != 0
    assert "endpoint_type cannot be changed in place" in result["msg"] and "recreate: true" in result["msg"]
    assert writes(engine.log(name)[before:]) == []

    before = len(engine.log())
    run, result = present(engine, name, endpoint_type="async", inference_framework="sglang", engine_args=None,
                          recreate=True)
    assert run["rc"] == 0, result.get("msg")
    assert result["operation"] == "recreate"
    assert result["endpoint"]["id"] != first_id
    assert result["endpoint"]["inference_framework"] == "sglang"
    assert result["endpoint"]["spec"]["endpoint_type"] == "async"
    assert writes(engine.log()[before:]) == [("DELETE", "/v1/llm/model-endpoints/" + name, 200),
                                             ("POST", "/v1/llm/model-endpoints", 200)]


def test_info_reads_one_or_all(engine, cleanup):
    name = "it-info"
    assert present(engine, name)[0]["rc"] == 0
    for args, expected in (({"name": name}, [name]), ({"name": "it-missing"}, []), ({}, [name])):
        play = [{"hosts": "localhost", "gather_facts": False, "tasks": [
            {"name": "info", "llmops.serving.llm_endpoint_info": dict(url=engine.url, user_id=engine.user, **args)}]}]
        run = run_playbook(play)
        result = task_results(run, "info")[0]
        assert run["rc"] == 0, result.get("msg")
        assert [e["name"] for e in result["endpoints"]] == expected
        assert result["changed"] is False


def test_role_applies_all_waits_together_is_idempotent_and_smoke_tests(engine, cleanup):
    # Two endpoints need two GPUs: the A10G node has one, the tainted 8-GPU A100 node gets LLM Engine's
    # accelerator label (the value gpu_discovery sets for it) unless it already carries it. The label is
    # left in place: gpu_discovery sets the same one, and other tests may rely on it.
    a100 = kubectl_json("get", "node", "sbx-a100-family")
    current = a100["metadata"]["labels"].get(ACCELERATOR)
    assert current in (None, "nvidia-ampere-a100"), current
    if current is None:
        kubectl("label", "node", "sbx-a100-family", "%s=nvidia-ampere-a100" % ACCELERATOR)

    role_vars = {
        "llm_endpoints_url": engine.url,
        "llm_endpoints_user_id": engine.user,
        "llm_endpoints_poll_interval": 1,
        "llm_endpoints_wait_timeout": 180,
        "llm_endpoints_smoke_test": True,
        "llm_endpoints_defaults": {k: v for k, v in BASE.items() if k not in ("wait_timeout", "gpu_type")},
        "llm_endpoints_list": [
            {"name": "it-role-a10", "gpu_type": "nvidia-ampere-a10"},
            {"name": "it-role-a100", "gpu_type": "nvidia-ampere-a100", "labels": {"tier": "gold"},
             "engine_args": {"max_model_len": 8192, "enable_prefix_caching": True}},
        ],
    }
    play = [{"hosts": "localhost", "gather_facts": False, "roles": [{"role": "llmops.serving.llm_endpoints"}],
             "post_tasks": [{"name": "results", "ansible.builtin.debug": {"var": "llm_endpoints_results"}}]}]

    start = len(engine.log())
    check = run_playbook(play, extra_vars=role_vars, check=True)
    assert check["rc"] == 0, check["stdout"][-3000:]
    assert engine.names() == [] and writes(engine.log()[start:]) == []

    started = time.monotonic()
    run = run_playbook(play, extra_vars=role_vars)
    elapsed = time.monotonic() - started
    assert run["rc"] == 0, run["stdout"][-4000:]
    results = {r["name"]: r for r in task_results(run, "results")[0]["llm_endpoints_results"]}
    assert set(results) == {"it-role-a10", "it-role-a100"}
    for outcome in results.values():
        assert outcome["changed"] is True and outcome["status"] == "READY", outcome
        assert outcome["available_workers"] >= 1, outcome
    nodes = {p["metadata"]["labels"]["endpoint_name"]: p["spec"]["nodeName"] for p in _our_pods(engine)}
    assert nodes["it-role-a10"] in a10_nodes() and nodes["it-role-a100"] == "sbx-a100-family"
    assert engine.get("it-role-a100")["spec"]["labels"] == {"team": "it", "product": "llm-endpoint", "tier": "gold"}
    smoke = [entry for entry in engine.log()[start:] if entry[1] == "/v1/llm/completions-sync"]
    assert [entry[2] for entry in smoke] == [200, 200]
    print("role: 2 endpoints created and serving in %.1fs" % elapsed)

    before = len(engine.log())
    again = run_playbook(play, extra_vars=role_vars)
    assert again["rc"] == 0, again["stdout"][-3000:]
    assert total_changed(again) == 0
    assert [w for w in writes(engine.log()[before:]) if w[1] != "/v1/llm/completions-sync"] == []

    # bad input in one endpoint: nothing is written for any of them
    bad_vars = dict(role_vars, llm_endpoints_list=role_vars["llm_endpoints_list"] + [
        {"name": "it-role-bad", "gpu_type": "nvidia-ampere-a10", "max_workers": 500}])
    bad_vars["llm_endpoints_list"][0] = dict(bad_vars["llm_endpoints_list"][0], max_workers=3)
    before = len(engine.log())
    bad = run_playbook(play, extra_vars=bad_vars)
    assert bad["rc"] != 0
    assert "max_workers 500 is above" in bad["stdout"]
    assert writes(engine.log()[before:]) == []
    assert engine.get("it-role-a10")["spec"]["deployment_state"]["max_workers"] == 2

    # unknown keys in an endpoint are refused by the role's argument spec
    typo = run_playbook(play, extra_vars=dict(role_vars, llm_endpoints_list=[{"name": "x", "max_worker": 2}]))
    assert typo["rc"] != 0 and "max_worker" in typo["stdout"]

    # absent through the role: gone, waited for together
    gone_vars = dict(role_vars, llm_endpoints_smoke_test=False, llm_endpoints_list=[
        {"name": "it-role-a10", "state": "absent"}, {"name": "it-role-a100", "state": "absent"}])
    gone = run_playbook(play, extra_vars=gone_vars)
    assert gone["rc"] == 0, gone["stdout"][-3000:]
    assert engine.names() == []
