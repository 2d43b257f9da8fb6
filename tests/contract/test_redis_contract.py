"""Contract: redis-server runs with the redis role's rendered config, TLS and password.

The role's render_config entry point writes redis.conf, the auth include, the certificates (its own
CA) and the password Secret's data; a real redis-server from the Debian package then proves that
clients need the password and the role's CA, and that the role's probe command works.
"""

import datetime
import json
import os
import shutil
import ssl
import subprocess
import tempfile

import pytest
import redis
from cryptography import x509

from tests.contract.servers import RedisServer, failure_messages, free_port, other_ca, run_role

pytestmark = pytest.mark.contract


@pytest.fixture(scope="module")
def tls_server(redis_binaries):
    workdir = tempfile.mkdtemp(prefix="llmops-redis-contract-")
    server = RedisServer(workdir, free_port(), tls=True)
    server.first_render = run_role("redis", "render_config.yml", server.role_vars())
    server.start(redis_binaries["server"])
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def load_cert(path):
    with open(path, "rb") as handle:
        return x509.load_pem_x509_certificate(handle.read())


def test_password_over_tls_with_the_role_ca(tls_server):
    client = tls_server.client(password=tls_server.password)
    assert client.ping() is True
    client.set("contract:key", "value")
    assert client.get("contract:key") == b"value"
    # the name check passes for localhost too (it is in the certificate)
    assert tls_server.client(password=tls_server.password, host="localhost").ping() is True


def test_generated_password_is_long_and_random(tls_server):
    password = tls_server.password
    assert len(password) == 48
    assert password.isalnum()
    assert len(set(password)) > 20


def test_no_password_is_refused(tls_server):
    with pytest.raises(redis.exceptions.AuthenticationError):
        tls_server.client().ping()


def test_wrong_password_is_refused(tls_server):
    with pytest.raises(redis.exceptions.AuthenticationError):
        tls_server.client(password="not-the-password-0123456789").ping()


def test_a_different_ca_is_refused(tls_server, tmp_path):
    client = tls_server.client(password=tls_server.password, ca=other_ca(str(tmp_path / "other-ca.crt")))
    with pytest.raises(redis.exceptions.ConnectionError) as excinfo:
        client.ping()
    assert "certificate verify failed" in str(excinfo.value)


def test_plain_tcp_is_refused(tls_server):
    with pytest.raises(redis.exceptions.ConnectionError):
        tls_server.client(password=tls_server.password, tls=False).ping()


def test_server_settings_from_the_role(tls_server):
    client = tls_server.client(password=tls_server.password)
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    assert client.config_get("port") == {"port": "0"}
    assert client.config_get("tls-port") == {"tls-port": str(tls_server.port)}
    assert client.config_get("dir")["dir"] == os.path.realpath(tls_server.data_dir)


def test_certificate_names_the_service(tls_server):
    cert = load_cert(tls_server.path("tls", "tls.crt"))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {
        "redis", "redis.llm-engine", "redis.llm-engine.svc", "redis.llm-engine.svc.cluster.local", "localhost"}
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    ca = load_cert(tls_server.path("tls", "ca.crt"))
    assert cert.issuer == ca.subject
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_probe_command_authenticates(tls_server, redis_binaries):
    with open(tls_server.path("probe.json"), encoding="utf-8") as handle:
        probe = json.load(handle)
    assert "--tls" in probe[-1] and "--cacert" in probe[-1]
    env = dict(os.environ, PATH=os.path.dirname(redis_binaries["cli"]) + os.pathsep + os.environ["PATH"])
    env.pop("REDISCLI_AUTH", None)
    assert subprocess.run(probe, env=dict(env, REDISCLI_AUTH=tls_server.password), check=False).returncode == 0
    assert subprocess.run(probe, env=env, check=False, capture_output=True).returncode != 0
    wrong = dict(env, REDISCLI_AUTH="wrong-password-0123456789")
    assert subprocess.run(probe, env=wrong, check=False, capture_output=True).returncode != 0


def test_password_and_certificates_not_in_the_output(tls_server):
    output = tls_server.first_render["stdout"] + tls_server.first_render["stderr"]
    assert tls_server.password not in output
    with open(tls_server.path("tls", "tls.key"), encoding="utf-8") as handle:
        key_body = handle.read().splitlines()[1]
    assert key_body not in output


def test_rerender_keeps_password_and_certificates(tls_server):
    before = {name: open(tls_server.path(*name.split("/")), encoding="utf-8").read()  # noqa: SIM115 - one-shot reads of small files inside a comprehension
              for name in ("tls/tls.crt", "tls/tls.key", "tls/ca.crt", "secrets/redis-cluster/password")}
    rerun = run_role("redis", "render_config.yml", tls_server.role_vars())
    assert rerun["changed"] == 0
    for name, content in before.items():
        with open(tls_server.path(*name.split("/")), encoding="utf-8") as handle:
            assert handle.read() == content, name


def test_server_certificate_renewed_before_expiry_with_the_same_ca(redis_binaries, tmp_path):
    server = RedisServer(str(tmp_path), free_port(), tls=True)
    run_role("redis", "render_config.yml", server.role_vars(redis_tls_server_cert_days=31))
    ca_before = load_cert(server.path("tls", "ca.crt"))
    cert_before = load_cert(server.path("tls", "tls.crt"))
    password_before = server.password
    # 31 days left, renewal window 32 days: the server certificate must be re-issued by the same CA
    run_role("redis", "render_config.yml",
             server.role_vars(redis_tls_server_cert_days=90, redis_tls_renew_before_days=32))
    cert_after = load_cert(server.path("tls", "tls.crt"))
    assert load_cert(server.path("tls", "ca.crt")) == ca_before
    assert cert_after.serial_number != cert_before.serial_number
    assert cert_after.not_valid_after_utc - cert_before.not_valid_after_utc > datetime.timedelta(days=50)
    assert server.password == password_before
    ctx = ssl.create_default_context(cafile=server.path("tls", "ca.crt"))
    assert ctx.get_ca_certs()[0]["subject"] == ((("commonName", "redis.llm-engine CA (llmops.serving)"),),)


def test_without_tls_the_password_is_still_required(redis_binaries, tmp_path):
    server = RedisServer(str(tmp_path), free_port(), tls=False)
    run_role("redis", "render_config.yml", server.role_vars())
    with open(server.path("conf", "redis.conf"), encoding="utf-8") as handle:
        assert "tls-port" not in handle.read()
    server.start(redis_binaries["server"])
    try:
        assert server.client(password=server.password).ping() is True
        with pytest.raises(redis.exceptions.AuthenticationError):
            server.client().ping()
    finally:
        server.stop()


def test_supplied_password_with_quotes_works(redis_binaries, tmp_path):
    server = RedisServer(str(tmp_path), free_port(), tls=False)
    password = 'p"a\\ss w@rd:/#%-long-enough'
    run_role("redis", "render_config.yml", server.role_vars(redis_password=password))
    server.start(redis_binaries["server"])
    try:
        assert server.password == password
        assert server.client(password=password).ping() is True
    finally:
        server.stop()


@pytest.mark.parametrize("bad_vars, expected", [
    ({"redis_extra_config": {"requirepass": "x"}}, "redis_extra_config may not set"),
    ({"redis_mode": "external"}, "redis_external_host"),
    ({"redis_password": "tiny-Pw9"}, "redis_password is set but is shorter than 16"),
    ({"redis_name": "Redis_1"}, "redis_name (Redis_1) must be a DNS label"),
    ({"redis_mode": "sideways"}, "value of redis_mode must be one of: in_cluster, external"),
])
def test_bad_input_fails_before_writing(tmp_path, bad_vars, expected):
    render_dir = str(tmp_path / "render")
    result = run_role("redis", "render_config.yml",
                      dict({"redis_render_dir": render_dir, "redis_render_data_dir": str(tmp_path / "data")},
                           **bad_vars), check_rc=False)
    assert result["rc"] != 0
    assert not os.path.exists(render_dir)
    messages = " ".join(failure_messages(result))
    if expected:
        assert expected in messages
    if "redis_password" in bad_vars:
        assert bad_vars["redis_password"] not in result["stdout"] + result["stderr"]
