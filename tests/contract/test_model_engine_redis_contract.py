"""Contract: the Redis settings the model_engine values give LLM Engine work against a real
redis-server with the redis role's TLS and password, verified with the CA as it is mounted.

The redis role renders its configuration, certificates and password (render_config.yml); a real
redis-server runs them. The model_engine values are built from the same redis_connection the redis
role publishes, with the CA mount directory pointed at a temporary directory that holds the CA Secret
the way the kubelet projects it (key -> ca.crt). The clients are the libraries LLM Engine uses:
redis-py (cacher, gateway cache: ``Redis.from_url`` / ``redis.asyncio.from_url`` of the cache URL) and
kombu (the Celery broker transport).

LLM Engine adds the password (REDIS_AUTH_TOKEN, from the Secret the values name) to a cache URL that
carries no user info (upstream llm-engine PR #875); ``with_auth_token`` does the same here. The values
never hold the password.
"""

import asyncio
import os
import shutil
import ssl
import tempfile
from urllib.parse import urlsplit, urlunsplit

import kombu
import kombu.exceptions
import pytest
import redis
import redis.asyncio
from ansible_collections.llmops.serving.plugins.module_utils import model_engine_values as me

from tests.contract.servers import RedisServer, free_port, other_ca, run_role

pytestmark = pytest.mark.contract


def with_auth_token(url, token):
    """What LLM Engine does with REDIS_AUTH_TOKEN and a cache URL without user info."""
    parts = urlsplit(url)
    if "@" in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=":%s@%s" % (token, parts.netloc)))


@pytest.fixture(scope="module")
def server(redis_binaries):
    workdir = tempfile.mkdtemp(prefix="llmops-me-redis-contract-")
    srv = RedisServer(workdir, free_port(), tls=True)
    run_role("redis", "render_config.yml", srv.role_vars())
    srv.start(redis_binaries["server"])
    yield srv
    srv.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture()
def mounted(server, tmp_path):
    """The model_engine values for this server, and the CA mounted where the values say."""
    mount = tmp_path / "redis-ca"
    mount.mkdir()
    shutil.copyfile(server.path("tls", "ca.crt"), str(mount / "ca.crt"))
    connection = {"host": "localhost", "port": server.port, "tls": True, "ca_secret_name": "redis-ca",
                  "ca_secret_key": "ca.crt", "password_secret_name": "redis-cluster",
                  "password_secret_key": "password", "namespace": "llm-engine", "url_scheme": "rediss"}
    values = me.build_values({
        "namespace": "llm-engine", "endpoint_namespace": "llm-engine-endpoints", "tag": "0.9.3",
        "image_repository": "registry.local/llm-engine/model-engine",
        "inference_images": {"vllm": {"repository": "registry.local/vllm", "tag": "v0.6.3"}},
        "postgres": {"secret_name": "llm-engine-postgres-credentials", "namespace": "llm-engine"},
        "redis": connection, "s3_bucket": "models", "require_gpu": False,
        "redis_ca_mount_dir": str(mount)})
    return {"values": values, "ca_file": str(mount / "ca.crt"),
            "cache_url": values["config"]["values"]["launch"]["cache_redis_onprem_url"]}


def test_values_mount_the_ca_the_cache_url_names(mounted):
    mount = mounted["values"]["extraVolumeMounts"][0]
    assert mounted["values"]["extraVolumes"][0]["name"] == mount["name"]
    assert os.path.join(mount["mountPath"], "ca.crt") == mounted["ca_file"]
    client = redis.Redis.from_url(mounted["cache_url"])
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["ssl_cert_reqs"] == "required" and kwargs["ssl_ca_certs"] == mounted["ca_file"]
    assert kwargs["db"] == 15
    assert "password" not in kwargs  # the values hold no password


def test_cache_url_with_the_token_works_with_the_mounted_ca(server, mounted):
    url = with_auth_token(mounted["cache_url"], server.password)
    client = redis.Redis.from_url(url, socket_timeout=5)
    assert client.ping() is True
    client.set("llmops:contract", "cache")
    assert client.get("llmops:contract") == b"cache"

    async def through_asyncio():  # the gateway's client
        aclient = redis.asyncio.from_url(url, socket_timeout=5)
        try:
            return await aclient.get("llmops:contract")
        finally:
            await aclient.aclose()

    assert asyncio.run(through_asyncio()) == b"cache"


def test_cache_url_is_refused_with_another_ca(server, mounted, tmp_path):
    other_ca(mounted["ca_file"])  # the mounted file now holds a CA that did not sign the server
    client = redis.Redis.from_url(with_auth_token(mounted["cache_url"], server.password), socket_timeout=5)
    with pytest.raises(redis.exceptions.ConnectionError) as info:
        client.ping()
    assert "certificate verify failed" in str(info.value)


def test_cache_url_without_the_token_is_refused(mounted):
    # an LLM Engine release that does not add REDIS_AUTH_TOKEN to the cache URL cannot use it
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis.from_url(mounted["cache_url"], socket_timeout=5).ping()


def broker_url(values, password, ca_file, db=0):
    """A Celery broker URL from the values' host, port and TLS setting, verifying with the mounted CA."""
    scheme = "rediss" if values["redis"]["enableTLS"] else "redis"
    query = ("?" + me.redis_tls_query(ca_file)) if scheme == "rediss" else ""
    return "%s://:%s@%s:%s/%d%s" % (scheme, password, values["redisHost"], values["redisPort"], db, query)


def kombu_roundtrip(url):
    with kombu.Connection(url, connect_timeout=5, transport_options={"socket_timeout": 5}) as conn:
        queue = conn.SimpleQueue("llmops-contract")
        try:
            queue.put({"task": "contract"})
            message = queue.get(timeout=5)
            message.ack()
            return message.payload
        finally:
            queue.close()


def test_kombu_broker_with_the_mounted_ca(server, mounted):
    url = broker_url(mounted["values"], server.password, mounted["ca_file"])
    assert kombu_roundtrip(url) == {"task": "contract"}


def test_kombu_broker_is_refused_with_another_ca(server, mounted):
    other_ca(mounted["ca_file"])
    url = broker_url(mounted["values"], server.password, mounted["ca_file"])
    with pytest.raises(Exception) as info:
        with kombu.Connection(url, connect_timeout=5) as conn:
            conn.ensure_connection(max_retries=1)
    assert isinstance(info.value, (ssl.SSLError, redis.exceptions.ConnectionError, kombu.exceptions.OperationalError))
    assert "certificate verify failed" in str(info.value)


def test_kombu_broker_without_password_is_refused(server, mounted):
    url = broker_url(mounted["values"], "", mounted["ca_file"]).replace("://:@", "://")
    with pytest.raises(Exception) as info:
        with kombu.Connection(url, connect_timeout=5) as conn:
            conn.ensure_connection(max_retries=1)
    assert "Authentication required" in str(info.value) or "NOAUTH" in str(info.value)


def test_upstream_token_broker_url_does_not_verify(server, mounted):
    """Documents why the role cannot promise a verified broker: LLM Engine releases before PR #875
    build ``rediss://:TOKEN@HOST:PORT/DB?ssl_cert_reqs=none`` whenever REDIS_AUTH_TOKEN is set, which
    connects even when the server's certificate comes from a foreign CA."""
    other_ca(mounted["ca_file"])
    values = mounted["values"]
    url = "rediss://:%s@%s:%s/0?ssl_cert_reqs=none" % (server.password, values["redisHost"], values["redisPort"])
    assert redis.Redis.from_url(url, socket_timeout=5).ping() is True
