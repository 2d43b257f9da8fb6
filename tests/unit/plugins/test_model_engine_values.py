"""Values generation of the model_engine role: required keys, no unknown keys, secrets by reference,
GPU facts mapped, bad input named with its fix."""

import copy
import json

import pytest
from ansible_collections.llmops.serving.plugins.module_utils import model_engine_values as me

T4_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
SECRET_WORDS = ("s3cr3t-password", "AKIAEXAMPLE", "wJalrXUtnFEMI")


def inputs(**overrides):
    base = {
        "namespace": "llm-engine",
        "endpoint_namespace": "llm-engine-endpoints",
        "tag": "0.9.3",
        "image_registry": "registry.local",
        "image_repository": "registry.local/llm-engine/model-engine",
        "inference_images": {"vllm": {"repository": "registry.local/vllm/vllm-openai", "tag": "v0.6.3"}},
        "postgres": {"host": "postgres.llm-engine", "port": 5432, "database": "llm_engine",
                     "user": "llm_engine", "secret_name": "llm-engine-postgres-credentials",
                     "password_key": "password", "database_url_key": "database_url",
                     "namespace": "llm-engine"},
        "redis": {"host": "redis.llm-engine.svc", "port": 6379, "tls": True, "ca_secret_name": "redis-ca",
                  "ca_secret_key": "ca.crt", "password_secret_name": "redis-auth",
                  "password_secret_key": "password", "namespace": "llm-engine", "url_scheme": "rediss"},
        "s3_endpoint_url": "http://minio.storage:9000",
        "s3_credentials_secret": "llm-engine-s3",
        "checkpoints": {"llama-3-8b": {"checkpoint_path": "s3://models/llama-3-8b/",
                                       "manifest_key": "llama-3-8b/.manifest.json"}},
        "gpu_types": {
            "nvidia-tesla-t4": {"nodes": ["t4-a"], "gpus_total": 1, "gpus_free": 1, "gpu_memory_mib": 15360,
                                "resource_name": "nvidia.com/gpu",
                                "node_selector": {"k8s.amazonaws.com/accelerator": "nvidia-tesla-t4"},
                                "tolerations": [T4_TOLERATION], "vendor": "nvidia"},
            "nvidia-hopper-h100": {"nodes": ["h100-a"], "gpus_total": 8, "gpus_free": 8,
                                   "gpu_memory_mib": 81559, "resource_name": "nvidia.com/gpu",
                                   "node_selector": {"k8s.amazonaws.com/accelerator": "nvidia-hopper-h100"},
                                   "tolerations": [T4_TOLERATION,
                                                   {"key": "dedicated", "operator": "Equal", "value": "gpu",
                                                    "effect": "NoSchedule"}],
                                   "vendor": "nvidia"},
        },
        "recommended_hardware": {
            "byGpuMemoryGb": [
                {"gpu_memory_le": 12, "cpus": 4, "gpus": 1, "memory": "16Gi", "storage": "40Gi",
                 "gpu_type": "nvidia-tesla-t4", "nodes_per_worker": 1},
                {"gpu_memory_le": 640, "cpus": 80, "gpus": 8, "memory": "800Gi", "storage": "640Gi",
                 "gpu_type": "nvidia-hopper-h100", "nodes_per_worker": 1},
            ],
            "byModelName": [],
        },
    }
    base.update(overrides)
    return base


def values(**overrides):
    return me.finalize_values(me.build_values(inputs(**overrides)))


def errors_of(**overrides):
    with pytest.raises(me.ModelEngineInputError) as info:
        me.finalize_values(me.build_values(inputs(**overrides)))
    return info.value.errors


# --------------------------------------------------------------------------- required keys


def test_generated_values_have_no_unknown_keys_and_every_required_key():
    result = values()
    assert me.unknown_keys(result) == []
    launch = result["config"]["values"]["launch"]
    infra = result["config"]["values"]["infra"]
    assert sorted(set(me.LAUNCH_REQUIRED_KEYS) - set(launch)) == []
    for key in me.INFRA_REQUIRED_KEYS:
        assert infra[key] not in (None, ""), key


def test_on_prem_settings():
    result = values()
    infra = result["config"]["values"]["infra"]
    launch = result["config"]["values"]["launch"]
    assert infra["cloud_provider"] == "onprem"
    assert infra["docker_registry_type"] == "onprem"
    # written once, by the chart from the top-level value (templates/service_config_map.yaml:32-33)
    assert "celery_broker_type_redis" not in infra and result["celery_broker_type_redis"] is True
    assert infra["redis_host"] == "redis.llm-engine.svc"
    assert infra["s3_bucket"] == "models"  # taken from the staged checkpoints
    assert launch["endpoint_namespace"] == "llm-engine-endpoints"
    assert "gateway_namespace" not in launch  # the chart writes it (service_config_map.yaml:14)
    assert launch["cache_redis_onprem_url"] == "rediss://redis.llm-engine.svc:6379/15"
    assert launch["cloud_file_llm_fine_tune_repository"] == "s3://models/llm-ft-job-repository"
    assert launch["vllm_repository"] == "registry.local/vllm/vllm-openai"
    assert launch["tgi_repository"] == "registry.local/text-generation-inference"
    assert result["inferenceFramework"] == {"vllm": "v0.6.3"}
    assert result["celeryBrokerType"] == "elasticache"
    assert result["s3EndpointUrl"] == "http://minio.storage:9000"
    assert result["tag"] == "0.9.3"
    assert result["image"]["gatewayRepository"] == "registry.local/llm-engine/model-engine"
    assert result["autoscaling"]["horizontal"]["enabled"] is False  # no metrics adapter assumed
    # no fullname change: the server looks its ConfigMaps up as model-engine-...
    assert "fullnameOverride" not in result and "serviceIdentifier" not in result


def test_booleans_stay_booleans():
    # The chart writes booleans unquoted (`kindIs "bool"`, templates/service_config_map.yaml:17-18)
    launch = values()["config"]["values"]["launch"]
    assert launch["istio_enabled"] is False
    assert launch["sensitive_log_mode"] is False
    assert values(istio_enabled=True)["config"]["values"]["launch"]["istio_enabled"] is True


def test_duplicate_config_keys_are_refused():
    for path, extra in (("config.values.launch.gateway_namespace", {"launch": {"gateway_namespace": "x"}}),
                        ("config.values.infra.celery_broker_type_redis",
                         {"infra": {"celery_broker_type_redis": True}})):
        with pytest.raises(me.ModelEngineInputError) as info:
            me.finalize_values(me.build_values(inputs()), {"config": {"values": extra}})
        assert "chart value %s must not be set" % path in str(info.value)
        assert "unknown chart value" not in str(info.value)


def test_keys_the_chart_never_reads_are_unknown():
    # the first unknown level is reported (gunicorn, not gunicorn.workerTimeout)
    for path, reported in (("gunicorn.workerTimeout", "gunicorn"), ("wasmPlugin.enabled", "wasmPlugin"),
                           ("gateway.sidecarCPURequest", "gateway"), ("keyvaultName", "keyvaultName"),
                           ("image.cacherRepository", "image.cacherRepository"),
                           ("inferenceFramework.sglang", "inferenceFramework.sglang")):
        head, leaf = path.rpartition(".")[::2]
        extra = {leaf: 1}
        for part in reversed(head.split(".") if head else []):
            extra = {part: extra}
        assert [item["path"] for item in me.unknown_keys(me.deep_merge(values(), extra))] == [reported]


def test_cacher_repository_is_refused_with_the_reason():
    text = "\n".join(errors_of(image_repositories={"cacher": "registry.local/other"}))
    assert "model_engine_image_repositories.cacher has no effect" in text
    assert "cacher_deployment.yaml:42" in text


def test_triton_image_is_set_so_the_chart_renders():
    assert values()["triton"] == {"image": {"repository": "registry.local/tritonserver", "tag": "0.9.3"}}


def test_virtualservice_has_hosts_and_gateways():
    service = values(istio_enabled=True)["virtualservice"]
    assert service == {"enabled": True, "hostDomains": ["llm-engine.svc.cluster.local"], "gateways": ["mesh"]}


def test_noexecute_gpu_taint_is_refused_with_the_fix():
    gpu = copy.deepcopy(inputs()["gpu_types"])
    gpu["nvidia-tesla-t4"]["tolerations"] = [{"key": "dedicated", "operator": "Equal", "value": "llm",
                                              "effect": "NoExecute"}]
    text = "\n".join(errors_of(gpu_types=gpu))
    assert "tainted dedicated=llm:NoExecute" in text and "NoSchedule" in text
    assert "service_template_config_map.yaml:113-117" in text


def test_result_backend_is_the_roles_redis_with_the_password_from_the_env():
    env = dict((e["name"], e.get("value")) for e in values()["extraEnvVars"])
    assert env["CELERY_RESULT_BACKEND"] == (
        "rediss://:$(REDIS_AUTH_TOKEN)@redis.llm-engine.svc:6379/14?ssl_cert_reqs=required"
        "&ssl_ca_certs=%2Fetc%2Fllmops%2Fredis-ca%2Fca.crt")
    assert env["SSL_CERT_FILE"] == "/etc/llmops/redis-ca/ca.crt"
    plain = dict((e["name"], e.get("value")) for e in values(
        redis=dict(inputs()["redis"], tls=False, url_scheme="redis", password_secret_name=""))["extraEnvVars"])
    assert plain["CELERY_RESULT_BACKEND"] == "redis://redis.llm-engine.svc:6379/14"
    assert "SSL_CERT_FILE" not in plain


def test_service_config_document_carries_the_password_and_typed_booleans():
    import yaml

    result = values()
    doc = yaml.safe_load(me.service_config_document(result, "llm-engine", "p@ss/word"))
    assert doc["cache_redis_onprem_url"] == "rediss://:p%40ss%2Fword@redis.llm-engine.svc:6379/15"
    assert doc["dd_trace_enabled"] is False and doc["istio_enabled"] is False
    assert doc["gateway_namespace"] == "llm-engine"
    assert result["config"]["file"]["launch"] == "/etc/llmops/service-config/service_config.yaml"
    assert "p@ss" not in json.dumps(result)


def test_redis_notes_say_what_upstream_forces():
    notes = me.redis_upstream_notes({"password_secret_name": "r", "tls": False})
    assert len(notes) == 1 and "core/celery/app.py:212-214" in notes[0]
    notes = me.redis_upstream_notes({"password_secret_name": "r", "tls": True})
    assert len(notes) == 1 and "ssl_cert_reqs=none" in notes[0]
    assert me.redis_upstream_notes({"password_secret_name": "", "tls": False}) == []


def test_s3_ca_configmap_is_mounted_and_named_in_aws_ca_bundle():
    result = values(s3_ca_configmap="llmops-s3-ca")
    env = dict((e["name"], e.get("value")) for e in result["extraEnvVars"])
    assert env["AWS_CA_BUNDLE"] == "/etc/llmops/s3-ca/ca.crt"
    assert {"name": "llmops-s3-ca", "mountPath": "/etc/llmops/s3-ca", "readOnly": True} in result["extraVolumeMounts"]
    assert "model_engine_s3_ca_configmap 'Bad_Name'" in "\n".join(errors_of(s3_ca_configmap="Bad_Name"))


def test_node_selector_default_clears_the_chart_default():
    # null deletes the chart's `node-lifecycle: normal`, which on-prem nodes lack
    assert values()["nodeSelector"] is None
    assert values(node_selector={"role": "platform"})["nodeSelector"] == {"role": "platform"}


# --------------------------------------------------------------------------- secrets only by reference


def test_secrets_appear_only_by_reference():
    result = values()
    text = json.dumps(result)
    for word in SECRET_WORDS:
        assert word not in text
    assert result["secrets"]["kubernetesDatabaseSecretName"] == "llm-engine-postgres-credentials"
    assert result["redis"]["authSecretName"] == "redis-auth"
    assert result["redis"]["authSecretKey"] == "password"
    assert result["redis"]["enableAuth"] is True and result["redis"]["enableTLS"] is True
    assert "auth" not in result["redis"]
    env = {item["name"]: item for item in result["extraEnvVars"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "llm-engine-s3",
                                                                     "key": "AWS_ACCESS_KEY_ID"}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "llm-engine-s3"
    assert "value" not in env["AWS_SECRET_ACCESS_KEY"]
    assert result["extraPodEnvFrom"] == [{"secretRef": {"name": "llm-engine-s3"}}]


def test_redis_password_in_values_is_refused():
    with pytest.raises(me.ModelEngineInputError) as info:
        me.finalize_values(me.build_values(inputs()), {"redis": {"auth": "s3cr3t-password"}})
    assert any("redis.auth" in e and "by reference" in e for e in info.value.errors)
    assert not any("s3cr3t-password" in e for e in info.value.errors)


# --------------------------------------------------------------------------- GPU facts


def test_gpu_facts_are_mapped():
    result = values()
    assert result["gpuTolerations"] == [T4_TOLERATION, {"key": "dedicated", "operator": "Equal",
                                                        "value": "gpu", "effect": "NoSchedule"}]
    devices = {device["name"]: device for device in result["imageCache"]["devices"]}
    assert sorted(devices) == ["nvidia-hopper-h100", "nvidia-tesla-t4"]
    assert devices["nvidia-tesla-t4"]["nodeSelector"] == {"k8s.amazonaws.com/accelerator": "nvidia-tesla-t4"}
    rows = result["recommendedHardware"]["byGpuMemoryGb"]
    assert [row["gpu_type"] for row in rows] == ["nvidia-tesla-t4", "nvidia-hopper-h100"]


def test_recommended_hardware_must_point_at_discovered_gpus():
    hardware = {"byGpuMemoryGb": [{"gpu_memory_le": 24, "cpus": 10, "gpus": 1, "memory": "24Gi",
                                   "storage": "80Gi", "gpu_type": "nvidia-ampere-a10"}], "byModelName": []}
    errors = errors_of(recommended_hardware=hardware)
    assert any("nvidia-ampere-a10" in e and "no discovered GPU carries that accelerator label" in e for e in errors)


def test_no_gpu_fails_unless_allowed():
    errors = errors_of(gpu_types={}, recommended_hardware={"byGpuMemoryGb": [], "byModelName": []})
    assert any("gpu_discovery_types is empty" in e for e in errors)
    result = values(gpu_types={}, recommended_hardware={"byGpuMemoryGb": [], "byModelName": []},
                    require_gpu=False)
    assert result["gpuTolerations"] == [] and result["imageCache"]["devices"] == []


# --------------------------------------------------------------------------- bad input


def test_unknown_key_in_extra_values_names_the_fix():
    with pytest.raises(me.ModelEngineInputError) as info:
        me.finalize_values(me.build_values(inputs()), {
            "config": {"values": {"launch": {"s3_file_llm_fine_tuning_job_repository": "s3://x/y"}}},
            "imagePullSecret": [{"name": "x"}],
        })
    text = "\n".join(info.value.errors)
    assert ("config.values.launch.s3_file_llm_fine_tuning_job_repository (did you mean "
            "config.values.launch.cloud_file_llm_fine_tune_repository?)") in text
    assert "imagePullSecret (did you mean imagePullSecrets?)" in text
    assert "model_engine_extra_known_keys" in text


def test_extra_known_keys_accept_keys_of_newer_charts():
    extra = {"config": {"values": {"launch": {"brand_new_key": "x"}}}, "newTopLevel": {"a": 1}}
    result = me.finalize_values(me.build_values(inputs()), extra,
                                extra_known=["config.values.launch.brand_new_key", "newTopLevel"])
    assert result["config"]["values"]["launch"]["brand_new_key"] == "x"


def test_free_form_maps_are_not_checked():
    extra = {"nodeSelector": {"any/label": "x"}, "resources": {"limits": {"cpu": "4"}},
             "serviceAccount": {"annotations": {"a/b": "c"}}}
    assert me.finalize_values(me.build_values(inputs()), extra)["nodeSelector"] == {"any/label": "x"}


@pytest.mark.parametrize("extra, needle", [
    ({"fullnameOverride": "llm"}, "fullnameOverride"),
    ({"serviceIdentifier": "x"}, "serviceIdentifier"),
    ({"config": {"values": {"infra": {"env": "prod"}}}}, "config.values.infra.env"),
    ({"config": {"values": {"launch": {"dd_trace_enabled": True}}}}, "duplicate YAML key"),
])
def test_forbidden_keys(extra, needle):
    with pytest.raises(me.ModelEngineInputError) as info:
        me.finalize_values(me.build_values(inputs()), extra)
    assert any(needle in e for e in info.value.errors)


@pytest.mark.parametrize("overrides, needle", [
    ({"tag": "latest"}, "model_engine_tag 'latest' is not a pinned image tag"),
    ({"tag": ""}, "model_engine_tag"),
    ({"inference_images": {"vllm": {"repository": "r/vllm", "tag": "latest"}}},
     "model_engine_inference_images.vllm.tag 'latest' is not pinned"),
    ({"inference_images": {"vlm": {"tag": "1"}}}, "unknown frameworks vlm"),
    ({"namespace": "LLM_Engine"}, "model_engine_namespace 'LLM_Engine' is not a valid namespace"),
    ({"postgres": {"secret_name": "pg", "database_url_key": "url", "namespace": "llm-engine"}},
     "always reads key 'database_url'"),
    ({"postgres": {"secret_name": "pg", "namespace": "data"}}, "create the Secret in 'llm-engine'"),
    ({"redis": {"port": 6379}}, "redis_connection.host is required"),
    ({"redis": {"host": "r", "password_secret_name": "Bad_Name", "password_secret_key": "p"}},
     "is not a valid Secret name"),
    ({"s3_endpoint_url": "minio:9000"}, "must be an http(s) URL"),
    ({"checkpoints": {"m": {"checkpoint_path": "/data/m"}}}, "is not an s3:// URL"),
    ({"s3_bucket": "other"}, "are in bucket 'models', not in model_engine_s3_bucket 'other'"),
    ({"service_type": "Ingress"}, "model_engine_service_type 'Ingress'"),
    ({"service_node_port": 30080}, "set the type to NodePort"),
    ({"image_repository": ""}, "model_engine_image_repository is required"),
])
def test_bad_input_is_named_with_the_fix(overrides, needle):
    errors = errors_of(**overrides)
    assert any(needle in e for e in errors), errors


def test_all_errors_are_reported_at_once():
    errors = errors_of(tag="latest", s3_endpoint_url="nope", service_type="x")
    assert len(errors) >= 3


def test_build_values_does_not_modify_its_input():
    given = inputs()
    snapshot = copy.deepcopy(given)
    me.build_values(given)
    assert given == snapshot


# --------------------------------------------------------------------------- helpers


def test_deep_merge():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    merged = me.deep_merge(base, {"a": {"c": [3], "e": None}, "f": {"g": 1}})
    assert merged == {"a": {"b": 1, "c": [3], "e": None}, "d": 1, "f": {"g": 1}}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 1}


def test_unknown_keys_suggestions():
    found = me.unknown_keys({"image": {"gatewayRepo": "x"}, "totallyunrelatedthing": 1})
    assert {"path": "image.gatewayRepo", "suggestion": "image.gatewayRepository"} not in found  # too far
    assert {"path": "totallyunrelatedthing", "suggestion": None} in found
    found = me.unknown_keys({"replicaCount": {"gateways": 2}})
    assert found == [{"path": "replicaCount.gateways", "suggestion": "replicaCount.gateway"}]


def test_served_api_kinds():
    apis = {"v1": {"ConfigMap": {}, "Pod": {}}, "apps/v1": {"Deployment": {}},
            "telemetry.istio.io/v1": {"Telemetry": {}}}
    assert me.served_api_kinds(apis) == ["apps/v1/Deployment", "telemetry.istio.io/v1/Telemetry",
                                         "v1/ConfigMap", "v1/Pod"]


def test_render_record_is_stored_and_known():
    result = me.finalize_values(me.build_values(inputs()), render_record={"postRenderer": "abc"})
    assert result["llmopsServing"] == {"postRenderer": "abc"}
    assert me.unknown_keys(result) == []


# --------------------------------------------------------------------------- Secrets and rollouts


def test_secret_references_cover_every_secret_the_release_reads():
    refs = me.secret_references(values(image_pull_secret="regcred"), "llm-engine", "llm-engine-endpoints",
                                keda_served=True)
    by_place = {(r["namespace"], r["name"]): r["keys"] for r in refs}
    assert by_place == {
        ("llm-engine", "llm-engine-postgres-credentials"): ["database_url"],
        ("llm-engine", "redis-auth"): ["password"],
        ("llm-engine-endpoints", "redis-auth"): ["password"],
        ("llm-engine", "redis-ca"): ["ca.crt"],
        ("llm-engine-endpoints", "redis-ca"): ["ca.crt"],
        ("llm-engine", "llm-engine-s3"): ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"],
        ("llm-engine-endpoints", "llm-engine-s3"): [],
        ("llm-engine", "regcred"): [],
        ("llm-engine-endpoints", "regcred"): [],
    }
    without_keda = me.secret_references(values(), "llm-engine", "llm-engine-endpoints")
    places = {(r["namespace"], r["name"]) for r in without_keda}
    assert ("llm-engine-endpoints", "redis-auth") not in places
    assert ("llm-engine-endpoints", "redis-ca") not in places and ("llm-engine", "redis-ca") in places


REDIS_TLS = {"host": "redis.llm-engine.svc", "port": 6380, "tls": True, "ca_secret_name": "redis-ca",
             "ca_secret_key": "tls-ca.pem", "password_secret_name": "redis-cluster",
             "password_secret_key": "password", "namespace": "llm-engine", "url_scheme": "rediss"}


def test_tls_redis_mounts_the_ca_into_the_control_plane_and_the_cache_url_verifies_with_it():
    result = values(redis=dict(REDIS_TLS), redis_ca_mount_dir="/run/redis-ca")
    assert result["extraVolumes"][1:] == [{"name": "llmops-redis-ca", "secret": {
        "secretName": "redis-ca", "items": [{"key": "tls-ca.pem", "path": "ca.crt"}], "defaultMode": 0o444}}]
    assert result["extraVolumeMounts"][1:] == [{"name": "llmops-redis-ca", "mountPath": "/run/redis-ca",
                                                "readOnly": True}]
    url = result["config"]["values"]["launch"]["cache_redis_onprem_url"]
    # no query string (upstream's cache_redis_db_index reads the text after the last "/"); the CA
    # reaches redis-py through SSL_CERT_FILE
    assert url == "rediss://redis.llm-engine.svc:6380/15"
    assert {"name": "SSL_CERT_FILE", "value": "/run/redis-ca/ca.crt"} in result["extraEnvVars"]
    # the password is not in the values (the role's service-config Secret carries it)
    assert "@" not in url
    assert result["redis"]["enableTLS"] is True and result["redis"]["authSecretName"] == "redis-cluster"
    assert me.redis_ca_secret(result) == {"name": "redis-ca", "key": "tls-ca.pem"}


def test_tls_without_a_ca_secret_verifies_against_the_system_store():
    result = values(redis=dict(REDIS_TLS, ca_secret_name=None))
    assert [v["name"] for v in result["extraVolumes"]] == ["llmops-service-config"]
    assert result["config"]["values"]["launch"]["cache_redis_onprem_url"] == "rediss://redis.llm-engine.svc:6380/15"
    assert me.redis_ca_secret(result) is None


def test_plain_redis_mounts_nothing():
    result = values(redis=dict(REDIS_TLS, tls=False, url_scheme="redis"))
    assert [v["name"] for v in result["extraVolumes"]] == ["llmops-service-config"]
    assert result["config"]["values"]["launch"]["cache_redis_onprem_url"] == "redis://redis.llm-engine.svc:6380/15"
    assert me.keda_redis_auth(result, True) == {"name": "redis-cluster", "key": "password"}


def test_keda_auth_carries_the_ca_only_with_tls_and_keda():
    result = values(redis=dict(REDIS_TLS))
    assert me.keda_redis_auth(result, True) == {"name": "redis-cluster", "key": "password",
                                                "ca": {"name": "redis-ca", "key": "tls-ca.pem"}}
    assert me.keda_redis_auth(result, False) is None


def test_bad_redis_tls_inputs_are_named():
    with pytest.raises(me.ModelEngineInputError) as info:
        me.build_values(inputs(redis=dict(REDIS_TLS, url_scheme="redis", ca_secret_name="Bad_Name"),
                               redis_ca_mount_dir="relative/dir"))
    text = str(info.value)
    assert "redis_connection.tls is true but url_scheme is 'redis'" in text
    assert "redis_connection.ca_secret_name: 'Bad_Name' is not a valid Secret name" in text
    assert "model_engine_redis_ca_mount_dir 'relative/dir' must be an absolute path" in text


def test_missing_secrets_names_secret_and_key_never_values():
    refs = me.secret_references(values(), "llm-engine", "llm-engine-endpoints")
    found = {"llm-engine/llm-engine-postgres-credentials": ["url"],
             "llm-engine/redis-auth": ["password"],
             "llm-engine/redis-ca": ["ca.crt", "tls.crt"],
             "llm-engine/llm-engine-s3": ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"],
             "llm-engine-endpoints/llm-engine-s3": None}
    problems = me.missing_secrets(refs, found)
    assert len(problems) == 2
    assert problems[0].startswith("Secret llm-engine/llm-engine-postgres-credentials lacks key(s) database_url")
    assert problems[1].startswith("Secret llm-engine-endpoints/llm-engine-s3 does not exist")
    found["llm-engine/llm-engine-postgres-credentials"] = ["database_url"]
    found["llm-engine-endpoints/llm-engine-s3"] = ["AWS_ACCESS_KEY_ID"]
    assert me.missing_secrets(refs, found) == []


def deployment(name, replicas=1, generation=2, observed=2, updated=1, total=1, available=1):
    return {"metadata": {"name": name, "generation": generation}, "spec": {"replicas": replicas},
            "status": {"observedGeneration": observed, "updatedReplicas": updated, "replicas": total,
                       "availableReplicas": available}}


def test_rollout_pending():
    done = [deployment(n) for n in me.CONTROL_PLANE_DEPLOYMENTS]
    assert me.rollout_pending(done) == {}
    assert me.rollout_pending(done[:2]) == {"model-engine-cacher": "not found"}
    cases = [
        (deployment("model-engine", observed=1), "has not seen generation 2"),
        (deployment("model-engine", replicas=2, updated=1, total=2, available=2), "1 of 2 replicas updated"),
        # all available and as many as wanted, but one old replica is still there (surge)
        (deployment("model-engine", replicas=2, updated=2, total=3, available=3), "1 old replicas"),
        (deployment("model-engine", updated=1, total=1, available=0), "0 of 1 updated replicas available"),
    ]
    for item, reason in cases:
        pending = me.rollout_pending([item] + done[1:])
        assert list(pending) == ["model-engine"] and reason in pending["model-engine"], pending


def test_filter_plugin_reports_every_error_as_one_ansible_error():
    from ansible.errors import AnsibleFilterError
    from ansible_collections.llmops.serving.plugins.filter.model_engine import FilterModule

    filters = FilterModule().filters()
    assert filters["model_engine_values"](inputs())["tag"] == "0.9.3"
    with pytest.raises(AnsibleFilterError) as info:
        filters["model_engine_values"](inputs(tag="latest"), {"imagePullSecret": []})
    message = str(info.value)
    assert message.startswith("model_engine: bad input:")
    assert "model_engine_tag 'latest'" in message and "imagePullSecret (did you mean imagePullSecrets?)" in message
    lookups = [{"item": {"namespace": "ns", "name": "db", "keys": ["database_url"], "why": ["db"]},
                "resources": [{"data": {"database_url": "c2VjcmV0"}}]},
               {"item": {"namespace": "ns", "name": "gone", "keys": [], "why": ["x"]}, "resources": []}]
    problems = filters["model_engine_missing_secrets"](lookups)
    assert problems == ["Secret ns/gone does not exist (x): create it before installing"]
