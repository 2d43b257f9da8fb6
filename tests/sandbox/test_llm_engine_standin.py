"""The LLM Engine stand-in's own behaviour, without a cluster (no --kubeconfig: workers count as up).

Also checks both sides of every server rule: the collection's client-side validation refuses what the
stand-in (written from model_engine_server's code, independently of module_utils) answers with 400.
"""

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from ansible_collections.llmops.serving.plugins.module_utils import llm_engine as le

HERE = os.path.dirname(os.path.abspath(__file__))
STANDIN = os.path.join(HERE, "llm_engine_standin.py")


@pytest.fixture(scope="module")
def standin():
    proc = subprocess.Popen([sys.executable, STANDIN, "--host", "127.0.0.1", "--port", "0", "--build-delay", "0.4"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    assert "listening on http://127.0.0.1:" in line, line
    url = line.split("listening on ")[1].split(" ")[0]
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def call(url, method, path, body=None, user="alice", auth=None):
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = auth
    elif user is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(("%s:ignored" % user).encode()).decode()
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url + path, data=data, method=method, headers=headers)  # noqa: S310 - URL of the local stand-in
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - 127.0.0.1 test server
            return response.status, json.loads(response.read() or b"null"), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null"), dict(exc.headers)


BASE = {
    "name": "base", "model_name": "llama-3-8b", "inference_framework": "vllm",
    "inference_framework_image_tag": "0.6.3", "checkpoint_path": "s3://models/llama", "endpoint_type": "streaming",
    "gpus": 1, "gpu_type": "nvidia-ampere-a10", "cpus": "2", "memory": "8Gi", "storage": "20Gi",
    "nodes_per_worker": 1, "num_shards": 1, "min_workers": 1, "max_workers": 2, "per_worker": 4,
    "labels": {"team": "t", "product": "p"}, "metadata": {},
}


def body(**overrides):
    data = dict(BASE)
    for key, value in overrides.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def wait_status(url, name, wanted, user="alice", timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        status, data, _headers = call(url, "GET", "/v1/llm/model-endpoints/" + name, user=user)
        current = data.get("status") if status == 200 else status
        if current == wanted:
            return data
        assert time.monotonic() < deadline, "%s never reached %s (last %s)" % (name, wanted, current)
        time.sleep(0.05)


def test_health_needs_no_auth_and_the_api_needs_a_user(standin):
    for path in ("/healthz", "/healthcheck", "/readyz"):
        assert call(standin, "GET", path, user=None)[0] == 200
    status, data, headers = call(standin, "GET", "/v1/llm/model-endpoints", user=None)
    assert status == 401 and data == {"detail": "Not authenticated"} and headers.get("WWW-Authenticate") == "Basic"
    assert call(standin, "GET", "/v1/llm/model-endpoints", auth="Basic !!!")[0] == 401


def test_basic_username_and_bearer_token_are_the_same_user(standin):
    assert call(standin, "POST", "/v1/llm/model-endpoints", body(name="auth-a"), user="carol")[0] == 200
    via_bearer = call(standin, "GET", "/v1/llm/model-endpoints", auth="Bearer carol")[1]["model_endpoints"]
    assert [e["name"] for e in via_bearer] == ["auth-a"]
    assert call(standin, "GET", "/v1/llm/model-endpoints", user="dave")[1] == {"model_endpoints": []}


def test_lifecycle_and_the_get_shape(standin):
    status, data, _headers = call(standin, "POST", "/v1/llm/model-endpoints", body(name="life", max_model_len=4096))
    assert status == 200 and data["endpoint_creation_task_id"]
    first = call(standin, "GET", "/v1/llm/model-endpoints/life")[1]
    assert first["status"] == "UPDATE_PENDING"
    assert first["spec"]["deployment_state"] is None  # no infra state before the builder ran
    wait_status(standin, "life", "UPDATE_IN_PROGRESS")
    ready = wait_status(standin, "life", "READY")
    spec = ready["spec"]
    assert spec["deployment_state"]["available_workers"] == 1
    assert spec["resource_state"]["gpu_type"] == "nvidia-ampere-a10"
    assert spec["created_by"] == "alice" and spec["labels"] == {"team": "t", "product": "p"}
    assert spec["metadata"]["_llm"]["vllm_additional_args"] == {"max_model_len": 4096}
    assert spec["deployment_name"].startswith("launch-alice-life-")
    assert call(standin, "POST", "/v1/llm/model-endpoints", body(name="life"))[1] == {
        "detail": "The specified model endpoint already exists."}
    listed = call(standin, "GET", "/v1/llm/model-endpoints?name=life&order_by=newest")[1]["model_endpoints"]
    assert [e["name"] for e in listed] == ["life"]


def test_unknown_fields_are_dropped_silently(standin):
    payload = body(name="drop", max_model_length=4096, bogus=True)
    status = call(standin, "POST", "/v1/llm/model-endpoints", payload)[0]
    assert status == 200
    metadata = wait_status(standin, "drop", "READY")["spec"]["metadata"]["_llm"]
    assert "vllm_additional_args" not in metadata


@pytest.mark.parametrize("payload,loc", [
    (body(name=None), ["body", "vllm", "name"]),
    (body(labels=None), ["body", "vllm", "labels"]),
    (body(min_workers="many"), ["body", "vllm", "min_workers"]),
    (body(gpu_type="nvidia-l4"), ["body", "vllm", "gpu_type"]),
    (body(max_model_len="long"), ["body", "vllm", "max_model_len"]),
])
def test_schema_errors_are_422(standin, payload, loc):
    status, data, _headers = call(standin, "POST", "/v1/llm/model-endpoints", payload)
    assert status == 422
    assert loc in [error["loc"] for error in data["detail"]]


def test_unknown_framework_is_422(standin):
    status, data, _headers = call(standin, "POST", "/v1/llm/model-endpoints", body(inference_framework="triton"))
    assert status == 422 and "does not match any of the expected tags" in data["detail"][0]["msg"]


# Both sides of each rule: (case, POST body overrides, module options overrides, server detail fragment).
BOTH_SIDES = [
    ("vllm-sync", {"endpoint_type": "sync"}, {"endpoint_type": "sync"}, "Can only create streaming"),
    ("hardware-partial", {"cpus": None}, {"cpus": None}, "All hardware spec fields"),
    ("shards-mismatch", {"num_shards": 2}, {"num_shards": 2}, "must be equal to the number of GPUs"),
    ("a100e", {"gpu_type": "nvidia-ampere-a100e"}, {"gpu_type": "nvidia-ampere-a100e"}, "migrated A100"),
    ("quantize", {"quantize": "bitsandbytes"}, {"quantize": "bitsandbytes"}, "Quantization bitsandbytes"),
    ("labels-team", {"labels": {"product": "p"}}, {"labels": {"product": "p"}}, "Missing label 'team'"),
    ("labels-restricted", {"labels": {"team": "t", "product": "p", "user_id": "x"}},
     {"labels": {"team": "t", "product": "p", "user_id": "x"}}, "Cannot specify 'user_id'"),
    ("labels-value", {"labels": {"team": "t t", "product": "p"}}, {"labels": {"team": "t t", "product": "p"}},
     "Invalid label value"),
    ("min-zero", {"min_workers": 0}, {"min_workers": 0}, "Requested min workers 0 too low"),
    ("max-too-high", {"max_workers": 251}, {"max_workers": 251}, "Requested max workers 251 too high"),
    ("checkpoint-scheme", {"checkpoint_path": "/data/llama"}, {"checkpoint_path": "/data/llama"},
     "Only S3 and Azure"),
    ("checkpoint-tar", {"checkpoint_path": "s3://b/m.tar"}, {"checkpoint_path": "s3://b/m.tar"}, "Tar files"),
    ("multinode", {"inference_framework": "sglang", "nodes_per_worker": 2},
     {"inference_framework": "sglang", "nodes_per_worker": 2}, "Multinode endpoints"),
    ("metadata-reserved", {"metadata": {"_llm": {}}}, {"metadata": {"_llm": {}}}, "reserved metadata key"),
    ("cpus-limit", {"cpus": "63"}, {"cpus": "63"}, "Requested cpus='63' too high"),
    ("memory-limit", {"memory": "249Gi"}, {"memory": "249Gi"}, "Requested memory='249Gi' too high"),
    ("deepspeed-one-gpu", {"inference_framework": "deepspeed", "endpoint_type": "sync"},
     {"inference_framework": "deepspeed", "endpoint_type": "sync"}, "DeepSpeed requires more than 1 GPU"),
]


def _module_errors(overrides):
    params = {k: v for k, v in BASE.items() if k not in ("name",)}
    params.update(overrides)
    params = {k: v for k, v in params.items() if v is not None}
    if params.get("metadata") == {}:
        params.pop("metadata")
    return le.validation_errors(le.desired_state(params), None, name="rule")


@pytest.mark.parametrize("case,server_overrides,module_overrides,detail", BOTH_SIDES, ids=[c[0] for c in BOTH_SIDES])
def test_the_module_refuses_what_the_server_refuses(standin, case, server_overrides, module_overrides, detail):
    payload = body(name="rule-" + case, **server_overrides)
    status, data, _headers = call(standin, "POST", "/v1/llm/model-endpoints", payload)
    assert status == 400, data
    assert detail in data["detail"]
    assert _module_errors(module_overrides), "client-side validation let %s through" % case


def test_both_accept_the_base_endpoint(standin):
    assert _module_errors({}) == []
    assert call(standin, "POST", "/v1/llm/model-endpoints", body(name="rule-ok"))[0] == 200


def test_hardware_is_inferred_when_none_is_given_and_num_shards_follows(standin):
    payload = body(name="infer", gpus=None, gpu_type=None, cpus=None, memory=None, storage=None,
                   nodes_per_worker=None, num_shards=4)
    assert call(standin, "POST", "/v1/llm/model-endpoints", payload)[0] == 200
    ready = wait_status(standin, "infer", "READY")
    assert ready["num_shards"] == 1 and ready["spec"]["resource_state"]["gpus"] == 1
    assert _module_errors({"gpus": None, "gpu_type": None, "cpus": None, "memory": None, "storage": None,
                           "nodes_per_worker": None, "num_shards": 4})


def test_latest_tag_is_resolved_by_the_server(standin):
    assert call(standin, "POST", "/v1/llm/model-endpoints",
                body(name="latest", inference_framework_image_tag="latest"))[0] == 200
    assert wait_status(standin, "latest", "READY")["inference_framework_image_tag"] != "latest"


def test_update_changes_only_what_is_sent_and_engine_args_need_a_bundle_rebuild(standin):
    assert call(standin, "POST", "/v1/llm/model-endpoints", body(name="upd", max_model_len=4096))[0] == 200
    wait_status(standin, "upd", "READY")
    assert call(standin, "PUT", "/v1/llm/model-endpoints/upd", {"max_workers": 3})[0] == 200
    updated = wait_status(standin, "upd", "READY")
    assert updated["spec"]["deployment_state"]["max_workers"] == 3
    assert updated["spec"]["deployment_state"]["min_workers"] == 1
    # engine args without a bundle rebuild are ignored, as by the real server
    call(standin, "PUT", "/v1/llm/model-endpoints/upd", {"max_model_len": 8192})
    args = wait_status(standin, "upd", "READY")["spec"]["metadata"]["_llm"]["vllm_additional_args"]
    assert args == {"max_model_len": 4096}
    call(standin, "PUT", "/v1/llm/model-endpoints/upd", {"max_model_len": 8192, "force_bundle_recreation": True})
    args = wait_status(standin, "upd", "READY")["spec"]["metadata"]["_llm"]["vllm_additional_args"]
    assert args == {"max_model_len": 8192}
    assert call(standin, "PUT", "/v1/llm/model-endpoints/upd", {"max_workers": 299})[1] == {
        "detail": "Requested max workers 299 too high"}
    assert call(standin, "PUT", "/v1/llm/model-endpoints/nope", {"max_workers": 2})[0] == 404


def test_delete_refuses_during_an_update_then_removes(standin):
    assert call(standin, "POST", "/v1/llm/model-endpoints", body(name="del"))[0] == 200
    wait_status(standin, "del", "UPDATE_IN_PROGRESS")
    status, data, _headers = call(standin, "DELETE", "/v1/llm/model-endpoints/del")
    assert status == 409 and "in progress" in data["detail"]
    wait_status(standin, "del", "READY")
    assert call(standin, "DELETE", "/v1/llm/model-endpoints/del")[:2] == (200, {"deleted": True})
    wait_status(standin, "del", 404)
    assert call(standin, "DELETE", "/v1/llm/model-endpoints/del")[0] == 404


def test_faults_status_count_filters_and_the_request_log(standin):
    call(standin, "DELETE", "/_standin/requests", user=None)
    fault = {"status": 503, "count": 2, "methods": ["GET"], "path_prefix": "/v1/llm/model-endpoints/faulty"}
    assert call(standin, "POST", "/_standin/faults", fault, user=None)[0] == 200
    assert call(standin, "GET", "/v1/llm/model-endpoints/other")[0] == 404  # other path: no fault
    assert call(standin, "GET", "/v1/llm/model-endpoints/faulty")[0] == 503
    assert call(standin, "PUT", "/v1/llm/model-endpoints/faulty", {})[0] == 404  # other method: no fault
    assert call(standin, "GET", "/v1/llm/model-endpoints/faulty")[0] == 503
    assert call(standin, "GET", "/v1/llm/model-endpoints/faulty")[0] == 404  # count used up
    log = call(standin, "GET", "/_standin/requests", user=None)[1]["requests"]
    assert [(r["method"], r["path"], r["status"]) for r in log] == [
        ("GET", "/v1/llm/model-endpoints/other", 404), ("GET", "/v1/llm/model-endpoints/faulty", 503),
        ("PUT", "/v1/llm/model-endpoints/faulty", 404), ("GET", "/v1/llm/model-endpoints/faulty", 503),
        ("GET", "/v1/llm/model-endpoints/faulty", 404)]
    call(standin, "DELETE", "/_standin/faults", user=None)


def test_latency_and_429_with_retry_after(standin):
    call(standin, "POST", "/_standin/faults", {"latency_seconds": 0.5, "count": 1,
                                               "path_prefix": "/v1/llm/model-endpoints/slow"}, user=None)
    call(standin, "POST", "/_standin/faults", {"status": 429, "retry_after": 2, "count": 1,
                                               "path_prefix": "/v1/llm/model-endpoints/slow"}, user=None)
    started = time.monotonic()
    status, _data, headers = call(standin, "GET", "/v1/llm/model-endpoints/slow")
    assert time.monotonic() - started >= 0.5
    assert status == 429 and headers.get("Retry-After") == "2"
    call(standin, "DELETE", "/_standin/faults", user=None)


def test_failed_build_reports_update_failed_with_a_reason(standin):
    call(standin, "POST", "/_standin/faults", {"fail_builds": 1, "reason": "image pull failed",
                                               "path_prefix": "/v1/llm/model-endpoints/broken"}, user=None)
    assert call(standin, "POST", "/v1/llm/model-endpoints", body(name="broken"))[0] == 200
    failed = wait_status(standin, "broken", "UPDATE_FAILED")
    assert failed["spec"]["status_reason"] == "image pull failed"
    assert le.readiness(failed, 1)[0] == "failed"


def test_completions_sync(standin):
    assert call(standin, "POST", "/v1/llm/model-endpoints", body(name="chat"))[0] == 200
    wait_status(standin, "chat", "READY")
    status, data, _headers = call(standin, "POST", "/v1/llm/completions-sync?model_endpoint_name=chat",
                                  {"prompt": "Say hello", "max_new_tokens": 4, "temperature": 0.0})
    assert status == 200 and data["output"]["num_completion_tokens"] == 4 and data["output"]["text"]
    assert call(standin, "POST", "/v1/llm/completions-sync?model_endpoint_name=none",
                {"prompt": "x", "max_new_tokens": 1, "temperature": 0})[0] == 404
    assert call(standin, "POST", "/v1/llm/completions-sync?model_endpoint_name=chat", {"prompt": "x"})[0] == 422
