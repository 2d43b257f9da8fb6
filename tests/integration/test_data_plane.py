"""The redis and postgres roles against the sandbox: real kube-apiserver, controllers, scheduler,
kwok nodes and the hostpath provisioner. What runs in the containers is covered by the contract
tests (tests/contract); here: objects, readiness, volumes, Secrets, idempotence, check mode,
NetworkPolicy selectors, external mode and teardown."""

import base64
import json
import os
import uuid
from urllib.parse import unquote, urlsplit

import pytest
from cryptography import x509
from kubernetes import client

from tests.helpers.sandbox import kube_client, run_playbook, task_results, total_changed

pytestmark = pytest.mark.sandbox

FACTS_TASK = "Report the data plane facts"
REDIS_FACT_KEYS = {"host", "port", "tls", "ca_secret_name", "ca_secret_key", "password_secret_name",
                   "password_secret_key", "namespace", "url_scheme"}
POSTGRES_FACT_KEYS = {"host", "port", "database", "user", "secret_name", "password_key", "database_url_key",
                      "namespace"}


def data_plane_play(tasks_from="main", roles=("redis", "postgres")):
    tasks = [{"name": "Run llmops.serving.%s %s" % (role, tasks_from),
              "ansible.builtin.include_role": {"name": "llmops.serving." + role, "tasks_from": tasks_from}}
             for role in roles]
    if tasks_from == "main":
        tasks.append({"name": FACTS_TASK, "ansible.builtin.debug": {
            "msg": {role + "_connection": "{{ %s_connection | default(None) }}" % role for role in roles}}})
    return [{"name": "Data plane", "hosts": "localhost", "gather_facts": False, "tasks": tasks}]


def run(namespace, tasks_from="main", roles=("redis", "postgres"), check=False, **extra):
    role_vars = {"redis_namespace": namespace, "postgres_namespace": namespace, "redis_wait_timeout": 240,
                 "postgres_wait_timeout": 240}
    role_vars.update(extra)
    return run_playbook(data_plane_play(tasks_from, roles), extra_vars=role_vars, check=check, diff=check)


def failures(result):
    out = []
    for play in (result["json"] or {}).get("plays", []):
        for task in play.get("tasks", []):
            for host in task["hosts"].values():
                if host.get("failed"):
                    out.append("%s: %s" % (task["task"]["name"], host.get("msg")))
                    out.extend("  item: %s" % item.get("msg") for item in host.get("results", []) if item.get("failed"))
    return out or [result["stderr"][-2000:]]


def assert_ok(result):
    assert result["rc"] == 0, "\n".join(failures(result))


def changed_tasks(result):
    names = []
    for play in (result["json"] or {}).get("plays", []):
        for task in play.get("tasks", []):
            if any(host.get("changed") for host in task["hosts"].values()):
                names.append(task["task"]["name"])
    return names


STS_TASKS = {
    "redis": "llmops.serving.redis : Ensure the Redis Services, StatefulSet, PodDisruptionBudget and NetworkPolicy",
    "postgres": "llmops.serving.postgres : Ensure the Postgres Services, StatefulSet and NetworkPolicy",
}


def statefulset_seen_ready(result, role):
    """readyReplicas of the StatefulSet as the role's wait returned it.

    The role waits for readiness itself; reading the object again later can race with the sandbox
    (kwok under load lets node leases lapse and the node controller then marks pods not ready).
    """
    for host in task_results(result, STS_TASKS[role]):
        for item in host.get("results", []):
            obj = item.get("result") or {}
            if obj.get("kind") == "StatefulSet":
                return obj.get("status", {}).get("readyReplicas")
    raise AssertionError("no StatefulSet result in %r" % STS_TASKS[role])


def facts(result):
    return task_results(result, FACTS_TASK)[0]["msg"]


@pytest.fixture(scope="module")
def core(sandbox_env):
    return client.CoreV1Api(kube_client())


@pytest.fixture(scope="module")
def apps(core):
    return client.AppsV1Api(core.api_client)


@pytest.fixture(scope="module")
def networking(core):
    return client.NetworkingV1Api(core.api_client)


def secret_data(core, namespace, name):
    secret = core.read_namespaced_secret(name, namespace)
    return {key: base64.b64decode(value).decode() for key, value in (secret.data or {}).items()}


def delete_namespace(core, name):
    try:
        core.delete_namespace(name)
    except client.exceptions.ApiException as exc:
        if exc.status != 404:
            raise


@pytest.fixture(scope="module")
def deployed(core):
    """Both roles, in-cluster with TLS, in a fresh namespace: first run, second run, check run."""
    namespace = "it-data-" + uuid.uuid4().hex[:6]
    first = run(namespace)
    state = {"namespace": namespace, "first": first}
    try:
        assert_ok(first)
        state["secrets_after_first"] = {
            name: secret_data(core, namespace, name)
            for name in ("redis-cluster", "redis-tls", "redis-ca", "redis-ca-keypair",
                         "llm-engine-postgres-credentials", "postgres-superuser")}
        # Readiness was proven by the first run's wait; the sandbox's node controller may mark kwok
        # pods not ready later under load, which says nothing about the roles' idempotence.
        state["second"] = run(namespace, redis_wait=False, postgres_wait=False)
        state["check"] = run(namespace, check=True, redis_wait=False, postgres_wait=False)
        yield state
    finally:
        delete_namespace(core, namespace)


def test_first_run_publishes_the_connection_facts(deployed):
    ns = deployed["namespace"]
    published = facts(deployed["first"])
    assert published["redis_connection"] == {
        "host": "redis.%s.svc" % ns, "port": 6379, "tls": True, "ca_secret_name": "redis-ca",
        "ca_secret_key": "ca.crt", "password_secret_name": "redis-cluster", "password_secret_key": "password",
        "namespace": ns, "url_scheme": "rediss"}
    assert published["postgres_connection"] == {
        "host": "postgres.%s.svc" % ns, "port": 5432, "database": "llm_engine", "user": "llm_engine",
        "secret_name": "llm-engine-postgres-credentials", "password_key": "password",
        "database_url_key": "database_url", "namespace": ns}
    assert set(published["redis_connection"]) == REDIS_FACT_KEYS
    assert set(published["postgres_connection"]) == POSTGRES_FACT_KEYS


def test_statefulsets_ready_and_volumes_bound(deployed, core, apps):
    ns = deployed["namespace"]
    for name in ("redis", "postgres"):
        assert statefulset_seen_ready(deployed["first"], name) == 1
        sts = apps.read_namespaced_stateful_set(name, ns)
        assert sts.spec.replicas == 1 and sts.status.current_replicas == 1
        pvc = core.read_namespaced_persistent_volume_claim("data-%s-0" % name, ns)
        assert pvc.status.phase == "Bound"
        assert pvc.metadata.labels["app.kubernetes.io/instance"] == name
        pod = core.read_namespaced_pod("%s-0" % name, ns)
        claims = [v.persistent_volume_claim.claim_name for v in pod.spec.volumes if v.persistent_volume_claim]
        assert claims == ["data-%s-0" % name]
        assert pod.spec.security_context.run_as_non_root is True
        assert pod.spec.automount_service_account_token is False


def test_probes_authenticate_without_putting_the_password_on_a_command_line(deployed, core):
    ns = deployed["namespace"]
    password = deployed["secrets_after_first"]["redis-cluster"]["password"]
    redis_pod = core.read_namespaced_pod("redis-0", ns)
    container = redis_pod.spec.containers[0]
    probe = container.readiness_probe._exec.command
    assert probe[:2] == ["sh", "-c"]
    assert "--tls --cacert /etc/redis/tls/ca.crt" in probe[2] and "grep -qx PONG" in probe[2]
    env = {e.name: e.value_from.secret_key_ref for e in container.env}
    assert (env["REDISCLI_AUTH"].name, env["REDISCLI_AUTH"].key) == ("redis-cluster", "password")
    pod_text = json.dumps(core.api_client.sanitize_for_serialization(redis_pod))
    assert password not in pod_text
    postgres_pod = core.read_namespaced_pod("postgres-0", ns)
    assert postgres_pod.spec.containers[0].readiness_probe._exec.command[0] == "pg_isready"
    assert [c.name for c in postgres_pod.spec.init_containers] == ["ensure-database"]


def test_secrets_hold_what_clients_need(deployed):
    ns = deployed["namespace"]
    secrets = deployed["secrets_after_first"]
    redis_password = secrets["redis-cluster"]["password"]
    assert len(redis_password) == 48 and redis_password.isalnum()
    assert set(secrets["redis-ca"]) == {"ca.crt"}  # clients get the CA, never a key
    pg = secrets["llm-engine-postgres-credentials"]
    assert set(pg) == {"username", "password", "database", "host", "port", "database_url"}
    url = urlsplit(pg["database_url"])
    assert (url.scheme, url.hostname, url.port, url.path) == ("postgresql", "postgres.%s.svc" % ns, 5432,
                                                              "/llm_engine")
    assert (unquote(url.username), unquote(url.password)) == ("llm_engine", pg["password"])
    assert pg["password"] != secrets["postgres-superuser"]["password"]


def test_redis_certificate_matches_the_service_and_the_ca(deployed):
    ns = deployed["namespace"]
    tls = deployed["secrets_after_first"]["redis-tls"]
    cert = x509.load_pem_x509_certificate(tls["tls.crt"].encode())
    ca = x509.load_pem_x509_certificate(deployed["secrets_after_first"]["redis-ca"]["ca.crt"].encode())
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) >= {
        "redis", "redis.%s" % ns, "redis.%s.svc" % ns, "redis.%s.svc.cluster.local" % ns, "localhost"}
    assert tls["ca.crt"] == deployed["secrets_after_first"]["redis-ca"]["ca.crt"]


def test_second_run_changes_nothing_and_keeps_passwords(deployed, core):
    second = deployed["second"]
    assert_ok(second)
    assert total_changed(second) == 0, changed_tasks(second)
    ns = deployed["namespace"]
    for name, before in deployed["secrets_after_first"].items():
        assert secret_data(core, ns, name) == before, name


def test_check_mode_with_diff_reports_no_change_and_prints_no_secret(deployed):
    check = deployed["check"]
    assert_ok(check)
    assert total_changed(check) == 0, changed_tasks(check)
    output = "".join(deployed[run_name]["stdout"] + deployed[run_name]["stderr"]
                     for run_name in ("first", "second", "check"))
    for secret in deployed["secrets_after_first"].values():
        for key, value in secret.items():
            if key in ("password", "database_url", "tls.key"):
                assert value not in output, key
                assert base64.b64encode(value.encode()).decode() not in output, key


def test_network_policies_select_what_they_claim(deployed, core, networking):
    ns = deployed["namespace"]
    expected_from = {
        "redis": [{"product": "model-engine"}, {"managed-by": "model-engine"}, {"app": "celery-autoscaler-redis"},
                  {"llmops.serving/redis-client": "true"}],
        "postgres": [{"product": "model-engine"}, {"llmops.serving/postgres-client": "true"}],
    }
    # client pods as the LLM Engine chart labels them, plus one that must not be admitted
    for name, labels in (("gateway", {"product": "model-engine", "app": "model-engine"}),
                         ("stranger", {"app": "stranger"})):
        core.create_namespaced_pod(ns, client.V1Pod(
            metadata=client.V1ObjectMeta(name=name, labels=labels),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")])))
    pods = core.list_namespaced_pod(ns).items
    for name, port in (("redis", 6379), ("postgres", 5432)):
        policy = networking.read_namespaced_network_policy(name, ns)
        selector = ",".join("%s=%s" % kv for kv in sorted(policy.spec.pod_selector.match_labels.items()))
        selected = [p.metadata.name for p in core.list_namespaced_pod(ns, label_selector=selector).items]
        assert selected == ["%s-0" % name], selected
        assert policy.spec.policy_types == ["Ingress"]
        [rule] = policy.spec.ingress
        assert [(p.port, p.protocol) for p in rule.ports] == [(port, "TCP")]
        peers = [peer.pod_selector.match_labels for peer in rule._from]
        assert peers == expected_from[name]
        assert all(peer.namespace_selector is None for peer in rule._from)  # same namespace only
        admitted = {p.metadata.name for p in pods
                    if any(all((p.metadata.labels or {}).get(k) == v for k, v in peer.items()) for peer in peers)}
        assert "gateway" in admitted and "stranger" not in admitted
        assert "redis-0" not in admitted and "postgres-0" not in admitted


def test_redis_pdb_protects_the_pod(deployed, core):
    ns = deployed["namespace"]
    pdb = client.PolicyV1Api(core.api_client).read_namespaced_pod_disruption_budget("redis", ns)
    assert pdb.spec.min_available == 1
    assert pdb.spec.selector.match_labels == {"app.kubernetes.io/name": "redis", "app.kubernetes.io/instance": "redis"}


def test_teardown_keeps_volumes_and_secrets_then_purge_removes_them(deployed, core, apps):
    ns = deployed["namespace"]
    pvc_uids = {name: core.read_namespaced_persistent_volume_claim("data-%s-0" % name, ns).metadata.uid
                for name in ("redis", "postgres")}
    down = run(ns, tasks_from="teardown.yml")
    assert_ok(down)
    assert apps.list_namespaced_stateful_set(ns).items == []
    assert {s.metadata.name for s in core.list_namespaced_service(ns).items} == set()
    for name in pvc_uids:
        assert core.read_namespaced_persistent_volume_claim("data-%s-0" % name, ns).metadata.uid == pvc_uids[name]
    for name, before in deployed["secrets_after_first"].items():
        assert secret_data(core, ns, name) == before, name

    again = run(ns)  # back with the same volumes and passwords
    assert_ok(again)
    for name in pvc_uids:
        assert core.read_namespaced_persistent_volume_claim("data-%s-0" % name, ns).metadata.uid == pvc_uids[name]
        assert statefulset_seen_ready(again, name) == 1
    for name, before in deployed["secrets_after_first"].items():
        assert secret_data(core, ns, name) == before, name

    purge = run(ns, tasks_from="teardown", redis_purge=True, postgres_purge=True)
    assert_ok(purge)
    assert core.list_namespaced_persistent_volume_claim(ns).items == [] or all(
        p.metadata.deletion_timestamp for p in core.list_namespaced_persistent_volume_claim(ns).items)
    remaining = {s.metadata.name for s in core.list_namespaced_secret(ns).items}
    assert remaining.isdisjoint(deployed["secrets_after_first"]), remaining


def test_check_mode_on_a_fresh_namespace_creates_nothing(core):
    namespace = "it-data-" + uuid.uuid4().hex[:6]
    try:
        result = run(namespace, check=True)
        assert_ok(result)
        assert "Run llmops.serving.redis main" in [t["task"]["name"] for p in result["json"]["plays"]
                                                   for t in p["tasks"]]
        assert total_changed(result) > 0
        with pytest.raises(client.exceptions.ApiException) as excinfo:
            core.read_namespace(namespace)
        assert excinfo.value.status == 404
    finally:
        delete_namespace(core, namespace)


def test_external_mode_writes_only_secrets(core, apps):
    namespace = "it-data-" + uuid.uuid4().hex[:6]
    ca_pem = (
        "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n")
    try:
        result = run(namespace, redis_mode="external", redis_external_host="redis.example.internal",
                     redis_external_port=6380, redis_password="external-redis-password-0123",
                     redis_external_ca_cert=ca_pem,
                     postgres_mode="external", postgres_external_host="db.example.internal",
                     postgres_password="p@ss:w/rd?#-external-0123",
                     postgres_database_url_params={"sslmode": "verify-full"})
        assert_ok(result)
        published = facts(result)
        assert published["redis_connection"]["host"] == "redis.example.internal"
        assert published["redis_connection"]["port"] == 6380
        assert published["redis_connection"]["ca_secret_name"] == "redis-ca"
        assert published["postgres_connection"]["host"] == "db.example.internal"
        assert apps.list_namespaced_stateful_set(namespace).items == []
        assert {s.metadata.name for s in core.list_namespaced_secret(namespace).items} >= {
            "redis-cluster", "redis-ca", "llm-engine-postgres-credentials"}
        assert secret_data(core, namespace, "redis-cluster") == {"password": "external-redis-password-0123"}
        assert secret_data(core, namespace, "redis-ca") == {"ca.crt": ca_pem}
        pg = secret_data(core, namespace, "llm-engine-postgres-credentials")
        assert pg["database_url"] == (
            "postgresql://llm_engine:p%40ss%3Aw%2Frd%3F%23-external-0123@db.example.internal:5432/llm_engine"
            "?sslmode=verify-full")
        again = run(namespace, redis_mode="external", redis_external_host="redis.example.internal",
                    redis_external_port=6380, redis_external_ca_cert=ca_pem,
                    postgres_mode="external", postgres_external_host="db.example.internal",
                    postgres_database_url_params={"sslmode": "verify-full"})
        assert_ok(again)  # the stored passwords are reused when none is given
        assert total_changed(again) == 0, changed_tasks(again)
    finally:
        delete_namespace(core, namespace)


def test_bad_input_fails_before_anything_changes(core):
    namespace = "it-data-" + uuid.uuid4().hex[:6]
    try:
        result = run(namespace, roles=("redis",), redis_mode="external")
        assert result["rc"] != 0
        assert any("redis_external_host" in message for message in failures(result))
        result = run(namespace, roles=("postgres",), postgres_mode="external", postgres_external_host="db.internal")
        assert result["rc"] != 0
        assert any("neither postgres_password is set" in message for message in failures(result))
        with pytest.raises(client.exceptions.ApiException) as excinfo:
            core.read_namespace(namespace)  # not even the namespace was created
        assert excinfo.value.status == 404
    finally:
        delete_namespace(core, namespace)


def test_redis_without_tls_serves_plain_tcp_with_the_password(core, apps, tmp_path):
    """TLS off: Ready StatefulSet, no TLS objects, and the pod's own config and probe on a real redis-server."""
    import redis

    from tests.contract.servers import require_binary
    from tests.integration.redis_local import PodRedis

    namespace = "it-data-" + uuid.uuid4().hex[:6]
    try:
        result = run(namespace, roles=("redis",), redis_tls_enabled=False)
        assert_ok(result)
        assert statefulset_seen_ready(result, "redis") == 1
        assert facts(result)["redis_connection"]["url_scheme"] == "redis"
        assert facts(result)["redis_connection"]["ca_secret_name"] is None
        secrets = {s.metadata.name for s in core.list_namespaced_secret(namespace).items}
        assert secrets.isdisjoint({"redis-tls", "redis-ca", "redis-ca-keypair"}), secrets
        pod = apps.read_namespaced_stateful_set("redis", namespace).spec.template.spec
        assert "tls" not in {v.name for v in pod.volumes}
        server = PodRedis(core, apps, namespace, str(tmp_path))
        config = server.config_text().splitlines()
        assert "port %d" % server.port in config and not any(line.startswith("tls-") for line in config)
        assert "--tls" not in server.probe_command()[-1]
        server.start(require_binary("redis-server", ["/usr/bin/redis-server"]))
        try:
            cli_dir = os.path.dirname(require_binary("redis-cli", ["/usr/bin/redis-cli"]))
            assert server.run_probe(cli_dir) == 0
            assert server.run_probe(cli_dir, auth=False) != 0
            password = server.auth["REDISCLI_AUTH"]
            assert redis.Redis(host="127.0.0.1", port=server.port, password=password).ping() is True
            with pytest.raises(redis.exceptions.AuthenticationError):
                redis.Redis(host="127.0.0.1", port=server.port).ping()
        finally:
            server.stop()
    finally:
        delete_namespace(core, namespace)
