"""Issue 18, items 1-5 and 7: the vllm role's decisions that depend on the vLLM it deploys, checked
against the release data of vLLM 0.10.2 (plugins/module_utils/vllm_releases/vllm-0.10.2.json) and, for
the rendered arguments, against argparse rebuilt from that data (tests/helpers/vllm_release.py)."""

import errno
import glob
import os
import pathlib
import shutil
import subprocess
import tempfile

import pytest
from ansible_collections.llmops.serving.plugins.module_utils import vllm, vllm_cli, vllm_model
from test_vllm_templates import by_kind, render
from vllm_fixtures import REPO_ROOT, gpu_types, hf_model

from tests.helpers import vllm_release

L40 = {"gpu_types": gpu_types(), "gpu_type": "nvidia-l40", "is_k3s": True}
DATA = vllm_release.load("0.10.2")


def plan(model, **settings):
    merged = dict(L40)
    merged.update(settings)
    return vllm.plan([model], merged)


# --------------------------------------------------------------------------- 1. quantization


@pytest.mark.parametrize("method", ["auto-round", "rtn", "inc", "petit_nvfp4", "awq_marlin", "fp8"])
def test_quantization_methods_of_the_release_are_accepted(method):
    result = plan(hf_model(quantization=method))
    assert result["errors"] == []
    args = result["models"][0]["args"]
    assert args[args.index("--quantization") + 1] == method
    assert vllm_release.check_args(args, DATA) == []


@pytest.mark.parametrize("method", ["aqlm", "marlin", "qqq"])
def test_quantization_methods_the_release_rejects_are_refused_without_pointing_at_extra_args(method):
    errors = plan(hf_model(quantization=method))["errors"]
    assert len(errors) == 1
    assert "vLLM 0.10.2" in errors[0] and "petit_nvfp4" in errors[0] and "leave it unset" in errors[0]
    assert "extra_args" not in errors[0]  # --quantization is the role's own flag: extra_args would refuse it


def test_an_image_tag_without_data_checks_against_the_newest_release_and_only_warns():
    result = plan(hf_model(quantization="marlin", image_tag="v0.99.0"))
    assert result["errors"] == []
    assert any("no data for vLLM image tag v0.99.0" in warning for warning in result["warnings"])
    assert any("'marlin' is not a quantization method of vLLM 0.10.2" in warning for warning in result["warnings"])


def test_tags_map_to_versions():
    assert vllm_cli.tag_version("v0.10.2") == "0.10.2"
    assert vllm_cli.tag_version("0.10.2") == "0.10.2"
    assert vllm_cli.tag_version("v0.10.2-cu128") == "0.10.2"
    assert vllm_cli.tag_version("latest") is None
    assert "0.10.2" in vllm_cli.known_versions()


# --------------------------------------------------------------------------- 2. conflicts


@pytest.mark.parametrize("extra, field", [
    (["-tp", "4"], "tensor_parallel_size"),
    (["-pp", "2"], "pipeline_parallel_size"),
    (["-q", "fp8"], "quantization"),
    (["-qfp8"], "quantization"),
    (["--tensor-parallel", "4"], "tensor_parallel_size"),
    (["--served-model", "x"], "served_model_name"),
    (["--quant=fp8"], "quantization"),
    (["--max_model_len", "4096"], "max_model_len"),
    (["--max-num", "8"], "max_num_seqs"),  # ambiguous in argparse, and it could only mean role-owned options
    (["--config", "/etc/vllm.yaml"], "config file"),
    ({"tensor-parallel": 2}, "tensor_parallel_size"),
])
def test_role_owned_options_are_refused_in_every_spelling_vllm_accepts(extra, field):
    errors = plan(hf_model(extra_args=extra))["errors"]
    assert len(errors) >= 1 and all("extra_args" in error for error in errors), errors
    assert any(field in error for error in errors), errors


def test_the_refusal_names_what_vllm_makes_of_the_token():
    errors = plan(hf_model(extra_args=["-tp", "4"]))["errors"]
    assert "-tp (vLLM 0.10.2 resolves it to --tensor-parallel-size)" in errors[0]


@pytest.mark.parametrize("extra, message", [
    (["--no-such-flag"], "--no-such-flag is not an option of vLLM 0.10.2"),
    (["--kv-cache-dtype", "fp9"], "--kv-cache-dtype fp9 is not accepted by vLLM 0.10.2"),
    (["--swap-space"], "--swap-space needs a value"),
    (["stray"], "'stray' is not an option"),
])
def test_extra_args_vllm_would_refuse_are_refused_before_anything_changes(extra, message):
    errors = plan(hf_model(extra_args=extra))["errors"]
    assert len(errors) == 1 and message in errors[0], errors


def test_other_abbreviations_and_short_forms_pass_and_parse():
    result = plan(hf_model(extra_args=["--swap", "8", "-dp", "1", "--kv-cache-dtype", "fp8"]))
    assert result["errors"] == []
    assert vllm_release.check_args(result["models"][0]["args"], DATA) == []


# --------------------------------------------------------------------------- 3. false in dict-form extra_args


def test_false_renders_the_negation_of_a_boolean_optional_flag():
    result = plan(hf_model(extra_args={"enable-chunked-prefill": False, "no-enable-prefix-caching": False}))
    args = result["models"][0]["args"]
    assert args[-2:] == ["--no-enable-chunked-prefill", "--enable-prefix-caching"]
    assert vllm_release.check_args(args, DATA) == []


def test_false_for_an_on_only_flag_is_an_error():
    errors = plan(hf_model(extra_args={"headless": False}))["errors"]
    assert len(errors) == 1 and "on-only flag" in errors[0] and "--headless" in errors[0]


def test_true_for_an_option_that_takes_a_value_is_an_error():
    errors = plan(hf_model(extra_args={"swap-space": True}))["errors"]
    assert len(errors) == 1 and "takes a value" in errors[0]


# --------------------------------------------------------------------------- 4. awq


def test_forcing_awq_warns_that_vllm_would_pick_awq_marlin():
    result = plan(hf_model(quantization="awq"))
    assert result["errors"] == []
    assert any("awq_marlin" in warning and "leave quantization unset" in warning for warning in result["warnings"])


def test_no_inventory_or_example_forces_the_slow_awq_or_gptq_kernels():
    texts = glob.glob(os.path.join(REPO_ROOT, "inventories", "*", "group_vars", "*", "*.yml"))
    texts += [os.path.join(REPO_ROOT, "roles", "vllm", "defaults", "main.yml"),
              os.path.join(REPO_ROOT, "roles", "vllm", "README.md")]
    for path in texts:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                value = line.split("quantization:", 1)[1].split("#")[0].strip() if "quantization:" in line else ""
                assert value not in vllm_model.SLOWER_WHEN_FORCED, "%s:%d forces %s" % (path, number, value)


# --------------------------------------------------------------------------- 5. what the Ingress publishes


@pytest.fixture(scope="module")
def ingress_manifests():
    models = [
        {"name": "llama", "source": {"type": "huggingface", "repo": "meta-llama/Llama-3.1-8B-Instruct",
                                     "revision": "abc"}, "ingress": {"enabled": True}},
        {"name": "own-host", "source": {"type": "path", "path": "m"},
         "ingress": {"host": "own.example.com", "path": "/"}},
    ]
    traefik = render(models, vllm_api_key_secret_name="vllm-key")
    nginx = render(models[:1], vllm_api_key_secret_name="vllm-key", vllm_ingress_class_name="nginx")
    return traefik, nginx


def _exposure(manifests):
    ingresses = [item for item in manifests if item["kind"] == "Ingress"]
    middlewares = [item for item in manifests if item["kind"] == "Middleware"]
    prefixes = {"llama": "/llama", "own-host": ""}
    return vllm_release.ingress_exposure(ingresses, middlewares, DATA, prefixes)


@pytest.mark.parametrize("variant", ["traefik", "nginx"])
def test_the_ingress_routes_only_paths_that_need_the_key_and_health(ingress_manifests, variant):
    manifests = ingress_manifests[0 if variant == "traefik" else 1]
    reached = _exposure(manifests)
    assert vllm_release.unguarded(reached) == []
    paths = set((name, route["path"]) for name, _external, route in reached)
    assert ("llama", "/v1/chat/completions") in paths and ("llama", "/health") in paths
    assert ("llama", "/invocations") not in paths and ("llama", "/tokenize") not in paths
    if variant == "traefik":
        assert ("own-host", "/v1/completions") in paths and ("own-host", "/health") in paths


def test_the_route_table_shows_what_the_key_does_not_guard():
    """The data, not a list typed here, says which routes answer without the key."""
    open_routes = set(route["path"] for route in DATA["routes"] if not route["requires_key"])
    assert {"/invocations", "/tokenize", "/detokenize", "/health", "/metrics"} <= open_routes
    assert all(route["requires_key"] == route["path"].startswith("/v1") for route in DATA["routes"])


def test_an_ingress_without_an_api_key_warns():
    result = plan(hf_model(ingress={"enabled": True}))
    assert any("without an API key" in warning for warning in result["warnings"])


# --------------------------------------------------------------------------- 7. puller user and cache owner


@pytest.fixture(scope="module")
def puller_pod():
    models = [{"name": "mixtral", "cache_type": "hostPath", "source": {"type": "s3", "uri": "s3://models/mixtral/"}}]
    manifests = by_kind(render(models, vllm_s3_puller_image="registry.local/llmops/ee:1"))
    return manifests[("Deployment", "mixtral")]["spec"]["template"]["spec"]


def test_the_rendered_pod_runs_the_puller_as_its_image_user_with_an_fs_group(puller_pod):
    assert puller_pod["securityContext"] == {"fsGroup": 1000, "fsGroupChangePolicy": "OnRootMismatch"}
    steps = dict((item["name"], item) for item in puller_pod["initContainers"])
    assert [item["name"] for item in puller_pod["initContainers"]] == ["cache-owner", "s3-pull"]
    assert steps["s3-pull"]["securityContext"]["runAsUser"] == 1000
    assert steps["s3-pull"]["securityContext"]["runAsGroup"] == 1000
    assert steps["s3-pull"]["securityContext"]["runAsNonRoot"] is True
    owner = steps["cache-owner"]
    assert owner["image"] == puller_pod["containers"][0]["image"]
    assert owner["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN", "FOWNER", "DAC_OVERRIDE"]}
    assert owner["volumeMounts"] == [{"name": "model-cache", "mountPath": "/models"}]


def _write_as(uid, gid, paths):
    """What the puller does first, as uid:gid in a child process: create its destination and hash-cache
    directories and a file in each. Returns 0, or the errno that stopped it."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            for path in paths:
                os.makedirs(path, exist_ok=True)
                open(os.path.join(path, "probe"), "w").close()
            code = 0
        except OSError as exc:
            code = exc.errno or 1
        finally:
            os._exit(code)
    _pid, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to the puller's uid needs root")
def test_the_cache_owner_step_lets_the_puller_write_a_root_owned_host_path():
    base = tempfile.mkdtemp(prefix="vllm-cache-owner-", dir="/tmp")  # noqa: S108 - must be reachable by uid 1000
    os.chmod(base, 0o755)  # noqa: S103 - the puller's uid must reach the cache, as on a node
    cache = pathlib.Path(base) / "vllm-cache"  # what a DirectoryOrCreate hostPath is: root-owned, 0755
    cache.mkdir(mode=0o755)
    os.chown(cache, 0, 0)
    try:
        _check_cache_owner_step(cache)
    finally:
        shutil.rmtree(base)


def _check_cache_owner_step(cache):
    spec = plan({"name": "m", "source": {"type": "s3", "uri": "s3://models/m/"}},
                s3_puller_image="ee:1", cache_mount_path=str(cache))["models"][0]
    steps = dict((item["name"], item) for item in spec["init_containers"])
    pull_args = steps["s3-pull"]["args"]
    targets = [pull_args[pull_args.index("--dest") + 1], pull_args[pull_args.index("--cache-dir") + 1]]
    uid, gid = steps["s3-pull"]["securityContext"]["runAsUser"], steps["s3-pull"]["securityContext"]["runAsGroup"]

    assert _write_as(uid, gid, targets) == errno.EACCES  # the failure of issue 18 item 7

    owner = subprocess.run(steps["cache-owner"]["command"], capture_output=True, text=True, check=False, timeout=60)
    assert owner.returncode == 0, owner.stderr
    assert _write_as(uid, gid, targets) == 0
    assert os.stat(cache).st_uid == 0  # only the puller's directories change hands
    assert os.stat(cache / "s3").st_uid == uid and os.stat(cache / ".llmops").st_gid == gid
    again = subprocess.run(steps["cache-owner"]["command"], capture_output=True, text=True, check=False, timeout=60)
    assert again.returncode == 0, again.stderr


def test_the_data_file_names_the_envs_the_role_sets():
    names = vllm_release.env_names_read(DATA)
    for name in ("HF_HOME", "HF_TOKEN", "VLLM_API_KEY", "AWS_ENDPOINT_URL", "RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING",
                 "AWS_EC2_METADATA_DISABLED", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert name in names, name
