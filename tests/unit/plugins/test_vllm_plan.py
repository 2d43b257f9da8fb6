"""Validations and placement decisions of the vllm role (module_utils/vllm.py plan())."""

import math

import pytest
from ansible_collections.llmops.serving.plugins.filter import vllm as vllm_filter
from ansible_collections.llmops.serving.plugins.module_utils import vllm, vllm_cluster, vllm_inputs, vllm_pod
from vllm_fixtures import GIB, cluster, gpu_types, hf_model, pod, storage_classes


def settings(**extra):
    out = {"gpu_types": gpu_types(), "gpu_type": "nvidia-l40", "is_k3s": True}
    out.update(extra)
    return out


def errors_of(models, cluster_data=None, prune=False, **extra):
    return vllm.plan(models, settings(**extra), cluster=cluster_data, prune=prune)["errors"]


def one_error(models, cluster_data=None, **extra):
    errors = errors_of(models, cluster_data, **extra)
    assert len(errors) == 1, errors
    return errors[0]


# ----------------------------------------------------------------- whole GPUs and parallelism


@pytest.mark.parametrize("gpus", [1.5, "1.5", 0, True, "two"])
def test_gpus_must_be_a_whole_positive_number(gpus):
    message = one_error([hf_model(gpus=gpus)])
    assert "vllm_models[llama-3-1-8b].gpus" in message


def test_gpus_as_digit_string_or_integral_float_is_accepted():
    result = vllm.plan([hf_model(gpus="2"), hf_model("b", gpus=2.0)], settings())
    assert result["errors"] == []
    assert [spec["gpus"] for spec in result["models"]] == [2, 2]


def test_tensor_parallel_must_match_gpus():
    message = one_error([hf_model(gpus=2, tensor_parallel_size=4)])
    assert "tensor_parallel_size (4)" in message and "gpus is 2" in message


def test_tensor_parallel_defaults_to_gpus():
    spec = vllm.plan([hf_model(gpus=4)], settings())["models"][0]
    assert spec["tensor_parallel_size"] == 4


def test_gpus_not_divisible_by_pipeline_parallel_is_refused():
    errors = errors_of([hf_model(gpus=3, pipeline_parallel_size=2)])
    assert any("not a multiple of pipeline_parallel_size" in error for error in errors)


def test_tensor_parallel_over_mig_slices_is_refused():
    message = one_error([hf_model(gpus=2, gpu_type="nvidia-hopper-h100-1g20gb")])
    assert "MIG" in message and "nvidia.com/mig-1g.20gb" in message


def test_more_gpus_than_the_whole_type_fails_without_the_cluster():
    message = one_error([hf_model(gpus=5)])
    assert "asks 5 GPUs" in message and "nvidia-l40 has 4" in message


# ----------------------------------------------------------------- GPU types


def test_unknown_gpu_type_names_the_known_ones():
    message = one_error([hf_model(gpu_type="nvidia-hopper-h200")])
    assert "unknown GPU type 'nvidia-hopper-h200'" in message
    assert "nvidia-ampere-a100" in message and "nvidia-l40" in message


def test_unknown_gpu_type_without_discovery_says_how_to_fix():
    message = one_error([hf_model(gpu_type="nvidia-l40")], gpu_types={}, gpu_type="")
    assert "run the gpu_discovery role" in message


def test_several_types_and_no_choice_is_an_error():
    message = one_error([hf_model()], gpu_type="")
    assert "set gpu_type" in message and "nvidia-l40 with 4 free" in message


def test_single_type_is_the_default():
    only = {"nvidia-l40": gpu_types()["nvidia-l40"]}
    spec = vllm.plan([hf_model()], {"gpu_types": only})["models"][0]
    assert spec["gpu_type"] == "nvidia-l40"
    assert spec["node_selector"] == {"kubernetes.io/hostname": "sbx-l40-k3s"}


def test_type_selector_and_tolerations_are_merged_with_the_model_ones():
    extra = {"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"}
    spec = vllm.plan([hf_model(gpu_type="nvidia-ampere-a100", node_selector={"pool": "llm"}, tolerations=[extra])],
                     settings())["models"][0]
    assert spec["node_selector"] == {"nvidia.com/gpu.family": "ampere", "nvidia.com/gpu.memory": "40960",
                                     "pool": "llm"}
    assert spec["tolerations"] == [gpu_types()["nvidia-ampere-a100"]["tolerations"][0], extra]
    assert spec["resources"]["limits"] == {"nvidia.com/gpu": "1"}


def test_mig_type_requests_the_mig_resource():
    spec = vllm.plan([hf_model(gpu_type="nvidia-hopper-h100-1g20gb")], settings())["models"][0]
    assert spec["resources"]["requests"]["nvidia.com/mig-1g.20gb"] == "1"
    assert "nvidia.com/gpu" not in spec["resources"]["requests"]


# ----------------------------------------------------------------- free GPUs per type


def test_demand_above_free_gpus_names_models_and_counts():
    types = gpu_types()
    types["nvidia-l40"]["gpus_free"] = 2
    # the input-only pass cannot know what this role's pods hold, so it leaves free GPUs alone
    assert errors_of([hf_model("a", replicas=2), hf_model("b")], gpu_types=types) == []
    errors = errors_of([hf_model("a", replicas=2), hf_model("b")], cluster(), gpu_types=types)
    assert errors == [
        "GPU type nvidia-l40: the models a (2 x 1), b (1 x 1) need 3 GPUs but only 2 are free (4 in total); lower "
        "replicas or gpus, move a model to another gpu_type, or free GPUs"]


def test_gpus_held_by_our_own_pods_count_as_available_on_a_rerun():
    types = gpu_types()
    types["nvidia-l40"]["gpus_free"] = 1  # discovery ran while our 3 pods held 3 GPUs
    pods = [pod("a", "sbx-l40-k3s", 1), pod("a", "sbx-l40-k3s", 1), pod("b", "sbx-l40-k3s", 1)]
    models = [hf_model("a", replicas=2), hf_model("b"), hf_model("c")]
    assert errors_of(models, cluster(pods=pods), gpu_types=types) == []
    # one more replica does not fit
    models[2]["replicas"] = 2
    assert "need 5 GPUs but only 4 are free" in one_error(models, cluster(pods=pods), gpu_types=types)


def test_gpus_of_unlisted_models_count_only_when_pruning():
    types = gpu_types()
    types["nvidia-l40"]["gpus_free"] = 0
    pods = [pod("old", "sbx-l40-k3s", 4)]
    assert "only 0 are free" in one_error([hf_model("new")], cluster(pods=pods), gpu_types=types)
    assert errors_of([hf_model("new")], cluster(pods=pods), prune=True, gpu_types=types) == []


def test_finished_or_unbound_pods_hold_nothing():
    pods = [pod("a", "sbx-l40-k3s", 2, phase="Succeeded"), pod("a", None, 2)]
    assert vllm_cluster.pod_gpu_holdings(pods, ["nvidia.com/gpu"]) == {}


# ----------------------------------------------------------------- against the nodes


def test_more_gpus_than_the_largest_node_fails_with_the_node_named():
    types = gpu_types()
    types["nvidia-ampere-a100"]["gpus_total"] = 16  # two nodes of 8 would pass the total check
    types["nvidia-ampere-a100"]["gpus_free"] = 16
    message = one_error([hf_model(gpu_type="nvidia-ampere-a100", gpus=12)], cluster(), gpu_types=types)
    assert "asks 12 nvidia.com/gpu per replica but the largest matching node (sbx-a100-family) has 8" in message


def test_node_selector_without_type_is_checked_against_the_nodes():
    model = hf_model(node_selector={"nvidia.com/gpu.product": "Tesla-T4"}, gpus=2)
    message = one_error([model], cluster(), gpu_types={}, gpu_type="")
    assert "largest matching node (sbx-t4-gfd) has 1" in message
    model = hf_model(node_selector={"nvidia.com/gpu.product": "NVIDIA-B200"})
    assert "no node matches node_selector" in one_error([model], cluster(), gpu_types={}, gpu_type="")


def test_memory_request_above_any_matching_node_is_refused():
    model = hf_model(node_selector={"nvidia.com/gpu.product": "Tesla-T4"}, resources={"requests": {"memory": "64Gi"}})
    message = one_error([model], cluster(), gpu_types={}, gpu_type="")
    assert "requests 64.0Gi of memory" in message and "31.0Gi" in message


# ----------------------------------------------------------------- cache storage


def test_emptydir_cache_larger_than_node_ephemeral_storage_is_refused():
    model = hf_model(gpu_type="nvidia-ampere-a100", cache_type="emptyDir", cache_size="300Gi")
    errors = errors_of([model])
    assert len(errors) == 1 and "larger than the 189.0Gi of ephemeral storage" in errors[0]
    errors = errors_of([model], cluster())
    assert any("ephemeral storage on the smallest matching node" in error for error in errors)


def test_emptydir_cache_requests_its_size_as_ephemeral_storage():
    spec = vllm.plan([hf_model(cache_type="emptyDir", cache_size="50Gi")], settings())["models"][0]
    assert spec["resources"]["requests"]["ephemeral-storage"] == "50Gi"
    assert spec["cache_volume"] == {"name": "model-cache", "emptyDir": {"sizeLimit": "50Gi"}}


def test_model_larger_than_its_cache_is_refused():
    model = hf_model(cache_type="pvc", cache_size="10Gi")
    model["source"]["bytes"] = "16Gi"
    assert "the model needs 16.0Gi but its pvc cache is 10Gi" in one_error([model])


def test_hostpath_cache_is_shared_and_has_no_pvc():
    result = vllm.plan([hf_model("a"), hf_model("b")], settings(cache_host_path="/data/models"))
    for spec in result["models"]:
        assert spec["cache_volume"]["hostPath"] == {"path": "/data/models", "type": "DirectoryOrCreate"}
        assert spec["pvc"] is None
    assert result["shared_pvc"] is None


def test_rwx_cache_on_a_readwriteonce_only_class_is_refused():
    model = hf_model(cache_type="rwx", cache_storage_class="sandbox-hostpath")
    message = one_error([model], cluster())
    assert "rancher.io/local-path" in message and "ReadWriteOnce" in message


def test_rwx_cache_is_one_shared_claim():
    result = vllm.plan([hf_model("a", cache_type="rwx"), hf_model("b", cache_type="rwx")],
                       settings(cache_storage_class="sandbox-rwx"), cluster=cluster())
    assert result["errors"] == []
    assert result["shared_pvc"]["name"] == "vllm-model-cache"
    assert result["shared_pvc"]["access_mode"] == "ReadWriteMany"
    assert {spec["cache_volume"]["persistentVolumeClaim"]["claimName"] for spec in result["models"]} == {
        "vllm-model-cache"}


def test_rwx_models_larger_than_the_shared_cache_are_refused():
    a, b = hf_model("a", cache_type="rwx"), hf_model("b", cache_type="rwx")
    a["source"]["bytes"], b["source"] = "60Gi", {"repo": "other/model", "revision": "x", "bytes": "60Gi"}
    errors = errors_of([a, b], cluster(), cache_storage_class="sandbox-rwx")
    assert errors == ["the models on the shared rwx cache need 120.0Gi together but vllm_cache_size is 100Gi; "
                      "raise vllm_cache_size"]


def test_missing_storage_class_and_missing_default_class():
    assert "StorageClass 'fast-nvme' does not exist" in one_error(
        [hf_model(cache_type="pvc", cache_storage_class="fast-nvme")], cluster())
    no_default = [item for item in storage_classes() if item["metadata"]["name"] != "sandbox-hostpath"]
    assert "has no default one" in one_error([hf_model(cache_type="pvc")], cluster(storage_classes=no_default))


def _pvc(name, size, class_name="sandbox-hostpath", modes=("ReadWriteOnce",)):
    return {"metadata": {"name": name}, "spec": {"storageClassName": class_name, "accessModes": list(modes),
                                                 "resources": {"requests": {"storage": size}}}}


def test_existing_pvc_is_never_shrunk_and_cannot_grow_without_expansion():
    shrink = vllm.plan([hf_model(cache_type="pvc", cache_size="50Gi")], settings(),
                       cluster=cluster(pvcs=[_pvc("llama-3-1-8b-cache", "80Gi")]))
    assert shrink["errors"] == [] and shrink["models"][0]["pvc"]["size"] == "80Gi"
    message = one_error([hf_model(cache_type="pvc", cache_size="200Gi")],
                        cluster(pvcs=[_pvc("llama-3-1-8b-cache", "80Gi")]))
    assert "cannot grow to 200Gi" in message and "does not allow volume expansion" in message


def test_existing_pvc_with_another_class_is_refused():
    message = one_error([hf_model(cache_type="pvc", cache_storage_class="sandbox-rwx")],
                        cluster(pvcs=[_pvc("llama-3-1-8b-cache", "100Gi")]))
    assert "already exists with StorageClass sandbox-hostpath, not sandbox-rwx" in message


# ----------------------------------------------------------------- runtime class, secrets, CRDs


def test_runtime_class_auto_on_k3s_uses_nvidia_only_when_it_exists():
    spec = vllm.plan([hf_model()], settings(), cluster=cluster())["models"][0]
    assert spec["runtime_class_name"] == "nvidia"
    result = vllm.plan([hf_model()], settings(), cluster=cluster(runtime_classes=[]))
    assert result["errors"] == [] and result["models"][0]["runtime_class_name"] is None
    assert any("RuntimeClass 'nvidia' does not exist" in warning for warning in result["warnings"])


def test_runtime_class_auto_off_k3s_without_type_hint_is_none():
    spec = vllm.plan([hf_model(gpu_type="nvidia-ampere-a100")], settings(is_k3s=False), cluster=cluster())
    assert spec["models"][0]["runtime_class_name"] is None


def test_explicit_runtime_class_must_exist_and_empty_means_none():
    assert "RuntimeClass 'kata'" in one_error([hf_model(runtime_class_name="kata")], cluster())
    spec = vllm.plan([hf_model(runtime_class_name="")], settings(), cluster=cluster())["models"][0]
    assert spec["runtime_class_name"] is None


def test_missing_secrets_are_reported_before_apply():
    model = hf_model()
    model["source"]["token_secret"] = "hf-token"
    message = one_error([model], cluster(secrets=["other"]), namespace="llm")
    assert "Secret 'hf-token' does not exist in namespace llm" in message
    assert errors_of([model], cluster(secrets=["hf-token"])) == []


def test_service_monitor_follows_the_crd():
    crd = "servicemonitors.monitoring.coreos.com"
    assert vllm.plan([hf_model()], settings(), cluster=cluster())["models"][0]["service_monitor"] is None
    spec = vllm.plan([hf_model()], settings(), cluster=cluster(crds=[crd]))["models"][0]
    assert spec["service_monitor"] == {"interval": "30s", "labels": {}}
    assert "ServiceMonitor CRD" in one_error([hf_model()], cluster(), service_monitor=True)


def test_traefik_ingress_strips_the_path_with_a_middleware():
    result = vllm.plan([hf_model()], settings(ingress_enabled=True, namespace="llm"),
                       cluster=cluster(crds=["middlewares.traefik.io"]))
    spec = result["models"][0]
    assert spec["ingress"]["class_name"] == "traefik"
    assert spec["ingress"]["path"] == "/llama-3-1-8b"
    assert spec["middleware"] == {"name": "llama-3-1-8b-strip", "api_version": "traefik.io/v1alpha1",
                                  "prefix": "/llama-3-1-8b"}
    assert spec["ingress"]["annotations"]["traefik.ingress.kubernetes.io/router.middlewares"] == (
        "llm-llama-3-1-8b-strip@kubernetescrd")
    ingress_from = spec["network_policy"]["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}} in ingress_from


def test_nginx_ingress_uses_a_rewrite():
    spec = vllm.plan([hf_model(ingress={"host": "llm.example.com"})],
                     settings(is_k3s=False, ingress_class_name="nginx"))["models"][0]
    assert spec["ingress"]["paths"] == [{"path": "/llama-3-1-8b/(v1|v1/.*|health)$",
                                         "path_type": "ImplementationSpecific"}]
    assert spec["ingress"]["annotations"]["nginx.ingress.kubernetes.io/rewrite-target"] == "/$1"


def test_tls_without_host_is_refused():
    assert "needs a host" in one_error([hf_model()], ingress_enabled=True, ingress_tls_secret="tls")


# ----------------------------------------------------------------- scaling, probes, misc


def test_autoscaling_sets_replicas_to_min_and_checks_bounds():
    spec = vllm.plan([hf_model(replicas=1, autoscaling={"min_replicas": 2, "max_replicas": 4})],
                     settings())["models"][0]
    assert spec["replicas"] == 2
    assert spec["autoscaling"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 80
    assert spec["pdb"] == {"max_unavailable": 1}
    assert "below min_replicas" in one_error([hf_model(autoscaling={"min_replicas": 3, "max_replicas": 2})])
    assert "max_replicas: required" in one_error([hf_model(autoscaling={"min_replicas": 2})])


def test_pdb_auto_only_for_two_or_more_replicas():
    specs = vllm.plan([hf_model("a"), hf_model("b", replicas=2)], settings())["models"]
    assert [spec["pdb"] for spec in specs] == [None, {"max_unavailable": 1}]


def test_startup_probe_is_sized_from_the_model_bytes():
    model = hf_model(source={"type": "path", "path": "llama", "bytes": "16Gi"})
    spec = vllm.plan([model], settings())["models"][0]
    expected = math.ceil((180 + 16 * GIB / (200 * 1024 ** 2)) / 10.0)
    assert spec["startup_probe"]["failureThreshold"] == expected
    assert spec["startup_probe"]["httpGet"] == {"path": "/health", "port": "http"}
    # vLLM downloading itself gets the download time on top
    downloading = vllm_pod.startup_probe(16 * GIB, {}, downloads_at_start=True)
    assert downloading["failureThreshold"] == math.ceil((180 + 16 * GIB / (200 * 1024 ** 2)
                                                         + 16 * GIB / (50 * 1024 ** 2)) / 10.0)
    assert vllm_pod.startup_probe(None, {})["failureThreshold"] == 180
    assert vllm.plan([hf_model(startup_probe_seconds=600)], settings())["models"][0]["startup_probe"][
        "failureThreshold"] == 60


def test_startup_probe_filter_accepts_quantities():
    assert vllm_filter.vllm_startup_probe("2Gi")["failureThreshold"] == math.ceil((180 + 2 * 1024 / 200.0) / 10)


def test_gpu_resource_in_resources_and_shm_above_memory_limit_are_refused():
    message = one_error([hf_model(resources={"limits": {"nvidia.com/gpu": 2}})])
    assert "set gpus instead" in message
    message = one_error([hf_model(resources={"limits": {"memory": "8Gi"}}, shm_size="8Gi")])
    assert "shm_size 8Gi is not below resources.limits.memory 8Gi" in message


def test_unknown_keys_names_and_duplicates():
    assert "unknown keys max_model_length" in one_error([hf_model(max_model_length=4096)])
    bad_source = {"repository": "a/b", "type": "huggingface", "repo": "a/b", "revision": "r"}
    assert "unknown keys repository" in one_error([{"name": "x", "source": bad_source}])
    assert "must be a DNS label" in one_error([hf_model("Llama_3")])
    assert "listed twice" in one_error([hf_model("a"), hf_model("a")])


def test_all_problems_are_returned_together():
    errors = errors_of([hf_model("a", gpus=2, tensor_parallel_size=3), hf_model("b", quantization="awq4"),
                        hf_model("c", dtype="fp64", gpu_memory_utilization=2)])
    assert len(errors) == 4
    assert any("quantization: 'awq4'" in error for error in errors)
    assert any("dtype: 'fp64'" in error for error in errors)


def test_s3_source_needs_a_uri_or_a_checkpoint_and_a_puller_image():
    message = one_error([{"name": "m", "source": {"type": "s3"}}], s3_puller_image="img")
    assert "no model_staging checkpoint named 'm'" in message
    message = one_error([{"name": "m", "source": {"type": "s3", "uri": "s3://models/m/"}}])
    assert "set vllm_s3_puller_image" in message


def test_plan_reports_a_non_list():
    assert vllm.plan({"name": "x"}, {})["errors"] == ["vllm_models: must be a list of model dicts (got dict)"]


def test_servers_fact_gives_the_in_cluster_url():
    servers = vllm.plan([hf_model()], settings(namespace="llm"))["servers"]
    assert servers["llama-3-1-8b"]["url"] == "http://llama-3-1-8b.llm.svc:8000/v1"


@pytest.mark.parametrize("text, expected", [("16Gi", 16 * GIB), ("100G", 100 * 1000 ** 3), (1024, 1024),
                                            ("1.5Ti", int(1.5 * 1024 ** 4)), ("500Mi", 500 * 1024 ** 2),
                                            ("1e9", 10 ** 9)])
def test_parse_bytes(text, expected):
    assert vllm_inputs.parse_bytes(text, "x") == expected


def test_parse_bytes_rejects_garbage_with_the_input_named():
    with pytest.raises(vllm_inputs.VllmInputError, match="vllm_cache_size: '100 gigs'"):
        vllm_inputs.parse_bytes("100 gigs", "vllm_cache_size")


def test_runtime_class_of_the_gpu_type_wins_over_the_cluster_wide_k3s_flag():
    types = gpu_types()
    spec = vllm.plan([hf_model(gpu_type="nvidia-ampere-a100")], settings(gpu_types=types), cluster=cluster())
    assert spec["models"][0]["runtime_class_name"] is None  # the type says null
    del types["nvidia-ampere-a100"]["runtime_class"]
    spec = vllm.plan([hf_model(gpu_type="nvidia-ampere-a100")], settings(gpu_types=types), cluster=cluster())
    assert spec["models"][0]["runtime_class_name"] == "nvidia"  # no per-type fact: k3s means nvidia


def test_missing_priority_class_is_reported():
    message = one_error([hf_model(priority_class_name="llm-high")], cluster(priority_classes=["system-node-critical"]))
    assert "PriorityClass 'llm-high' does not exist" in message
    assert errors_of([hf_model(priority_class_name="llm-high")], cluster(priority_classes=["llm-high"])) == []


def test_largest_node_from_discovery_is_checked_without_the_cluster():
    types = gpu_types()
    types["nvidia-ampere-a100"].update(gpus_total=16, gpus_per_node_max=8)
    message = one_error([hf_model(gpu_type="nvidia-ampere-a100", gpus=12)], gpu_types=types)
    assert "the largest node of GPU type nvidia-ampere-a100 has 8" in message


def test_unknown_free_count_skips_the_free_check():
    types = gpu_types()
    types["nvidia-l40"]["gpus_free"] = None  # gpu_discovery without pod allocations
    assert errors_of([hf_model(replicas=4)], cluster(), gpu_types=types) == []
