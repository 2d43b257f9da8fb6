"""Contract: what the model_engine role renders works with the pinned LLM Engine server's own code.

A real redis-server runs the redis role's rendered configuration (password, TLS, its CA). The role's
values for it are rendered with the pinned chart (`helm template`); from the rendered gateway Deployment
come the environment variables a pod gets (Secret references resolved, ``$(VAR)`` expanded as the kubelet
does) and from the rendered ConfigMap the infra config; the launch config is the role's Secret document
(service_config_document). Then tests/contract/upstream_probe.py runs in the pinned server's venv
(tests/sandbox/upstream_venv.py) with that environment: upstream's config classes load both files, and
upstream's functions build the cache URL (common/config.py:96-156), the broker URL
(core/celery/app.py:199-216) and the result backend, and connect with them.
"""

import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest
import yaml
from ansible_collections.llmops.serving.plugins.module_utils import model_engine_values as me

from tests.contract.servers import RedisServer, free_port, other_ca, run_role
from tests.helpers import upstream
from tests.helpers.sandbox import REPO_ROOT

pytestmark = pytest.mark.contract

PROBE = os.path.join(REPO_ROOT, "tests", "contract", "upstream_probe.py")
NAMESPACE = "llm-engine"


def upstream_python():
    """The pinned server's venv python (built by `make sandbox-build`); fails with the fix when absent."""
    proc = subprocess.run(["python3", os.path.join(REPO_ROOT, "tests", "sandbox", "upstream_venv.py"), "python"],
                          capture_output=True, text=True, check=False,
                          env=dict(os.environ, LLMOPS_UPSTREAM_LLM_ENGINE=upstream.upstream_dir()))
    if proc.returncode != 0:
        pytest.fail("the pinned LLM Engine server venv is not built: run `make sandbox-build` (%s)"
                    % proc.stderr.strip())
    return proc.stdout.strip()


def helm_binary():
    from tests.sandbox import sandbox

    return sandbox.binaries()["helm"]


@pytest.fixture(scope="module")
def server(redis_binaries):
    workdir = tempfile.mkdtemp(prefix="llmops-me-upstream-contract-")
    srv = RedisServer(workdir, free_port(), tls=True)
    run_role("redis", "render_config.yml", srv.role_vars())
    srv.start(redis_binaries["server"])
    yield srv
    srv.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def values_for(server, mount):
    connection = {"host": "localhost", "port": server.port, "tls": True, "ca_secret_name": "redis-ca",
                  "ca_secret_key": "ca.crt", "password_secret_name": "redis-cluster",
                  "password_secret_key": "password", "namespace": NAMESPACE, "url_scheme": "rediss"}
    return me.finalize_values(me.build_values({
        "namespace": NAMESPACE, "endpoint_namespace": "llm-engine-endpoints", "tag": "0.9.3",
        "image_repository": "registry.local/llm-engine/model-engine",
        "inference_images": {"vllm": {"repository": "registry.local/vllm", "tag": "v0.6.3"}},
        "postgres": {"secret_name": "llm-engine-postgres-credentials", "namespace": NAMESPACE},
        "redis": connection, "s3_bucket": "models", "require_gpu": False, "redis_ca_mount_dir": str(mount)}))


def render(values, workdir):
    path = os.path.join(workdir, "values.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(values, handle)
    proc = subprocess.run([helm_binary(), "template", "model-engine", upstream.chart_dir(), "-n", NAMESPACE,
                           "-f", path], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def pod_env(container, secrets):
    """The container's environment as the kubelet builds it: Secret keys resolved, $(VAR) of earlier
    variables expanded, fieldRefs left out."""
    env = {}
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                                       lambda m: env.get(m.group(1), m.group(0)), str(item["value"]))
        elif "secretKeyRef" in (item.get("valueFrom") or {}):
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secrets["%s/%s" % (ref["name"], ref["key"])]
    return env


@pytest.fixture()
def probe(server, tmp_path):
    """Run the probe with the rendered gateway's environment; returns (result, values, env)."""
    mount = tmp_path / "redis-ca"
    mount.mkdir()
    shutil.copyfile(server.path("tls", "ca.crt"), str(mount / "ca.crt"))
    values = values_for(server, mount)
    docs = render(values, str(tmp_path))
    gateway = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "model-engine")
    container = gateway["spec"]["template"]["spec"]["containers"][0]
    env = pod_env(container, {"redis-cluster/password": server.password,
                              "llm-engine-postgres-credentials/database_url": "postgresql://unused"})
    config_map = next(d for d in docs if d["kind"] == "ConfigMap"
                      and d["metadata"]["name"] == "model-engine-service-config"
                      and d["metadata"].get("namespace") in (None, NAMESPACE))
    infra = tmp_path / "config.yaml"
    infra.write_text(config_map["data"]["infra_service_config"])
    launch = tmp_path / "service_config.yaml"
    launch.write_text(me.service_config_document(values, NAMESPACE, server.password))
    # the files are where the pod has them mounted; here they are in tmp_path
    assert env["DEPLOY_SERVICE_CONFIG_PATH"] == me.SERVICE_CONFIG_DIR + "/" + me.SERVICE_CONFIG_KEY
    assert env["ML_INFRA_SERVICES_CONFIG_PATH"] == me.INFRA_CONFIG_PATH
    env.update(DEPLOY_SERVICE_CONFIG_PATH=str(launch), ML_INFRA_SERVICES_CONFIG_PATH=str(infra))

    def run():
        proc = subprocess.run([upstream_python(), PROBE], capture_output=True, text=True, timeout=300,
                              env=dict(env, PATH=os.environ["PATH"], HOME=os.environ.get("HOME", "/tmp")),
                              check=False)
        assert proc.returncode == 0, proc.stderr[-4000:]
        return json.loads(proc.stdout)

    return {"run": run, "values": values, "env": env, "ca_file": str(mount / "ca.crt")}


def test_upstream_config_classes_load_the_rendered_config(probe):
    result = probe["run"]()
    assert result["launch_fields"] == {"unknown": [], "missing": [], "not_bool": []}
    assert result["infra_fields"] == {"unknown": [], "missing": [], "not_bool": []}
    assert result["dd_trace_enabled"] is False and result["istio_enabled"] is False
    assert result["infra"] == {"cloud_provider": "onprem", "celery_broker_type_redis": True}


def test_upstream_cache_url_authenticates_verifies_and_keda_reads_the_same_db(probe, server):
    result = probe["run"]()
    assert result["cache_url"] == "rediss://:TOKEN@localhost:%d/15" % server.port
    assert result["cache_set"] == {"ok": True, "value": True}
    assert result["cache_async"] == {"ok": True, "value": "v"}
    # KEDA's ScaledObject gets upstream's cache_redis_db_index; the gateway writes where redis-py connects
    assert result["cache_db_upstream"] == result["cache_db_redis_py"] == 15
    written = [db for db in range(16) if server.client(password=server.password, ca=probe["ca_file"], host="localhost",
                                                       db=db).exists("llmops:contract:cache")]
    assert written == [15]


def test_upstream_cache_refuses_a_server_signed_by_another_ca(probe):
    other_ca(probe["ca_file"])
    result = probe["run"]()
    assert result["cache_set"]["ok"] is False and "certificate verify failed" in result["cache_set"]["error"]


def test_result_backend_is_the_roles_redis(probe, server):
    expected = "rediss://:%s@localhost:%d/14?" % (server.password, server.port)
    assert probe["env"]["CELERY_RESULT_BACKEND"].startswith(expected)
    result = probe["run"]()
    assert result["backend_class"] == {"ok": True, "value": "RedisBackend"}
    assert result["backend_store"] == {"ok": True, "value": "SUCCESS"}


def test_upstream_broker_forces_unverified_tls(probe, server):
    """What the role's docs and warning say (redis_upstream_notes): with REDIS_AUTH_TOKEN set the broker
    URL is rediss://...?ssl_cert_reqs=none and connects even to a server signed by a foreign CA."""
    other_ca(probe["ca_file"])
    result = probe["run"]()
    assert result["broker_url"] == "rediss://:TOKEN@localhost:%d/0?ssl_cert_reqs=none" % server.port
    assert result["broker_ping"] == {"ok": True, "value": True}
