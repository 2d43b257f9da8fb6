"""LLMEngineClient against a real local HTTP server that answers from a script.

Real sockets and ansible-core's urls code; only the waits between retries are recorded instead of
slept, so the tests stay fast.
"""

import base64
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from ansible_collections.llmops.serving.plugins.module_utils import llm_engine as le


class ScriptedServer:
    """Answers each request with the next (status, body, headers, delay) of the script."""

    def __init__(self, script):
        self.script = list(script)
        self.received = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                return

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.received.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                       "body": json.loads(body) if body else None})
                status, payload, headers, delay = (outer.script.pop(0) + (None, None, 0))[:4] \
                    if outer.script else (200, {}, None, 0)
                if delay:
                    time.sleep(delay)
                data = json.dumps(payload).encode() if not isinstance(payload, bytes) else payload
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = do_PUT = do_DELETE = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def make_client(url, **kwargs):
    """A client whose waits are recorded and advance a virtual clock instead of sleeping."""
    sleeps = []
    offset = [0.0]

    def sleep(seconds):
        sleeps.append(seconds)
        offset[0] += seconds

    kwargs.setdefault("retries", 5)
    kwargs.setdefault("timeout", 5)
    client = le.LLMEngineClient(url, "alice", sleep=sleep, clock=lambda: time.monotonic() + offset[0],
                                rand=lambda: 1.0, **kwargs)
    return client, sleeps


def test_sends_basic_auth_with_the_user_id_and_an_empty_password():
    with ScriptedServer([(200, {"endpoint_creation_task_id": "t1"})]) as server:
        client, _sleeps = make_client(server.url)
        assert client.create_endpoint({"name": "x"}) == {"endpoint_creation_task_id": "t1"}
    request = server.received[0]
    assert request["method"] == "POST" and request["path"] == "/v1/llm/model-endpoints"
    assert request["headers"]["Authorization"] == "Basic " + base64.b64encode(b"alice:").decode()
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["body"] == {"name": "x"}


def test_retries_500_and_429_then_succeeds():
    script = [(500, {"detail": "boom"}), (429, {"detail": "slow down"}), (200, {"deleted": True})]
    with ScriptedServer(script) as server:
        client, sleeps = make_client(server.url)
        assert client.delete_endpoint("x") == {"deleted": True}
    assert [r["method"] for r in server.received] == ["DELETE"] * 3
    assert sleeps == [1.0, 2.0]  # exponential, rand pinned to 1.0
    assert [entry["status"] for entry in client.log] == [500, 429, 200]


def test_retry_after_is_honoured():
    with ScriptedServer([(503, {"detail": "busy"}, {"Retry-After": "3"}), (200, {})]) as server:
        client, sleeps = make_client(server.url)
        client.request("GET", "/v1/llm/model-endpoints")
    assert sleeps == [3.0]


@pytest.mark.parametrize("status", [400, 401, 404, 409, 422])
def test_other_4xx_fail_at_once_with_the_server_detail(status):
    with ScriptedServer([(status, {"detail": "Requested max workers 99 too high"})]) as server:
        client, sleeps = make_client(server.url)
        with pytest.raises(le.LLMEngineError) as info:
            client.update_endpoint("x", {"max_workers": 99})
    assert len(server.received) == 1 and sleeps == []
    assert info.value.status == status
    assert info.value.detail == "Requested max workers 99 too high"
    assert "PUT /v1/llm/model-endpoints/x answered %d: Requested max workers 99 too high" % status in str(info.value)


def test_gives_up_after_the_retries_with_the_last_detail():
    with ScriptedServer([(503, {"detail": "broker down"})] * 10) as server:
        client, sleeps = make_client(server.url, retries=3)
        with pytest.raises(le.LLMEngineError) as info:
            client.list_endpoints()
    assert len(server.received) == 4 and len(sleeps) == 3
    assert info.value.status == 503 and "broker down" in str(info.value)
    assert "gave up after 4 attempt(s)" in str(info.value)


def test_the_retry_budget_stops_retries_before_the_count_does():
    with ScriptedServer([(500, {"detail": "x"})] * 10) as server:
        client, sleeps = make_client(server.url, retries=9, retry_budget=2.5)
        with pytest.raises(le.LLMEngineError):
            client.list_endpoints()
    # the first wait (1s) fits the 2.5s budget; after it a 2s wait would end past the budget
    assert sleeps == [1.0]
    assert len(server.received) == 2


def test_connection_refused_is_retried_and_explained():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    client, sleeps = make_client("http://127.0.0.1:%d" % port, retries=2)
    with pytest.raises(le.LLMEngineError) as info:
        client.list_endpoints()
    assert info.value.status is None
    assert "connection refused" in str(info.value)
    assert len(sleeps) == 2 and [e["status"] for e in client.log] == [None, None, None]


def test_a_request_that_hangs_past_the_timeout_is_retried():
    with ScriptedServer([(200, {"model_endpoints": []}, None, 2.0), (200, {"model_endpoints": [{"name": "a"}]})]) \
            as server:
        client, sleeps = make_client(server.url, timeout=0.5)
        assert client.list_endpoints() == [{"name": "a"}]
    assert len(server.received) == 2 and len(sleeps) == 1


def test_get_endpoint_maps_404_to_none_and_hides_other_users_public_endpoints():
    mine = {"name": "x", "spec": {"created_by": "alice"}}
    theirs = {"name": "x", "spec": {"created_by": "bob"}}
    script = [(404, {"detail": "Model Endpoint x  was not found."}), (200, mine), (200, theirs), (200, theirs)]
    with ScriptedServer(script) as server:
        client, _sleeps = make_client(server.url)
        assert client.get_endpoint("x") is None
        assert client.get_endpoint("x") == mine
        assert client.get_endpoint("x") is None
        assert client.get_endpoint("x", own_only=False) == theirs


def test_names_and_queries_are_encoded():
    with ScriptedServer([(200, {"model_endpoints": []}), (200, {"output": {"text": "hi"}})]) as server:
        client, _sleeps = make_client(server.url)
        client.list_endpoints(name="a b", order_by="newest")
        client.completion_sync("my-endpoint", "hello", max_new_tokens=4)
    assert server.received[0]["path"] == "/v1/llm/model-endpoints?name=a+b&order_by=newest"
    assert server.received[1]["path"] == "/v1/llm/completions-sync?model_endpoint_name=my-endpoint"
    assert server.received[1]["body"] == {"prompt": "hello", "max_new_tokens": 4, "temperature": 0.0}


class _FakeClient:
    """Raises a prepared error from create_endpoint (the fault: a POST that reached the server twice)."""

    def __init__(self, error):
        self.error = error

    def create_endpoint(self, body):
        raise self.error


def test_a_retried_create_that_finds_its_own_endpoint_counts_as_created():
    exists = le.LLMEngineError("x", status=400, detail="The specified model endpoint already exists.", attempts=2)
    le._create(_FakeClient(exists), "x", {})  # no exception
    first_try = le.LLMEngineError("x", status=400, detail="The specified model endpoint already exists.", attempts=1)
    with pytest.raises(le.LLMEngineError):
        le._create(_FakeClient(first_try), "x", {})
