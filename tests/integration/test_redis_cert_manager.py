"""The redis role's cert-manager TLS path, end to end in the sandbox.

The real cert-manager CRDs (tests/sandbox/crds.py) make the API server serve cert-manager.io/v1, so
``redis_tls_provider: auto`` takes the cert-manager path; the stand-in issuer controller
(tests/sandbox/cert_manager_standin.py) issues what the role declares. Then a real redis-server runs
with what the pod would mount (the role's ConfigMap, auth Secret and the issued certificate) and a
client verifies it with the CA the role publishes for clients.
"""

import base64
import datetime
import os
import shutil
import socket
import ssl
import tempfile
import uuid

import pytest
import redis
from cryptography import x509
from kubernetes import client

from tests.contract.servers import other_ca, require_binary
from tests.helpers.sandbox import kube_client, run_playbook, total_changed
from tests.integration.redis_local import PodRedis
from tests.integration.test_data_plane import assert_ok, changed_tasks, failures, statefulset_seen_ready
from tests.sandbox import cert_manager_standin, crds

pytestmark = pytest.mark.sandbox

CM = ("cert-manager.io", "v1")
SECRETS = ("redis-tls", "redis-ca", "redis-ca-keypair", "redis-cluster")


def redis_play():
    return [{"name": "Redis", "hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "Run llmops.serving.redis", "ansible.builtin.include_role": {"name": "llmops.serving.redis"}}]}]


def run_redis(namespace, **extra):
    role_vars = {"redis_namespace": namespace, "redis_wait_timeout": 240, "redis_tls_cert_manager_wait_timeout": 120}
    role_vars.update(extra)
    return run_playbook(redis_play(), extra_vars=role_vars)


@pytest.fixture(scope="module")
def deployed(sandbox_env):
    api_client = kube_client()
    core, apps, custom = client.CoreV1Api(api_client), client.AppsV1Api(api_client), client.CustomObjectsApi(api_client)
    namespace = "it-redis-cm-" + uuid.uuid4().hex[:6]
    crds.install("cert-manager", sandbox_env)
    state = {"ns": namespace, "core": core, "apps": apps, "custom": custom}
    try:
        with cert_manager_standin.running(sandbox_env, resync=2.0):
            state["first"] = first = run_redis(namespace)
            assert_ok(first)
            state["versions"] = {name: core.read_namespaced_secret(name, namespace).metadata.resource_version
                                 for name in SECRETS}
            state["server_cert"] = cert_object(custom, namespace, "redis-server")
            state["second"] = run_redis(namespace, redis_wait=False)
            state["versions_after_second"] = {
                name: core.read_namespaced_secret(name, namespace).metadata.resource_version for name in SECRETS}
            state["server_cert_after_second"] = cert_object(custom, namespace, "redis-server")
            state["checksum"] = pod_checksum(apps, namespace)
            state["data"] = {name: secret_data(core, namespace, name) for name in ("redis-tls", "redis-ca",
                                                                                   "redis-ca-keypair")}
        # A new SAN while no controller issues: Ready=True still stands for the old generation.
        state["stalled"] = run_redis(namespace, redis_wait=False, redis_tls_extra_sans=["redis.example.internal"],
                                     redis_tls_cert_manager_wait_timeout=6)
        state["checksum_after_stalled"] = pod_checksum(apps, namespace)
        with cert_manager_standin.running(sandbox_env, resync=2.0):
            state["changed"] = run_redis(namespace, redis_wait=False, redis_tls_extra_sans=["redis.example.internal"])
            yield state
    finally:
        try:
            core.delete_namespace(namespace)
        finally:
            crds.remove("cert-manager", sandbox_env)


def pod_checksum(apps, namespace):
    sts = apps.read_namespaced_stateful_set("redis", namespace)
    return sts.spec.template.metadata.annotations["llmops.serving/config-checksum"]


def cert_object(custom, namespace, name):
    return custom.get_namespaced_custom_object(*CM, namespace, "certificates", name)


def secret_data(core, namespace, name):
    return {k: base64.b64decode(v) for k, v in (core.read_namespaced_secret(name, namespace).data or {}).items()}


def ready(obj):
    return next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")


def test_auto_takes_the_cert_manager_path_and_the_certificates_are_ready(deployed):
    ns, custom = deployed["ns"], deployed["custom"]
    server = deployed["server_cert"]
    assert ready(server)["status"] == "True"
    assert server["status"]["revision"] == 1
    assert server["spec"]["issuerRef"] == {"group": "cert-manager.io", "kind": "Issuer", "name": "redis-ca"}
    assert ready(cert_object(custom, ns, "redis-ca"))["status"] == "True"
    issuer = custom.get_namespaced_custom_object(*CM, ns, "issuers", "redis-ca")
    assert ready(issuer)["reason"] == "KeyPairVerified"
    # nothing of the role's own CA path ran: cert-manager wrote both Secrets
    for name in ("redis-tls", "redis-ca-keypair"):
        secret = deployed["core"].read_namespaced_secret(name, ns)
        assert secret.type == "kubernetes.io/tls"
        assert secret.metadata.annotations["cert-manager.io/certificate-name"] in ("redis-server", "redis-ca")
        managers = {entry.manager for entry in secret.metadata.managed_fields}
        assert managers == {cert_manager_standin.FIELD_MANAGER}, managers


def test_statefulset_mounts_the_issued_secret(deployed):
    assert statefulset_seen_ready(deployed["first"], "redis") == 1
    sts = deployed["apps"].read_namespaced_stateful_set("redis", deployed["ns"])
    pod = sts.spec.template.spec
    [tls_volume] = [v for v in pod.volumes if v.name == "tls"]
    assert tls_volume.secret.secret_name == "redis-tls"
    [mount] = [m for m in pod.containers[0].volume_mounts if m.name == "tls"]
    assert (mount.mount_path, mount.read_only) == ("/etc/redis/tls", True)


def test_issued_certificate_names_the_service_and_chains_to_the_client_ca(deployed):
    ns, data = deployed["ns"], deployed["data"]
    tls, client_ca = data["redis-tls"], data["redis-ca"]
    assert set(client_ca) == {"ca.crt"}  # clients get the CA, never a key
    assert client_ca["ca.crt"] == tls["ca.crt"] == data["redis-ca-keypair"]["tls.crt"]
    cert = x509.load_pem_x509_certificate(tls["tls.crt"])
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(client_ca["ca.crt"]))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {
        "redis", "redis." + ns, "redis.%s.svc" % ns, "redis.%s.svc.cluster.local" % ns, "localhost"}
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == datetime.timedelta(days=365)
    status = deployed["server_cert"]["status"]
    assert status["notAfter"] == cert_manager_standin.rfc3339(cert.not_valid_after_utc)
    assert status["renewalTime"] == cert_manager_standin.rfc3339(cert.not_valid_after_utc - datetime.timedelta(days=30))


def test_second_run_changes_nothing_and_reissues_nothing(deployed):
    second = deployed["second"]
    assert_ok(second)
    assert total_changed(second) == 0, changed_tasks(second)
    assert deployed["versions_after_second"] == deployed["versions"]
    assert deployed["server_cert_after_second"]["status"]["revision"] == 1
    assert (deployed["server_cert_after_second"]["metadata"]["resourceVersion"]
            == deployed["server_cert"]["metadata"]["resourceVersion"])


@pytest.fixture(scope="module")
def pod_redis(deployed):
    binary = require_binary("redis-server", ["/usr/bin/redis-server"])
    workdir = tempfile.mkdtemp(prefix="llmops-redis-cm-")
    server = PodRedis(deployed["core"], deployed["apps"], deployed["ns"], workdir)
    server.start(binary)
    server.client_ca = os.path.join(workdir, "client-ca.crt")
    with open(server.client_ca, "wb") as handle:
        handle.write(secret_data(deployed["core"], deployed["ns"], "redis-ca")["ca.crt"])
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def connect(server, ca, host="localhost"):
    return redis.Redis(host=host, port=server.port, password=server.auth["REDISCLI_AUTH"], ssl=True,
                       ssl_cert_reqs="required", ssl_check_hostname=True, ssl_ca_certs=ca, socket_timeout=5,
                       socket_connect_timeout=5)


def test_redis_serves_the_issued_certificate_to_clients_that_verify_the_published_ca(deployed, pod_redis):
    assert "port 0" in pod_redis.config_text().splitlines()  # TLS only
    conn = connect(pod_redis, pod_redis.client_ca)
    assert conn.ping() is True
    conn.set("cm:key", "value")
    assert conn.get("cm:key") == b"value"
    # every Service name a client may use verifies against the served certificate
    ns = deployed["ns"]
    context = ssl.create_default_context(cafile=pod_redis.client_ca)
    for name in ("redis", "redis." + ns, "redis.%s.svc" % ns, "redis.%s.svc.cluster.local" % ns):
        with socket.create_connection(("127.0.0.1", pod_redis.port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname=name) as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
    with pytest.raises(ssl.SSLCertVerificationError), \
            socket.create_connection(("127.0.0.1", pod_redis.port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="redis.other-namespace.svc"):
        pass


def test_a_different_ca_is_refused(pod_redis, tmp_path):
    conn = connect(pod_redis, other_ca(str(tmp_path / "other-ca.crt")))
    with pytest.raises(redis.exceptions.ConnectionError) as excinfo:
        conn.ping()
    assert "certificate verify failed" in str(excinfo.value)


def test_the_pod_probe_passes_only_with_the_password(pod_redis):
    cli_dir = os.path.dirname(require_binary("redis-cli", ["/usr/bin/redis-cli"]))
    assert pod_redis.run_probe(cli_dir) == 0
    assert pod_redis.run_probe(cli_dir, kind="liveness") == 0
    assert pod_redis.run_probe(cli_dir, auth=False) != 0


def test_a_new_san_waits_for_the_reissue_and_rolls_the_pod(deployed):
    stalled = deployed["stalled"]
    assert stalled["rc"] != 0
    message = " ".join(failures(stalled))
    assert "did not issue Certificate %s/redis-server for its current spec" % deployed["ns"] in message
    assert deployed["checksum_after_stalled"] == deployed["checksum"]  # nothing rolled onto the old certificate
    changed = deployed["changed"]
    assert_ok(changed)
    ns, core = deployed["ns"], deployed["core"]
    cert = x509.load_pem_x509_certificate(secret_data(core, ns, "redis-tls")["tls.crt"])
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert "redis.example.internal" in names
    assert cert_object(deployed["custom"], ns, "redis-server")["status"]["revision"] == 2
    # the pod template carries the new certificate's checksum, so the pod rolls onto it
    assert pod_checksum(deployed["apps"], ns) != deployed["checksum"]
