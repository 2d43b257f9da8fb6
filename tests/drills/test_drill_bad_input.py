"""Drill: bad input matrix (issue 10).

Each case runs one ansible-playbook with one invalid input against the real sandbox (kube-apiserver,
kwok GPU nodes, MinIO, the LLM Engine gateway stand-in) and checks that
- the run fails, with no traceback and no task reporting a change;
- the failure message names the offending input AND says how to fix it (allowed values, the limit,
  the option to set): every regex of the case must match;
- no secret (S3 secret key, gateway user id) appears in the output;
- the cluster (every listable object, see badinput_state), the buckets (every object with ETag and
  size, unfinished uploads), the gateway's endpoints and the local model/destination directories
  are exactly as before.

Modules run from a one-task play on localhost; roles and site.yml run with the sandbox inventory,
the bad value given as an extra var (which wins over the inventory, as a user's -e would).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from tests.drills.badinput_state import (
    ClusterState,
    bucket_snapshot,
    differences,
    dir_snapshot,
    gateway_snapshot,
)
from tests.helpers.sandbox import REPO_ROOT, kubectl_json, load_env, run_playbook, task_results, total_changed

INVENTORY = os.path.join(REPO_ROOT, "inventories", "sandbox")
SITE = os.path.join(REPO_ROOT, "playbooks", "site.yml")
BUCKET = "llmops-models"
PREFIX = "drill-badinput/tiny"
MISSING_BUCKET = "drill-badinput-no-such-bucket"


# ----------------------------------------------------------------------------- the world


class World:
    """What every case needs: sandbox settings, a staged model, GPU facts, and the last snapshot."""

    def __init__(self, root):
        self.env = load_env()
        self.root = root
        self.model_ok = os.path.join(root, "model-ok")
        self.model_no_config = os.path.join(root, "model-no-config")
        self.pull_dest = os.path.join(root, "pull-dest")
        self.cache_dir = os.path.join(root, "s3-cache")
        self.cluster = ClusterState()
        self.gpu_types = None
        self.last = None

    def s3_args(self, **overrides):
        args = {
            "endpoint_url": self.env["SANDBOX_S3_ENDPOINT"],
            "access_key": self.env["SANDBOX_S3_ACCESS_KEY"],
            "secret_key": self.env["SANDBOX_S3_SECRET_KEY"],
            "region": self.env.get("SANDBOX_S3_REGION", "us-east-1"),
            "bucket": BUCKET,
            "prefix": PREFIX,
            "mode": "verify",
            "cache_dir": self.cache_dir,
        }
        args.update(overrides)
        return dict((key, value) for key, value in args.items() if value is not None)

    def gateway_args(self, **overrides):
        args = {"url": self.env["SANDBOX_LLM_ENGINE_URL"], "user_id": self.env["SANDBOX_LLM_ENGINE_USER"]}
        args.update(overrides)
        return args

    def secrets(self):
        return [self.env["SANDBOX_S3_SECRET_KEY"], self.env["SANDBOX_LLM_ENGINE_USER"]]

    def snapshot(self):
        return {
            "cluster": self.cluster.snapshot(),
            "bucket": bucket_snapshot(),
            "gateway": gateway_snapshot(),
            "dirs": dir_snapshot(self.model_ok, self.model_no_config, self.pull_dest),
        }


@pytest.fixture(scope="module")
def world(tmp_path_factory, sandbox_env):
    root = str(tmp_path_factory.mktemp("badinput"))
    w = World(root)
    subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tests", "fixtures", "make_tiny_model.py"), w.model_ok],
                   check=True, capture_output=True)
    shutil.copytree(w.model_ok, w.model_no_config)
    os.remove(os.path.join(w.model_no_config, "config.json"))
    os.makedirs(w.pull_dest)
    with open(os.path.join(w.pull_dest, "keep.txt"), "w", encoding="utf-8") as handle:
        handle.write("a file the user had before\n")
    # A staged model to verify against (idempotent), and the GPU facts gpu_discovery would publish,
    # read without labeling anything (plan_labels computes the selectors as if the labels were set).
    setup = run_playbook([{
        "hosts": "localhost", "gather_facts": False, "tasks": [
            # an interrupted earlier run can leave its endpoint behind (holding the sandbox's only T4)
            {"name": "leftover endpoint", "llmops.serving.llm_endpoint": w.gateway_args(
                name="drill-badinput", state="absent")},
            {"name": "stage", "llmops.serving.s3_model_stage": w.s3_args(mode="push", src=w.model_ok,
                                                                         create_bucket=True)},
            {"name": "discover", "llmops.serving.gpu_node_info": {
                "kubeconfig": w.env["KUBECONFIG"], "plan_labels": True, "include_allocations": True,
                # as the sandbox inventory: the device-plugin-only k3s node has L40s
                "gpu_type_overrides": {"sbx-l40-k3s": "nvidia-ada-l40"}}},
        ]}])
    assert setup["rc"] == 0, setup["stdout"][-3000:] + setup["stderr"][-2000:]
    w.gpu_types = task_results(setup, "discover")[0]["gpu_types"]
    w.last = settled_snapshot(w)
    return w


def settled_snapshot(w, timeout=600, pause=3):
    """A snapshot once the cluster has stopped changing by itself: earlier suites delete namespaces
    without waiting (their objects go away for minutes afterwards), and a case must only be blamed
    for its own changes."""
    deadline = time.time() + timeout
    while True:
        # a terminating namespace loses its objects in waves, with pauses longer than one comparison
        terminating = [ns["metadata"]["name"] for ns in kubectl_json("get", "namespaces")["items"]
                       if ns.get("status", {}).get("phase") == "Terminating"]
        if not terminating:
            break
        if time.time() > deadline:
            raise AssertionError("namespaces still terminating after %ss before the drill: %s" % (timeout, terminating))
        time.sleep(pause)
    previous = w.snapshot()
    while True:
        time.sleep(pause)
        current = w.snapshot()
        if current == previous:
            return current
        if time.time() > deadline:
            changes = [line for part in current for line in differences(previous[part], current[part])]
            raise AssertionError("the sandbox did not settle within %ss before the drill; still changing:\n%s"
                                 % (timeout, "\n".join(changes[:20])))
        previous = current


# ----------------------------------------------------------------------------- case builders


def module_case(module, args_fn, check=False):
    def build(w):
        task = {"name": "case", "llmops.serving." + module: args_fn(w)}
        if check:
            task["check_mode"] = True
        return {"playbook": [{"hosts": "localhost", "gather_facts": False, "tasks": [task]}]}
    return build


def role_case(role, extra_vars_fn, with_gpu_facts=False, env=None):
    def build(w):
        extra = extra_vars_fn(w)
        if with_gpu_facts:
            extra.setdefault("gpu_discovery_types", w.gpu_types)
            extra.setdefault("gpu_discovery_is_k3s", False)
        play = {"hosts": "llmops", "gather_facts": False, "roles": [{"role": "llmops.serving." + role}]}
        return {"playbook": [play], "inventory": INVENTORY, "extra_vars": extra, "env": env}
    return build


def site_case(extra_vars_fn, tags):
    def build(w):
        return {"playbook": SITE, "inventory": INVENTORY, "extra_vars": extra_vars_fn(w),
                "extra_args": ["--tags", tags]}
    return build


def endpoint(**overrides):
    """A valid create of llm_endpoint, with one field changed (None removes it)."""
    def args(w):
        base = {
            "name": "drill-badinput", "model_name": "tiny-llama", "inference_framework": "vllm",
            "inference_framework_image_tag": "0.6.3.post1", "checkpoint_path": "s3://%s/%s" % (BUCKET, PREFIX),
            "gpus": 1, "gpu_type": "nvidia-tesla-t4", "cpus": "2", "memory": "8Gi", "storage": "20Gi",
            "nodes_per_worker": 1, "min_workers": 1, "max_workers": 1, "per_worker": 4,
            "labels": {"team": "platform", "product": "drill"}, "wait": False,
        }
        base.update(w.gateway_args())
        base.update(overrides)
        return dict((key, value) for key, value in base.items() if value is not None)
    return args


def vllm_model(**overrides):
    model = {"name": "drill-vllm", "gpu_type": "nvidia-ada-l40", "source": {"type": "s3", "uri": "s3://%s/%s" % (
        BUCKET, PREFIX)}, "max_model_len": 2048}
    model.update(overrides)
    return model


def endpoints_entry(**overrides):
    entry = {"name": "drill-ep", "model_name": "tiny-llama", "checkpoint_path": "s3://%s/%s" % (BUCKET, PREFIX),
             "gpus": 1, "gpu_type": "nvidia-tesla-t4", "cpus": "2", "memory": "8Gi", "storage": "20Gi",
             "nodes_per_worker": 1, "min_workers": 1, "max_workers": 1, "per_worker": 4}
    entry.update(overrides)
    return entry


def gpu(**args):
    return module_case("gpu_node_info", lambda w: dict({"kubeconfig": w.env["KUBECONFIG"]}, **args))


def s3(check=False, **args):
    return module_case("s3_model_stage", lambda w: w.s3_args(**dict(
        (key, value(w) if callable(value) else value) for key, value in args.items())), check=check)


# ----------------------------------------------------------------------------- the matrix
# (id, build, regexes that must all match the failure messages: the input's name, then the fix)

CASES = [
    # gpu_node_info
    ("gpu_node_info-override-not-a-label-value", gpu(gpu_type_overrides={"sbx-l40-k3s": "NVIDIA L40 (48GB)"}),
     [r"gpu_type_overrides\['sbx-l40-k3s'\]", r"at most 63 characters.*e\.g\. nvidia-ada-l40"]),
    ("gpu_node_info-alias-unknown-meaning", gpu(label_aliases={"example.com/gpu-model": "model"}),
     [r"label_aliases\['example\.com/gpu-model'\]", r"must be one of gpu_type, product, family, memory, count"]),
    ("gpu_node_info-accelerator-label-invalid", gpu(accelerator_label="gpu type"),
     [r"accelerator_label 'gpu type'", r"e\.g\. k8s\.amazonaws\.com/accelerator"]),
    ("gpu_node_info-page-size-zero", gpu(page_size=0), [r"page_size", r"at least 1"]),
    ("gpu_node_info-unknown-option", gpu(include_allocation=True),
     [r"Unsupported parameters.*include_allocation\b", r"Supported parameters include:.*include_allocations"]),

    # s3_model_stage
    ("s3_model_stage-missing-config-json", s3(mode="push", src=lambda w: w.model_no_config),
     [r"model-no-config is not ready to stage", r"config\.json is missing.*needs its config\.json"]),
    ("s3_model_stage-bad-credentials", s3(secret_key="not-the-secret-key-0123456789"),
     [r"credentials were rejected", r"check access_key/secret_key"]),
    ("s3_model_stage-bucket-missing", s3(bucket=MISSING_BUCKET),
     [r"bucket '%s' does not exist" % MISSING_BUCKET, r"create it, or set create_bucket: true"]),
    ("s3_model_stage-push-bucket-missing", s3(mode="push", bucket=MISSING_BUCKET, src=lambda w: w.model_ok),
     [r"bucket '%s' does not exist" % MISSING_BUCKET, r"set create_bucket: true"]),
    ("s3_model_stage-part-size-too-small", s3(part_size="1MiB"), [r"part_size", r"5 ?MiB"]),
    ("s3_model_stage-concurrency-wrong-type", s3(concurrency="many"), [r"'concurrency'", r"int"]),
    ("s3_model_stage-push-without-src", s3(mode="push"), [r"\bsrc\b", r"push"]),
    ("s3_model_stage-mode-unknown", s3(mode="sync"), [r"mode", r"one of: push, pull, verify"]),
    ("s3_model_stage-pull-dest-is-a-file", s3(mode="pull", dest=lambda w: os.path.join(w.pull_dest, "keep.txt")),
     [r"dest .*keep\.txt", r"directory"]),

    # llm_endpoint
    ("llm_endpoint-fractional-gpus", module_case("llm_endpoint", endpoint(gpus=0.5)), [r"'gpus'", r"int"]),
    ("llm_endpoint-tensor-parallel-mismatch", module_case("llm_endpoint", endpoint(num_shards=2)),
     [r"num_shards 2 must equal gpus 1", r"drop num_shards"]),
    ("llm_endpoint-storage-above-limit", module_case("llm_endpoint", endpoint(storage="5000Gi")),
     [r"storage 5000Gi is more than LLM Engine allows per worker on nvidia-tesla-t4", r"request at most"]),
    ("llm_endpoint-unknown-gpu-type", module_case("llm_endpoint", endpoint(gpu_type="nvidia-ada-l40")),
     [r"gpu_type must be one of", r"nvidia-tesla-t4.*got: nvidia-ada-l40"]),
    ("llm_endpoint-engine-arg-misspelled", module_case("llm_endpoint", endpoint(
        engine_args={"max_model_length": 2048})),
     [r"max_model_length", r"Supported parameters include:.*max_model_len"]),
    ("llm_endpoint-invalid-label-value", module_case("llm_endpoint", endpoint(
        labels={"team": "Platform Team!", "product": "drill"})),
     [r"labels\.team 'Platform Team!' is not a valid Kubernetes label value", r"at most 63"]),
    ("llm_endpoint-label-product-missing", module_case("llm_endpoint", endpoint(labels={"team": "platform"})),
     [r"labels need 'product'", r"add product: <value>"]),
    ("llm_endpoint-name-too-long", module_case("llm_endpoint", endpoint(name="drill-" + "x" * 60)),
     [r"name 'drill-x+'", r"1-63 lowercase letters, digits and '-'"]),
    ("llm_endpoint-endpoint-type-sync-for-vllm", module_case("llm_endpoint", endpoint(endpoint_type="sync")),
     [r"endpoint_type 'sync'", r"streaming"]),
    ("llm_endpoint-max-workers-above-limit", module_case("llm_endpoint", endpoint(max_workers=251)),
     [r"max_workers 251 is above LLM Engine's limit of 250", r"lower it"]),
    ("llm_endpoint-unknown-option", module_case("llm_endpoint", endpoint(min_worker=1)),
     [r"Unsupported parameters.*min_worker\b", r"Supported parameters include:.*min_workers"]),
    ("llm_endpoint-min-workers-wrong-type", module_case("llm_endpoint", endpoint(min_workers="one")),
     [r"'min_workers'", r"int"]),

    # llm_endpoint_info
    ("llm_endpoint_info-order-by-unknown", module_case("llm_endpoint_info", lambda w: w.gateway_args(
        order_by="newest-first")), [r"order_by must be one of", r"newest, oldest, alphabetical"]),
    ("llm_endpoint_info-url-without-scheme", module_case("llm_endpoint_info", lambda w: w.gateway_args(
        url="model-engine.llm-engine:80")), [r"url 'model-engine\.llm-engine:80' is not an http\(s\) URL", r"set it"]),

    # cluster_prereqs
    ("cluster_prereqs-runtime-class-check-choice", role_case("cluster_prereqs", lambda w: {
        "cluster_prereqs_runtime_class_check": "sometimes"}),
     [r"cluster_prereqs_runtime_class_check", r"auto, always, never"]),
    ("cluster_prereqs-namespace-name-invalid", role_case("cluster_prereqs", lambda w: {
        "cluster_prereqs_namespaces": ["drill-badinput-ok", "LLM_Engine"]}),
     [r"cluster_prereqs_namespaces.*LLM_Engine", r"DNS label"]),
    ("cluster_prereqs-namespace-label-invalid", role_case("cluster_prereqs", lambda w: {
        "cluster_prereqs_namespaces": ["drill-badinput-ok"],
        "cluster_prereqs_namespace_labels": {"team": "Platform Team"}}),
     [r"cluster_prereqs_namespace_labels.*team", r"63 characters"]),

    # gpu_discovery
    ("gpu_discovery-override-not-a-label-value", role_case("gpu_discovery", lambda w: {
        "gpu_discovery_gpu_type_overrides": {"sbx-l40-k3s": "L40 48GB"}}),
     [r"gpu_type_overrides\['sbx-l40-k3s'\] = 'L40 48GB'", r"e\.g\. nvidia-ada-l40"]),

    # redis, postgres
    ("redis-name-invalid", role_case("redis", lambda w: {"redis_name": "Redis_Main"}),
     [r"redis_name \(Redis_Main\)", r"DNS label of at most 40 characters"]),
    ("redis-extra-config-managed-directive", role_case("redis", lambda w: {"redis_extra_config": {"port": "6380"}}),
     [r"redis_extra_config may not set \['port'\]", r"redis_port"]),
    ("postgres-database-not-an-identifier", role_case("postgres", lambda w: {"postgres_database": "llm-engine"}),
     [r"postgres_database \(llm-engine\)", r"lowercase SQL identifiers"]),
    ("postgres-hba-cidr-invalid", role_case("postgres", lambda w: {"postgres_hba_allowed_cidrs": ["10.0.0.0/33"]}),
     [r"postgres_hba_allowed_cidrs \(\['10\.0\.0\.0/33'\]\)", r"prefix length of 0 to 32"]),

    # model_engine
    # The controller's environment holds the sandbox's S3 secret: the output scan covers model_engine's
    # discovery too (it used to print the env facts).
    ("model_engine-tag-latest", role_case("model_engine", lambda w: {"model_engine_tag": "latest"},
                                          with_gpu_facts=True),
     [r"model_engine_tag 'latest' is not a pinned image tag", r"set it to"]),

    # model_staging
    ("model_staging-missing-config-json", role_case("model_staging", lambda w: {"model_staging_models": [
        # The good model goes to a new prefix: pushing it before the bad one fails would change the bucket.
        {"name": "drill-ok", "src": w.model_ok, "prefix": "drill-badinput/ok-new"},
        {"name": "drill-no-config", "src": w.model_no_config, "prefix": "drill-badinput/no-config"}]}),
     [r"model drill-no-config: .*config\.json is missing", r"needs its config\.json"]),
    ("model_staging-bad-credentials", role_case("model_staging", lambda w: {
        "model_staging_s3_secret_key": "not-the-secret-key-0123456789",
        "model_staging_models": [{"name": "drill-ok", "src": w.model_ok, "prefix": PREFIX}]}),
     [r"model drill-ok: the S3 credentials were rejected", r"check access_key/secret_key"]),

    # vllm
    ("vllm-fractional-gpus", role_case("vllm", lambda w: {"vllm_models": [vllm_model(gpus=0.5)]}, True),
     [r"argument 'gpus' is of type float found in 'vllm_models'", r"unable to convert to int"]),
    ("vllm-tensor-parallel-mismatch", role_case("vllm", lambda w: {"vllm_models": [vllm_model(
        gpus=2, tensor_parallel_size=4)]}, True),
     [r"tensor_parallel_size \(4\).*gpus is 2", r"set gpus to 4 or tensor_parallel_size to 2"]),
    ("vllm-unknown-gpu-type", role_case("vllm", lambda w: {"vllm_models": [vllm_model(gpu_type="nvidia-h100-nvl")]},
                                        True),
     [r"vllm_models\[drill-vllm\]\.gpu_type: unknown GPU type 'nvidia-h100-nvl'", r"the cluster has .*nvidia-ada-l40"]),
    ("vllm-cache-above-node-storage", role_case("vllm", lambda w: {"vllm_models": [vllm_model(
        cache_type="emptyDir", cache_size="100Ti")]}, True),
     [r"emptyDir cache of 100Ti is larger than", r"lower cache_size or use a PVC / hostPath cache"]),
    ("vllm-unknown-key", role_case("vllm", lambda w: {"vllm_models": [vllm_model(max_model_length=2048)]}, True),
     [r"vllm_models\.max_model_length", r"Supported parameters include:.*max_model_len\b"]),
    ("vllm-invalid-label-value", role_case("vllm", lambda w: {"vllm_models": [vllm_model(
        labels={"team": "Platform Team"})]}, True),
     [r"vllm_models\[drill-vllm\]\.labels: team='Platform Team'", r"at most 63 characters"]),
    # issue 18: vLLM's short form of a flag the role renders, resolved with vLLM 0.10.2's parser data
    ("vllm-extra-args-short-form", role_case("vllm", lambda w: {"vllm_models": [vllm_model(
        extra_args=["-tp", "4"])]}, True),
     [r"vllm_models\[drill-vllm\]\.extra_args: -tp \(vLLM 0\.10\.2 resolves it to --tensor-parallel-size\)",
      r"rendered by the role from tensor_parallel_size; set that instead"]),
    ("vllm-quantization-not-in-release", role_case("vllm", lambda w: {"vllm_models": [vllm_model(
        quantization="marlin")]}, True),
     [r"vllm_models\[drill-vllm\]\.quantization: 'marlin' is not a quantization method of vLLM 0\.10\.2",
      r"leave it unset"]),

    # llm_endpoints
    ("llm_endpoints-fractional-gpus", role_case("llm_endpoints", lambda w: {
        "llm_endpoints_list": [endpoints_entry(gpus=0.5)]}), [r"'gpus'", r"int"]),
    ("llm_endpoints-engine-arg-misspelled", role_case("llm_endpoints", lambda w: {
        "llm_endpoints_list": [endpoints_entry(engine_args={"max_model_length": 2048})]}),
     [r"max_model_length", r"max_model_len"]),

    # site.yml
    ("site-first-phase-bad-choice", site_case(lambda w: {"cluster_prereqs_runtime_class_check": "sometimes"},
                                              "prereqs"),
     [r"cluster_prereqs_runtime_class_check", r"auto, always, never"]),
    ("site-vllm-phase-tensor-parallel-mismatch", site_case(lambda w: {
        "gpu_discovery_types": w.gpu_types, "gpu_discovery_is_k3s": False,
        "model_staging_checkpoints": {},
        "vllm_models": [vllm_model(gpus=2, tensor_parallel_size=4)]}, "vllm"),
     [r"tensor_parallel_size \(4\).*gpus is 2", r"set gpus to 4 or tensor_parallel_size to 2"]),
]


# ----------------------------------------------------------------------------- checks


def failure_messages(run):
    """Every failed task's message (loop items included), and the CLI's stderr when no play ran."""
    messages, crashes = [], []
    for play in (run["json"] or {}).get("plays", []):
        for task in play.get("tasks", []):
            for result in task["hosts"].values():
                for item in [result] + list(result.get("results") or []):
                    if not item.get("failed"):
                        continue
                    if item.get("msg"):
                        messages.append(item["msg"] if isinstance(item["msg"], str) else json.dumps(item["msg"]))
                    for key in ("argument_errors", "errors"):
                        if item.get(key):
                            messages.append(json.dumps(item[key]))
                    # fail_json() sets exception to "(traceback unavailable)"; a crash has a traceback.
                    trace = str(item.get("exception") or "") + str(item.get("module_stderr") or "")
                    if "Traceback" in trace or "MODULE FAILURE" in str(item.get("msg")):
                        crashes.append("%s: %s" % (task["task"]["name"], trace[-3000:]))
    if not messages:
        messages.append(run["stderr"])
    return "\n".join(messages), crashes


@pytest.mark.parametrize("case_id, build, expected", CASES, ids=[case[0] for case in CASES])
def test_bad_input_fails_clearly_and_changes_nothing(world, case_id, build, expected):
    before = world.last
    spec = build(world)
    run = run_playbook(spec["playbook"], inventory=spec.get("inventory"), extra_vars=spec.get("extra_vars"),
                       extra_args=spec.get("extra_args", ()), env=spec.get("env"))
    after = world.last = world.snapshot()
    message, crashes = failure_messages(run)

    assert run["rc"] != 0, "%s: the run succeeded:\n%s" % (case_id, run["stdout"][-3000:])
    assert not crashes, "%s: a module crashed instead of failing cleanly:\n%s" % (case_id, "\n".join(crashes))
    assert "Traceback" not in message, message
    for pattern in expected:
        assert re.search(pattern, message, re.S | re.I), (
            "%s: the message does not match %r:\n%s" % (case_id, pattern, message))
    assert total_changed(run) == 0, "%s: a task reported a change before failing: %s" % (case_id, run["stats"])
    output = run["stdout"] + run["stderr"]
    for secret in world.secrets():
        assert secret not in output, "%s: a secret value appears in the output" % case_id
    for part in before:
        assert before[part] == after[part], "%s changed the %s: %s" % (
            case_id, part, differences(before[part], after[part])[:20])


def test_matrix_size():
    """The matrix covers every module and role the issue names, with at least 30 cases."""
    assert len(CASES) >= 30
    ids = [case[0] for case in CASES]
    assert len(set(ids)) == len(ids)
    for target in ("gpu_node_info", "s3_model_stage", "llm_endpoint", "llm_endpoint_info", "cluster_prereqs",
                   "gpu_discovery", "redis", "postgres", "model_engine", "model_staging", "vllm", "llm_endpoints",
                   "site"):
        assert any(case_id.startswith(target + "-") for case_id in ids), target
