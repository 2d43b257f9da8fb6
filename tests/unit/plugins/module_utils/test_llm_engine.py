"""Pure decisions of module_utils/llm_engine.py: validation rules, diff, defaults, readiness."""

import pytest
from ansible_collections.llmops.serving.plugins.module_utils import llm_engine as le

BASE = {
    "model_name": "llama-3-8b-instruct",
    "inference_framework": "vllm",
    "inference_framework_image_tag": "0.6.3.post1",
    "checkpoint_path": "s3://models/llama-3-8b-instruct",
    "gpus": 1,
    "gpu_type": "nvidia-ampere-a10",
    "cpus": "4",
    "memory": "16Gi",
    "storage": "40Gi",
    "nodes_per_worker": 1,
    "min_workers": 1,
    "max_workers": 2,
    "per_worker": 10,
    "labels": {"team": "platform", "product": "chat"},
}


def desired(**overrides):
    params = dict(BASE)
    params.update(overrides)
    return le.desired_state(params)


def errors_for(name="llama", current=None, scale_from_zero=False, **overrides):
    return le.validation_errors(desired(**overrides), current, name=name, scale_from_zero=scale_from_zero)


def server_endpoint(**spec_overrides):
    """A GET answer like LLM Engine's for BASE."""
    endpoint = {
        "id": "end_1", "name": "llama", "model_name": BASE["model_name"], "source": "hugging_face",
        "status": "READY", "inference_framework": "vllm", "inference_framework_image_tag": "0.6.3.post1",
        "num_shards": 1, "quantize": None, "checkpoint_path": BASE["checkpoint_path"],
        "spec": {
            "endpoint_type": "streaming", "status": "READY", "status_reason": None, "created_by": "u1",
            "metadata": {"_llm": {"model_name": BASE["model_name"], "vllm_additional_args": {"max_model_len": 4096}},
                         "owner": "ml"},
            "labels": {"team": "platform", "product": "chat"},
            "public_inference": True,
            "deployment_state": {"min_workers": 1, "max_workers": 2, "per_worker": 10, "available_workers": 1,
                                 "unavailable_workers": 0},
            "resource_state": {"cpus": 4, "gpus": 1, "gpu_type": "nvidia-ampere-a10", "memory": "17179869184",
                               "storage": "40Gi", "nodes_per_worker": 1},
        },
    }
    endpoint["spec"].update(spec_overrides)
    return endpoint


# ------------------------------------------------------------------------------------- validation

def test_base_endpoint_is_valid():
    assert errors_for() == []


# (case id, overrides, substring every failing case must mention, a passing variant of the same rule)
RULES = [
    ("name-uppercase", {"name": "Llama_3"}, "name 'Llama_3'", {"name": "llama-3"}),
    ("name-too-long", {"name": "a" * 64}, "1-63 lowercase", {"name": "a" * 63}),
    ("model-required", {"model_name": None}, "model_name is required", {"model_name": "x"}),
    ("framework-required", {"inference_framework": None}, "inference_framework is required",
     {"inference_framework": "vllm"}),
    ("tag-required", {"inference_framework_image_tag": None}, "inference_framework_image_tag is required",
     {"inference_framework_image_tag": "0.6.3"}),
    ("tag-latest", {"inference_framework_image_tag": "latest"}, "pin a real tag",
     {"inference_framework_image_tag": "0.6.3"}),
    ("labels-required", {"labels": None}, "labels is required", {"labels": {"team": "a", "product": "b"}}),
    ("min-required", {"min_workers": None}, "min_workers is required", {"min_workers": 1}),
    ("max-required", {"max_workers": None}, "max_workers is required", {"max_workers": 1}),
    ("per-worker-required", {"per_worker": None}, "per_worker is required", {"per_worker": 1}),
    ("vllm-sync", {"endpoint_type": "sync"}, "set endpoint_type: streaming", {"endpoint_type": "streaming"}),
    ("tgi-async", {"inference_framework": "text_generation_inference", "endpoint_type": "async"},
     "only streaming endpoints", {"inference_framework": "text_generation_inference", "endpoint_type": "streaming"}),
    ("hardware-partial", {"cpus": None, "memory": None}, "hardware is all or nothing",
     {"gpus": None, "gpu_type": None, "cpus": None, "memory": None, "storage": None, "nodes_per_worker": None}),
    ("num-shards-without-hardware",
     {"gpus": None, "gpu_type": None, "cpus": None, "memory": None, "storage": None, "nodes_per_worker": None,
      "num_shards": 2}, "num_shards 2 is ignored",
     {"gpus": None, "gpu_type": None, "cpus": None, "memory": None, "storage": None, "nodes_per_worker": None}),
    ("num-shards-mismatch", {"num_shards": 2}, "must equal gpus", {"num_shards": 1}),
    ("gpus-zero", {"gpus": 0, "num_shards": 0}, "at least 1 GPU", {"gpus": 1}),
    ("gpu-type-unknown", {"gpu_type": "nvidia-l4"}, "not an LLM Engine GPU type", {"gpu_type": "nvidia-tesla-t4"}),
    ("a100e-on-create", {"gpu_type": "nvidia-ampere-a100e"}, "use nvidia-hopper-h100",
     {"gpu_type": "nvidia-ampere-a100"}),
    ("cpus-not-quantity", {"cpus": "four"}, "cpus 'four' is not a Kubernetes quantity", {"cpus": "3500m"}),
    ("cpus-over-limit", {"cpus": "63"}, "more than LLM Engine allows", {"cpus": "62"}),
    ("memory-over-limit", {"memory": "249Gi"}, "memory 249Gi is more", {"memory": "248Gi"}),
    ("storage-over-limit", {"storage": "640Gi"}, "storage 640Gi is more", {"storage": "600Gi"}),
    ("memory-zero", {"memory": "0"}, "must be more than 0", {"memory": "1Gi"}),
    ("multinode-not-vllm", {"inference_framework": "sglang", "endpoint_type": "streaming", "nodes_per_worker": 2},
     "only supported for vllm", {"inference_framework": "vllm", "nodes_per_worker": 2}),
    ("deepspeed-one-gpu", {"inference_framework": "deepspeed", "endpoint_type": "sync"}, "deepspeed needs more",
     {"inference_framework": "deepspeed", "endpoint_type": "sync", "gpus": 2}),
    ("quantize-vllm", {"quantize": "bitsandbytes"}, "use awq", {"quantize": "awq"}),
    ("quantize-tgi", {"inference_framework": "text_generation_inference", "quantize": "awq"}, "use bitsandbytes",
     {"inference_framework": "text_generation_inference", "quantize": "bitsandbytes"}),
    ("quantize-sglang", {"inference_framework": "sglang", "endpoint_type": "streaming", "quantize": "awq"},
     "drop quantize", {"inference_framework": "sglang", "endpoint_type": "streaming"}),
    ("labels-missing-team", {"labels": {"product": "chat"}}, "labels need 'team'",
     {"labels": {"team": "a", "product": "chat"}}),
    ("labels-missing-product", {"labels": {"team": "a"}}, "labels need 'product'",
     {"labels": {"team": "a", "product": "b"}}),
    ("labels-user-id", {"labels": {"team": "a", "product": "b", "user_id": "x"}}, "must not set 'user_id'",
     {"labels": {"team": "a", "product": "b", "owner": "x"}}),
    ("labels-endpoint-name", {"labels": {"team": "a", "product": "b", "endpoint_name": "x"}},
     "must not set 'endpoint_name'", {"labels": {"team": "a", "product": "b"}}),
    ("labels-bad-value", {"labels": {"team": "a b", "product": "b"}}, "not a valid Kubernetes label value",
     {"labels": {"team": "a-b", "product": "b"}}),
    ("labels-long-value", {"labels": {"team": "a" * 64, "product": "b"}}, "at most 63",
     {"labels": {"team": "a" * 63, "product": "b"}}),
    ("labels-non-string", {"labels": {"team": 5, "product": "b"}}, "must be a string",
     {"labels": {"team": "5", "product": "b"}}),
    ("min-zero-no-prometheus", {"min_workers": 0}, "scale_from_zero: true", {"min_workers": 0, "_sfz": True}),
    ("min-negative", {"min_workers": -1}, "0 or more", {"min_workers": 0, "_sfz": True}),
    # upstream MAX_ENDPOINT_SIZE (common/resource_limits.py:21)
    ("max-over-limit", {"max_workers": 251}, "limit of 250", {"max_workers": 250}),
    ("max-zero", {"max_workers": 0, "min_workers": 0, "_sfz": True}, "max_workers 0 must be 1 or more",
     {"max_workers": 1, "min_workers": 0, "_sfz": True}),
    ("min-above-max", {"min_workers": 3}, "more than max_workers", {"min_workers": 2}),
    ("per-worker-zero", {"per_worker": 0}, "per_worker 0 must be 1", {"per_worker": 1}),
    ("checkpoint-scheme", {"checkpoint_path": "/models/llama"}, "s3://", {"checkpoint_path": "s3://b/llama"}),
    # upstream accepts s3://, azure://, gs:// (llm_model_endpoint_use_cases.py:563-572)
    ("checkpoint-gcs-ok", {"checkpoint_path": "http://b/llama"}, "s3://", {"checkpoint_path": "gs://b/llama"}),
    ("checkpoint-tar", {"checkpoint_path": "s3://b/llama.tar"}, "tar files", {"checkpoint_path": "s3://b/llama/"}),
    ("metadata-reserved", {"metadata": {"_llm": {}}}, "reserved", {"metadata": {"llm": {}}}),
    ("engine-args-unknown", {"engine_args": {"max_model_length": 4096}}, "did you mean max_model_len",
     {"engine_args": {"max_model_len": 4096}}),
    ("engine-args-type", {"engine_args": {"max_model_len": "4k"}}, "must be of type int",
     {"engine_args": {"max_model_len": 4096}}),
    ("engine-args-utilization", {"engine_args": {"gpu_memory_utilization": 1.5}}, "in (0, 1]",
     {"engine_args": {"gpu_memory_utilization": 0.95}}),
    ("engine-args-not-vllm",
     {"inference_framework": "sglang", "endpoint_type": "streaming", "engine_args": {"max_model_len": 1}},
     "drop engine_args", {"inference_framework": "sglang", "endpoint_type": "streaming"}),
]


def _split(overrides):
    overrides = dict(overrides)
    name = overrides.pop("name", "llama")
    sfz = overrides.pop("_sfz", False)
    return name, sfz, overrides


@pytest.mark.parametrize("case,broken,message,fixed", RULES, ids=[r[0] for r in RULES])
def test_rule_fails_with_a_message_naming_the_field_and_passes_when_fixed(case, broken, message, fixed):
    name, sfz, overrides = _split(broken)
    errors = errors_for(name=name, scale_from_zero=sfz, **overrides)
    assert errors, case
    assert any(message in error for error in errors), errors
    name, sfz, overrides = _split(fixed)
    assert errors_for(name=name, scale_from_zero=sfz, **overrides) == []


def test_every_hardware_field_is_reported_when_missing():
    errors = errors_for(gpus=None, storage=None)
    assert len(errors) == 1
    assert "gpus, storage missing" in errors[0]


def test_update_rules_apply_to_the_merged_endpoint():
    current = le.current_state(server_endpoint())
    # only max_workers given: the rest is taken from the server's values
    only_max = le.desired_state({"max_workers": 4}, current)
    assert le.validation_errors(only_max, current, name="llama") == []
    # min_workers above the current max_workers breaks the rule after the merge
    only_min = le.desired_state({"min_workers": 3}, current)
    assert any("more than max_workers 2" in e for e in le.validation_errors(only_min, current, name="llama"))
    # a100e is refused on create only
    a100e = le.desired_state({"gpu_type": "nvidia-ampere-a100e"}, current)
    assert le.validation_errors(a100e, current, name="llama") == []
    # required-on-create fields are optional on update
    assert le.validation_errors(le.desired_state({}, current), current, name="llama") == []


def test_engine_args_spec_matches_the_server_list():
    assert "max_model_len" in le.VLLM_ENGINE_ARGS
    assert le.VLLM_ENGINE_ARGS["gpu_memory_utilization"] == "float"
    spec = le.endpoint_spec()["engine_args"]["options"]
    assert set(spec) == set(le.VLLM_ENGINE_ARGS)


# ------------------------------------------------------------------------------------- defaults

@pytest.mark.parametrize("framework,expected", [
    ("vllm", "streaming"), ("text_generation_inference", "streaming"), ("lightllm", "streaming"),
    ("tensorrt_llm", "streaming"), ("deepspeed", "sync"), ("sglang", "sync"),
])
def test_endpoint_type_defaults_to_what_the_framework_accepts(framework, expected):
    assert desired(inference_framework=framework)["endpoint_type"] == expected


def test_endpoint_type_is_not_defaulted_on_update():
    current = le.current_state(server_endpoint())
    assert le.desired_state({"max_workers": 3}, current)["endpoint_type"] is None


def test_num_shards_defaults_to_gpus():
    assert desired(gpus=4)["num_shards"] == 4
    assert desired(gpus=None)["num_shards"] is None
    assert desired(gpus=2, num_shards=2)["num_shards"] == 2


@pytest.mark.parametrize("low,high,needed", [(0, 1, 1), (0, 5, 1), (1, 2, 1), (3, 5, 3), (2, 2, 2), (5, 3, 3)])
def test_needed_workers_is_min_of_max_of_min_workers_and_one_and_max_workers(low, high, needed):
    assert le.needed_workers(low, high) == needed


@pytest.mark.parametrize("value,amount", [
    ("4", 4), (4, 4), ("3500m", 3.5), ("16Gi", 16 * 2 ** 30), ("1G", 10 ** 9), (17179869184, 16 * 2 ** 30),
    ("1e3", 1000), ("0.5", 0.5),
])
def test_parse_quantity(value, amount):
    assert float(le.parse_quantity(value)) == pytest.approx(amount)


@pytest.mark.parametrize("value", ["four", "", "1.2.3", "16GB", True, None, "-1"])
def test_parse_quantity_rejects(value):
    assert le.parse_quantity(value) is None


# ------------------------------------------------------------------------------------- diff

def test_no_change_when_the_server_reports_the_same_values_in_other_units():
    current = le.current_state(server_endpoint())
    plan = le.plan_changes(desired(metadata={"owner": "ml"}, engine_args={"max_model_len": 4096}), current)
    assert plan["action"] == "none", plan["changes"]
    assert plan["body"] == {}


def test_one_field_changed_gives_a_put_with_only_that_field():
    current = le.current_state(server_endpoint())
    plan = le.plan_changes(desired(max_workers=4), current)
    assert plan["action"] == "update"
    assert plan["changes"] == {"max_workers": {"before": 2, "after": 4}}
    assert plan["body"] == {"inference_framework": "vllm", "max_workers": 4}


def test_unset_options_are_not_managed_on_update():
    current = le.current_state(server_endpoint())
    plan = le.plan_changes(le.desired_state({"per_worker": 10}, current), current)
    assert plan["action"] == "none"


def test_labels_compare_as_a_whole():
    current = le.current_state(server_endpoint())
    plan = le.plan_changes(desired(labels={"team": "platform", "product": "chat", "tier": "gold"}), current)
    assert plan["body"]["labels"] == {"team": "platform", "product": "chat", "tier": "gold"}
    plan = le.plan_changes(desired(labels={"team": "platform", "product": "chat"}), current)
    assert "labels" not in plan["changes"]


def test_metadata_compares_only_given_keys():
    current = le.current_state(server_endpoint())
    assert le.plan_changes(desired(metadata={"owner": "ml"}), current)["action"] == "none"
    plan = le.plan_changes(desired(metadata={"owner": "ops", "extra": 1}), current)
    assert plan["body"]["metadata"] == {"owner": "ops", "extra": 1}
    assert plan["changes"]["metadata"]["before"] == {"owner": "ml", "extra": None}


def test_engine_arg_change_rebuilds_the_bundle_with_all_args():
    endpoint = server_endpoint()
    endpoint["spec"]["metadata"]["_llm"]["vllm_additional_args"] = {"max_model_len": 4096, "enforce_eager": True}
    current = le.current_state(endpoint)
    plan = le.plan_changes(desired(engine_args={"max_model_len": 8192}), current)
    assert plan["action"] == "update"
    assert plan["body"] == {"inference_framework": "vllm", "max_model_len": 8192, "enforce_eager": True,
                            "force_bundle_recreation": True}


def test_engine_args_are_unknown_when_the_server_does_not_report_them():
    endpoint = server_endpoint()
    del endpoint["spec"]["metadata"]["_llm"]["vllm_additional_args"]
    plan = le.plan_changes(desired(engine_args={"max_model_len": 8192}), le.current_state(endpoint))
    assert plan["action"] == "none"
    assert plan["engine_args_unknown"] is True


@pytest.mark.parametrize("field,value", [("inference_framework", "sglang"), ("endpoint_type", "async"),
                                         ("nodes_per_worker", 2)])
def test_fields_a_put_cannot_change_need_a_recreate(field, value):
    current = le.current_state(server_endpoint())
    params = dict(BASE, **{field: value})
    plan = le.plan_changes(le.desired_state(params, current), current)
    assert plan["action"] == "recreate_needed"
    assert plan["not_updatable"] == [field]
    assert plan["body"] == {}


def test_hardware_change_sends_the_changed_fields_and_the_shards():
    current = le.current_state(server_endpoint())
    plan = le.plan_changes(desired(gpus=2, cpus="8"), current)
    assert plan["action"] == "update"
    assert plan["body"] == {"inference_framework": "vllm", "gpus": 2, "num_shards": 2, "cpus": "8"}


def test_create_body_puts_engine_args_at_the_top_level():
    body = le.create_body(desired(engine_args={"max_model_len": 4096, "dtype": None}))
    assert body["max_model_len"] == 4096
    assert "dtype" not in body and "engine_args" not in body
    assert body["endpoint_type"] == "streaming"
    assert body["num_shards"] == 1
    assert body["metadata"] == {}


def test_create_plan():
    plan = le.plan_changes(desired(), None, name="llama")
    assert plan["action"] == "create"
    assert plan["body"]["name"] == "llama"
    assert plan["body"]["labels"] == BASE["labels"]
    assert plan["body"]["inference_framework_image_tag"] == "0.6.3.post1"


def test_managed_view_shows_only_managed_fields():
    current = le.current_state(server_endpoint())
    view = le.managed_view(current, le.desired_state({"max_workers": 3, "metadata": {"owner": "x"}}, current))
    assert view == {"max_workers": 2, "metadata": {"owner": "ml"}}


def test_current_state_without_infra_state():
    endpoint = server_endpoint(deployment_state=None, resource_state=None, labels=None)
    state = le.current_state(endpoint)
    assert state["min_workers"] is None and state["gpus"] is None and state["labels"] is None


# ------------------------------------------------------------------------------------- readiness

@pytest.mark.parametrize("status,available,needed,outcome", [
    ("READY", 1, 1, "ready"), ("READY", 2, 1, "ready"), ("READY", 0, 1, "waiting"), ("READY", 1, 2, "waiting"),
    ("UPDATE_PENDING", 1, 1, "waiting"), ("UPDATE_IN_PROGRESS", 5, 1, "waiting"), ("UPDATE_FAILED", 1, 1, "failed"),
    ("READY", 0, 0, "ready"),
])
def test_readiness_needs_ready_and_enough_workers(status, available, needed, outcome):
    endpoint = server_endpoint(deployment_state={"available_workers": available, "unavailable_workers": 0})
    endpoint["status"] = status
    assert le.readiness(endpoint, needed)[0] == outcome


def test_readiness_text_carries_the_reason():
    endpoint = server_endpoint(status_reason="pod x Pending (Unschedulable): 0/9 nodes are available",
                               deployment_state={"available_workers": 0, "unavailable_workers": 1})
    outcome, text = le.readiness(endpoint, 1)
    assert outcome == "waiting"
    assert "0/1 worker(s) available" in text and "1 unavailable" in text and "Unschedulable" in text


def test_readiness_of_a_missing_endpoint():
    assert le.readiness(None, 1) == ("waiting", "not found")


def test_wait_until_times_out_with_the_last_state():
    clock = {"now": 0.0}
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        clock["now"] += seconds

    outcome, value, text, waited = le.wait_until(lambda: {"status": "UPDATE_PENDING"}, lambda e: ("waiting", "x"),
                                                 timeout=5, interval=2, sleep=sleep, clock=lambda: clock["now"])
    assert outcome == "timeout" and text == "x" and waited == 5
    assert sleeps == [2, 2, 1]


def test_wait_until_returns_at_once_on_failure():
    outcome = le.wait_until(lambda: 1, lambda e: ("failed", "boom"), timeout=100,
                            sleep=lambda s: pytest.fail("slept"), clock=lambda: 0.0)[0]
    assert outcome == "failed"


# ------------------------------------------------------------------------------------- retries

def test_only_429_and_5xx_are_retryable():
    assert all(le.is_retryable_status(s) for s in (429, 500, 502, 503, 504))
    assert not any(le.is_retryable_status(s) for s in (400, 401, 403, 404, 409, 422))


def test_backoff_grows_exponentially_up_to_the_cap_with_jitter():
    assert le.backoff_delay(1, base=1, cap=20, rand=lambda: 1.0) == 1
    assert le.backoff_delay(3, base=1, cap=20, rand=lambda: 1.0) == 4
    assert le.backoff_delay(10, base=1, cap=20, rand=lambda: 1.0) == 20
    assert le.backoff_delay(3, base=1, cap=20, rand=lambda: 0.5) == 3
    # equal jitter: never less than half the ceiling, so no wait is shorter than the one before
    assert le.backoff_delay(3, base=1, cap=20, rand=lambda: 0.0) == 2
    assert le.backoff_delay(2, base=1, rand=lambda: 1.0) <= le.backoff_delay(3, base=1, rand=lambda: 0.0)
    assert le.backoff_delay(1, retry_after=7) == 7
    # Retry-After is not cut short: the retry budget decides whether to wait that long
    assert le.backoff_delay(1, cap=20, retry_after=600) == 600


def test_retry_after_takes_seconds_or_an_http_date():
    assert le._retry_after({"Retry-After": "3"}) == 3
    assert le._retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=lambda: 1445412480.0) == 10
    assert le._retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=lambda: 1445412490.0) == 0
    assert le._retry_after({"Retry-After": "soon"}) is None
    assert le._retry_after({}) is None


@pytest.mark.parametrize("body,detail", [
    (b'{"detail": "The specified model endpoint already exists."}', "The specified model endpoint already exists."),
    (b'{"detail": [{"loc": ["body", "vllm", "name"], "msg": "Field required"}]}', "vllm.name: Field required"),
    (b"<html>bad gateway</html>", "<html>bad gateway</html>"),
    (b"", None),
])
def test_error_detail(body, detail):
    assert le.error_detail(body) == detail


@pytest.mark.parametrize("params,message", [
    ({"url": "model-engine:80", "user_id": "u"}, "url 'model-engine:80'"),
    ({"url": "http://gw", "user_id": " "}, "user_id is empty"),
    ({"url": "http://gw", "user_id": "u", "timeout": 0}, "timeout 0"),
    ({"url": "http://gw", "user_id": "u", "retries": -1}, "retries -1"),
    ({"url": "http://gw", "user_id": "u", "ca_path": "/nonexistent/ca.pem"}, "ca_path /nonexistent/ca.pem"),
])
def test_connection_errors(params, message):
    errors = le.connection_errors(params)
    assert any(message in e for e in errors), errors
    assert not le.connection_errors({"url": "https://gw.example:8443", "user_id": "u", "timeout": 5})
