"""Run by the pinned LLM Engine server's own Python (tests/sandbox/upstream_venv.py) with the environment a
rendered control-plane pod gets: loads the service and infra config with upstream's config classes, builds
the cache, broker and result-backend URLs with upstream's functions and connects with them. Prints JSON.

Not a test module: tests/contract/test_model_engine_upstream_contract.py runs it and asserts.
"""

import asyncio
import inspect
import json
import os
import sys
import typing

import yaml


def fields(cls, path):
    """Keys of the YAML at ``path`` the class does not know, required fields it lacks, bool fields that are
    not YAML booleans (upstream's from_json drops unknown keys silently and never converts types)."""
    with open(path, encoding="utf-8") as handle:
        raw = yaml.safe_load(handle)
    params = inspect.signature(cls).parameters
    hints = typing.get_type_hints(cls)
    return {
        "unknown": sorted(set(raw) - set(params)),
        "missing": sorted(n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in raw),
        "not_bool": sorted(n for n, t in hints.items() if t is bool and n in raw and not isinstance(raw[n], bool)),
    }


def attempt(func):
    try:
        return {"ok": True, "value": func()}
    except Exception as exc:  # noqa: BLE001 - reported to the test, which asserts on it
        return {"ok": False, "error": "%s: %s" % (type(exc).__name__, exc)}


def main():
    token = os.environ.get("REDIS_AUTH_TOKEN") or ""
    out = {}
    from model_engine_server.common.config import HostedModelInferenceServiceConfig, hmi_config
    from model_engine_server.core.config import InfraConfig, infra_config

    out["launch_fields"] = fields(HostedModelInferenceServiceConfig, os.environ["DEPLOY_SERVICE_CONFIG_PATH"])
    out["infra_fields"] = fields(InfraConfig, os.environ["ML_INFRA_SERVICES_CONFIG_PATH"])
    out["infra"] = {"cloud_provider": infra_config().cloud_provider,
                    "celery_broker_type_redis": infra_config().celery_broker_type_redis}
    out["dd_trace_enabled"] = hmi_config.dd_trace_enabled
    out["istio_enabled"] = hmi_config.istio_enabled

    import redis
    from model_engine_server.common.aioredis_pool import build_aioredis_client

    cache_url = hmi_config.cache_redis_url
    out["cache_url"] = cache_url.replace(token, "TOKEN") if token else cache_url
    out["cache_db_upstream"] = hmi_config.cache_redis_db_index  # what KEDA's ScaledObject is given
    client = redis.Redis.from_url(cache_url, socket_timeout=5)
    out["cache_db_redis_py"] = client.connection_pool.connection_kwargs.get("db", 0)
    out["cache_set"] = attempt(lambda: bool(client.set("llmops:contract:cache", "v")))

    async def through_pool():  # the gateway's pool (common/aioredis_pool.py)
        aclient = build_aioredis_client(cache_url)
        try:
            return (await aclient.get("llmops:contract:cache")).decode()
        finally:
            await aclient.close()  # redis 4.6.0 (model-engine/requirements.txt:516) has no aclose

    out["cache_async"] = attempt(lambda: asyncio.run(through_pool()))

    from model_engine_server.core.celery.app import celery_app, get_redis_endpoint

    broker = get_redis_endpoint(0)
    out["broker_url"] = broker.replace(token, "TOKEN") if token else broker
    out["broker_ping"] = attempt(lambda: redis.Redis.from_url(broker, socket_timeout=5).ping())
    # the endpoint builder's app as service_builder/celery.py:24-35 makes it on-prem (backend "s3")
    app = celery_app("llmops.contract", s3_bucket="models", broker_type="redis", backend_protocol="s3")
    out["backend_class"] = attempt(lambda: type(app.backend).__name__)
    out["backend_store"] = attempt(lambda: app.backend.store_result("llmops-contract-task", {"x": 1}, "SUCCESS")
                                   and app.backend.get_task_meta("llmops-contract-task")["status"])
    json.dump(out, sys.stdout, default=str)


if __name__ == "__main__":
    main()
