"""The S3 pull init container script of the vllm role (roles/vllm/files/vllm_s3_pull.py): it must
hand s3_model_stage's own pull the same parameters the module would use."""

import importlib.util
import os
import subprocess
import sys

import pytest
from ansible_collections.llmops.serving.plugins.modules import s3_model_stage

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "..", "roles", "vllm", "files", "vllm_s3_pull.py")


def load_script():
    spec = importlib.util.spec_from_file_location("vllm_s3_pull", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_split_source():
    script = load_script()
    assert script.split_source("s3://models/llama/8b/") == ("models", "llama/8b")
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        script.split_source("/models/llama")


def test_build_params_fills_every_module_option_and_pulls():
    script = load_script()
    args = type("Args", (), {"source": "s3://models/llama/", "dest": "/models/s3/models/llama", "concurrency": 8,
                             "cache_dir": "/models/.llmops/hash-cache"})()
    env = {"S3_ENDPOINT_URL": "http://minio:9000", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    params = script.build_params(s3_model_stage, args, env)
    assert set(s3_model_stage.argument_spec()) <= set(params)
    assert params["mode"] == "pull" and params["bucket"] == "models" and params["prefix"] == "llama"
    assert params["endpoint_url"] == "http://minio:9000" and params["addressing_style"] == "path"
    assert params["access_key"] == "k" and params["validate_certs"] is True
    assert params["delete_extra"] is False  # the module's default, never a guess of ours


def test_bad_source_is_a_usage_error(capsys):
    script = load_script()
    assert script.main(["--source", "models/llama", "--dest", "/tmp/x"], environ={}) == 2
    assert "s3://bucket/prefix" in capsys.readouterr().err


def test_a_python_without_ansible_core_is_told_to_install_it(tmp_path):
    """Issue 18 item 6: run in a bare venv (stdlib only, as a python3 + boto3 image would be without
    ansible-core), the script names ansible-core instead of failing with "No module named 'ansible'"."""
    venv = tmp_path / "bare"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", str(venv)],
                   check=True, capture_output=True, timeout=120)
    env = dict((key, value) for key, value in os.environ.items() if not key.startswith(("PYTHON", "ANSIBLE")))
    proc = subprocess.run([str(venv / "bin" / "python"), SCRIPT, "--source", "s3://models/llama/", "--dest",
                           str(tmp_path / "dest")], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "ansible-core" in proc.stderr and "lacks" in proc.stderr
    assert "boto3" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "dest").exists()


def test_missing_requirements_are_listed_in_install_order():
    script = load_script()
    present = {"boto3"}
    hints = script.missing_requirements(lambda name: object() if name in present else None)
    assert [hint.split(" ")[0] for hint in hints] == ["ansible-core", "the"]
    assert script.missing_requirements(lambda name: object()) == []
