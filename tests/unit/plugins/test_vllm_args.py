"""vLLM command-line rendering of the vllm role (module_utils/vllm.py, filter vllm_cli_args)."""

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.llmops.serving.plugins.filter import vllm as vllm_filter
from ansible_collections.llmops.serving.plugins.module_utils import vllm
from vllm_fixtures import GIB, gpu_types, hf_model

L40 = {"gpu_types": gpu_types(), "gpu_type": "nvidia-l40", "is_k3s": True}


def resolve(model, **settings):
    merged = dict(L40)
    merged.update(settings)
    result = vllm.plan([model], merged)
    assert result["errors"] == [], result["errors"]
    return result["models"][0]


def flag_value(args, flag):
    return args[args.index(flag) + 1]


def test_minimal_huggingface_model_renders_model_first_then_fixed_flags():
    spec = resolve(hf_model())
    assert spec["args"] == [
        "meta-llama/Llama-3.1-8B-Instruct", "--host", "0.0.0.0", "--port", "8000",  # noqa: S104 - the flag value the role must render for in-pod serving
        "--served-model-name", "llama-3-1-8b", "--revision", "0e9e39f249a16976918f6564b8830bc894c89659",
        "--tensor-parallel-size", "1",
    ]
    assert spec["command"] == ["vllm", "serve"]


def test_seed_llama_3_1_8b_32k_context():
    spec = resolve(hf_model(served_model_name="meta-llama/Llama-3.1-8B-Instruct", max_model_len=32768,
                            gpu_memory_utilization=0.9, enable_prefix_caching=True))
    args = spec["args"]
    assert flag_value(args, "--max-model-len") == "32768"
    assert flag_value(args, "--gpu-memory-utilization") == "0.9"
    assert flag_value(args, "--served-model-name") == "meta-llama/Llama-3.1-8B-Instruct"
    assert "--enable-prefix-caching" in args
    assert "--no-enable-prefix-caching" not in args


def test_seed_mixtral_awq_on_two_gpus_gets_tensor_parallel_two():
    model = {"name": "mixtral-8x7b-awq", "gpus": 2, "quantization": "awq", "max_model_len": 16384,
             "source": {"type": "path", "path": "mixtral-8x7b-instruct-awq"}}
    spec = resolve(model)
    args = spec["args"]
    assert args[0] == "/models/mixtral-8x7b-instruct-awq"
    assert flag_value(args, "--tensor-parallel-size") == "2"
    assert flag_value(args, "--quantization") == "awq"
    assert flag_value(args, "--max-model-len") == "16384"
    assert "--pipeline-parallel-size" not in args
    assert spec["resources"]["limits"]["nvidia.com/gpu"] == "2"


def test_seed_deepseek_coder_v2_lite_65k_with_remote_code():
    model = {"name": "deepseek-coder-v2-lite", "max_model_len": 65536, "trust_remote_code": True,
             "max_num_seqs": 32, "max_num_batched_tokens": 8192, "dtype": "bfloat16", "enforce_eager": True,
             "source": {"repo": "deepseek-ai/DeepSeek-Coder-V2-Lite-Instruct", "revision": "main"}}
    args = resolve(model)["args"]
    assert args[0] == "deepseek-ai/DeepSeek-Coder-V2-Lite-Instruct"
    assert flag_value(args, "--max-model-len") == "65536"
    assert flag_value(args, "--max-num-seqs") == "32"
    assert flag_value(args, "--max-num-batched-tokens") == "8192"
    assert flag_value(args, "--dtype") == "bfloat16"
    assert "--trust-remote-code" in args and "--enforce-eager" in args


def test_prefix_caching_false_renders_negative_flag_and_unset_renders_nothing():
    off = resolve(hf_model(enable_prefix_caching=False))["args"]
    assert "--no-enable-prefix-caching" in off and "--enable-prefix-caching" not in off
    unset = resolve(hf_model())["args"]
    assert not [arg for arg in unset if "prefix-caching" in arg]


def test_pipeline_parallel_splits_gpus():
    args = resolve(hf_model(gpus=4, pipeline_parallel_size=2))["args"]
    assert flag_value(args, "--tensor-parallel-size") == "2"
    assert flag_value(args, "--pipeline-parallel-size") == "2"


def test_extra_args_as_dict_render_flags_booleans_and_json():
    args = resolve(hf_model(extra_args={"kv-cache-dtype": "fp8", "enable-chunked-prefill": True,
                                        "limit-mm-per-prompt": {"image": 2}, "swap-space": None}))["args"]
    assert args[-5:] == ["--kv-cache-dtype", "fp8", "--enable-chunked-prefill", "--limit-mm-per-prompt",
                         '{"image":2}']
    assert "--swap-space" not in args


def test_extra_args_as_list_are_appended_verbatim():
    args = resolve(hf_model(extra_args=["--swap-space", "8", "--disable-log-stats"]))["args"]
    assert args[-3:] == ["--swap-space", "8", "--disable-log-stats"]


@pytest.mark.parametrize("extra, field", [
    (["--max-model-len", "4096"], "max_model_len"),
    (["--tensor_parallel_size=2"], "tensor_parallel_size"),
    ({"port": 9000}, "vllm_port"),
    (["--model", "other"], "source"),
])
def test_extra_args_that_the_role_renders_are_refused_with_the_field_to_use(extra, field):
    result = vllm.plan([hf_model(extra_args=extra)], L40)
    assert len(result["errors"]) == 1
    assert "extra_args" in result["errors"][0] and field in result["errors"][0]


def test_s3_pull_reads_the_verified_local_copy_and_adds_the_init_container():
    settings = dict(L40, s3_puller_image="registry.local/llmops/ee:1", s3_credentials_secret_name="s3-creds",
                    s3_endpoint_url="http://minio.storage.svc:9000",
                    checkpoints={"mixtral": {"checkpoint_path": "s3://models/mixtral/", "total_bytes": 24 * GIB,
                                             "manifest_key": "mixtral/.llmops-manifest.json"}})
    result = vllm.plan([{"name": "mixtral", "source": {"type": "s3"}}], settings)
    assert result["errors"] == []
    spec = result["models"][0]
    assert spec["args"][0] == "/models/s3/models/mixtral"
    assert "--load-format" not in spec["args"]
    init = dict((item["name"], item) for item in spec["init_containers"])["s3-pull"]
    assert init["image"] == "registry.local/llmops/ee:1"
    assert init["command"] == ["python3", "/opt/llmops/vllm_s3_pull.py"]
    assert init["args"][:4] == ["--source", "s3://models/mixtral/", "--dest", "/models/s3/models/mixtral"]
    env = dict((item["name"], item) for item in init["env"])
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "s3-creds", "key": "AWS_ACCESS_KEY_ID"}
    assert env["S3_ENDPOINT_URL"]["value"] == "http://minio.storage.svc:9000"
    assert result["uses_puller"] is True
    assert spec["model_bytes"] == 24 * GIB
    assert "s3-creds" in spec["secrets"]


def test_s3_stream_hands_the_uri_to_vllm_with_runai_streamer():
    settings = dict(L40, s3_credentials_secret_name="s3-creds", s3_endpoint_url="http://minio:9000")
    result = vllm.plan([{"name": "m", "source": {"uri": "s3://models/m", "mode": "stream"}}], settings)
    assert result["errors"] == []
    spec = result["models"][0]
    assert spec["args"][0] == "s3://models/m/"
    assert flag_value(spec["args"], "--load-format") == "runai_streamer"
    env = dict((item["name"], item) for item in spec["env"])
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio:9000"
    assert env["RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING"]["value"] == "0"
    assert not spec["init_containers"]
    assert any("does not check the staging manifest" in warning for warning in result["warnings"])


def test_huggingface_token_and_api_key_come_from_secrets_by_reference():
    settings = dict(L40, api_key_secret_name="vllm-api-key")
    model = hf_model()
    model["source"]["token_secret"] = "hf-token"
    spec = vllm.plan([model], settings)["models"][0]
    env = dict((item["name"], item) for item in spec["env"])
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "token"}
    assert env["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "vllm-api-key", "key": "api-key"}
    assert env["HF_HOME"]["value"] == "/models/huggingface"
    assert "--api-key" not in spec["args"]


def test_env_merges_by_name_with_the_model_winning():
    settings = dict(L40, env={"VLLM_LOGGING_LEVEL": "INFO", "HF_HUB_OFFLINE": 0})
    spec = vllm.plan([hf_model(env={"VLLM_LOGGING_LEVEL": "DEBUG", "HF_HOME": "/models/hf"})], settings)["models"][0]
    names = [item["name"] for item in spec["env"]]
    assert len(names) == len(set(names))
    env = dict((item["name"], item.get("value")) for item in spec["env"])
    assert env == {"HF_HOME": "/models/hf", "VLLM_LOGGING_LEVEL": "DEBUG", "HF_HUB_OFFLINE": "0"}


def test_filter_vllm_cli_args_returns_args_and_raises_on_bad_input():
    assert vllm_filter.vllm_cli_args(hf_model(), L40)[0] == "meta-llama/Llama-3.1-8B-Instruct"
    with pytest.raises(AnsibleFilterError, match="gpu_memory_utilization"):
        vllm_filter.vllm_cli_args(hf_model(gpu_memory_utilization=1.5), L40)


def test_filter_plugin_exposes_all_filters():
    assert set(vllm_filter.FilterModule().filters()) == {
        "vllm_plan", "vllm_prune_targets", "vllm_cli_args", "vllm_startup_probe", "vllm_pod_problems"}
