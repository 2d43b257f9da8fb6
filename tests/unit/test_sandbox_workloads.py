"""The sandbox's workload runner, its pure decisions (tests/sandbox/workloads.py); the processes
themselves are exercised against the sandbox in tests/sandbox/test_workloads.py."""

from types import SimpleNamespace

from tests.sandbox import workloads


def test_image_kind_names_only_programs_the_sandbox_can_run():
    assert workloads.image_kind("registry.sandbox.local/llm-engine/model-engine:0.9.3") == "model-engine"
    assert workloads.image_kind("docker.io/library/redis:7.2.7") == "redis"
    assert workloads.image_kind("postgres@sha256:abc") == "postgres"
    assert workloads.image_kind("registry.sandbox.local/vllm/vllm-openai:v0.6.3") is None


def test_loopback_address_keeps_the_cluster_ip_and_differs_between_sandboxes():
    first = workloads.loopback_for("10.96.73.185", "/a/.sandbox")
    other = workloads.loopback_for("10.96.73.185", "/a/.sandbox-test")
    assert first.startswith("127.") and first.endswith(".73.185")
    assert first == workloads.loopback_for("10.96.73.185", "/a/.sandbox")
    assert first != other
    assert workloads.loopback_for("None", "/a") is None  # headless


def test_init_wrapper_is_dropped_and_nothing_else():
    assert workloads.strip_init(["dumb-init", "--", "python", "-m", "x"]) == ["python", "-m", "x"]
    assert workloads.strip_init(["celery", "--app=x"]) == ["celery", "--app=x"]


def test_paths_map_to_mounts_then_to_the_image_also_url_encoded():
    paths = workloads.PathMap({"/etc/llmops/redis-ca": "/L/ca", "/workspace/model-engine/service_configs": "/L/sc"},
                              {"/workspace": "/W"})
    assert paths.local("/workspace/model-engine/service_configs/service_config.yaml") == "/L/sc/service_config.yaml"
    assert paths.local("/workspace/model-engine/model_engine_server") == "/W/model-engine/model_engine_server"
    assert paths.local("/usr/bin/env") == "/usr/bin/env"
    text = "url: rediss://r:6379/15?ssl_cert_reqs=required&ssl_ca_certs=%2Fetc%2Fllmops%2Fredis-ca%2Fca.crt"
    assert paths.rewrite_text(text).endswith("ssl_ca_certs=%2FL%2Fca%2Fca.crt")
    rewritten = paths.rewrite_text("a=/etc/llmops/redis-ca/ca.crt b=/etc/llmops/redis-cax")
    assert rewritten == "a=/L/ca/ca.crt b=/etc/llmops/redis-cax"


def test_hosts_file_names_every_service_form():
    names = {name: "127.150.1.2" for name in workloads.service_names("redis", "llm-engine")}
    text = workloads.hosts_text(names)
    line = [row for row in text.splitlines() if row.startswith("127.150.1.2 ")][0]
    assert set(line.split()[1:]) == {"redis.llm-engine.svc.cluster.local", "redis.llm-engine.svc", "redis.llm-engine"}


def test_service_is_found_by_its_selector():
    svc = SimpleNamespace(spec=SimpleNamespace(selector={"app": "model-engine"}))
    headless_other = SimpleNamespace(spec=SimpleNamespace(selector={"app": "redis"}))
    addresses = {("llm-engine", "model-engine"): ("127.1.0.1", svc),
                 ("llm-engine", "redis"): ("127.1.0.2", headless_other)}
    assert workloads.service_for(addresses, "llm-engine", {"app": "model-engine", "x": "y"}) == ("127.1.0.1", svc)
    assert workloads.service_for(addresses, "other", {"app": "model-engine"}) == (None, None)
