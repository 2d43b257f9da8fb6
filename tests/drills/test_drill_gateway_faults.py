"""Drill 3 (issue 10): the LLM Engine gateway misbehaves; llm_endpoint and the llm_endpoints role cope.

Faults come from the sandbox's gateway stand-in (``POST /_standin/faults``: statuses with or
without ``Retry-After``, hangs); what the server saw comes from its request log
(``GET /_standin/requests``). The module talks to the stand-in through a recording proxy
(tests/drills/gw_proxy.py) only to learn *when* each request arrived, which the stand-in's log
does not say: the gaps between arrivals are the client's waits.

What must hold:
- 500, 503, 429 and hangs followed by success: the task succeeds, each retry waits longer than the
  one before (equal-jitter exponential backoff: retry k waits between 2**(k-2) and 2**(k-1) s),
  and a ``Retry-After`` (seconds or HTTP date) is waited for in full;
- a POST that times out after the server created the endpoint leaves exactly one endpoint;
- 400, 404 and 422 fail after exactly one request, with the server's detail in the message;
- an endless 500 ends when ``retries`` or ``retry_budget`` is spent, with a message naming the URL,
  the number of attempts, the last status and the option to raise.

Each test uses its own user id, so its endpoints and log entries are its own.
"""

import base64
import email.utils
import json
import time
import urllib.error
import urllib.request
import uuid

import pytest

from tests.drills.gw_proxy import GatewayProxy
from tests.helpers.sandbox import run_playbook, task_results

COLLECTION = "/v1/llm/model-endpoints"
TASK = "endpoint"
ENDPOINT = {
    "model_name": "llama-3-8b-instruct",
    "inference_framework": "vllm",
    "inference_framework_image_tag": "0.6.3.post1",
    "checkpoint_path": "s3://drill-gw/llama-3-8b-instruct",
    "endpoint_type": "streaming",
    "gpus": 1,
    "gpu_type": "nvidia-ampere-a10",
    "cpus": "1",
    "memory": "4Gi",
    "storage": "10Gi",
    "nodes_per_worker": 1,
    "min_workers": 1,
    "max_workers": 1,
    "per_worker": 1,
    "labels": {"team": "drill", "product": "gateway-faults"},
}
# A request answered within a few ms still takes some time between two arrivals beyond the client's
# wait; the drill only ever uses this slack to allow *more* time, never to tighten a bound.
SLACK = 0.25


class StandIn:
    """The stand-in's admin routes and this test's share of its request log."""

    def __init__(self, url, user):
        self.url = url.rstrip("/")
        self.user = user

    def _call(self, method, path, body=None, auth=False):
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = "Basic " + base64.b64encode(("%s:" % self.user).encode()).decode()
        request = urllib.request.Request(self.url + path, method=method, headers=headers,  # noqa: S310 - the sandbox's stand-in URL
                                         data=json.dumps(body).encode() if body is not None else None)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - 127.0.0.1 sandbox
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def fault(self, **fault):
        status, answer = self._call("POST", "/_standin/faults", fault)
        assert status == 200, answer

    def clear_faults(self):
        self._call("DELETE", "/_standin/faults")

    def log(self, method=None, path=None):
        """(method, path, status) of this user's API requests, oldest first."""
        entries = self._call("GET", "/_standin/requests")[1]["requests"]
        return [(e["method"], e["path"], e["status"]) for e in entries
                if e["user"] == self.user and (method is None or e["method"] == method)
                and (path is None or e["path"] == path)]

    def endpoint_names(self):
        return sorted(e["name"] for e in self._call("GET", COLLECTION, auth=True)[1]["model_endpoints"])

    def delete_all(self):
        for name in self.endpoint_names():
            for _attempt in range(100):
                if self._call("DELETE", "%s/%s" % (COLLECTION, name), auth=True)[0] != 409:
                    break
                time.sleep(0.2)
        deadline = time.monotonic() + 60
        while self.endpoint_names():
            assert time.monotonic() < deadline, "endpoints of %s left behind" % self.user
            time.sleep(0.3)


@pytest.fixture
def standin(sandbox_env):
    url = sandbox_env.get("SANDBOX_LLM_ENGINE_URL")
    assert url, "the sandbox env has no SANDBOX_LLM_ENGINE_URL: is the LLM Engine stand-in running?"
    gateway = StandIn(url, "drill-gw-" + uuid.uuid4().hex[:8])
    gateway.clear_faults()
    yield gateway
    gateway.clear_faults()
    gateway.delete_all()


@pytest.fixture
def proxy(standin):
    with GatewayProxy(standin.url) as recording:
        yield recording


def run_module(url, user, name, **options):
    args = dict(ENDPOINT, url=url, user_id=user, name=name, wait=False)
    args.update(options)
    play = [{"hosts": "localhost", "gather_facts": False,
             "tasks": [{"name": TASK, "llmops.serving.llm_endpoint": args}]}]
    run = run_playbook(play)
    results = task_results(run, TASK)
    assert results, "no result for the task:\n%s\n%s" % (run["stdout"][-3000:], run["stderr"][-3000:])
    return run, results[0]


def gaps(arrivals):
    times = [entry[0] for entry in arrivals]
    return [later - earlier for earlier, later in zip(times, times[1:], strict=False)]


def assert_backoff(waits):
    """Retry k waits at least 2**(k-2) s (half its ceiling), and no wait is shorter than the one before."""
    for number, wait in enumerate(waits, start=1):
        floor = 2 ** (number - 2)
        assert wait >= floor, "retry %d came after %.2fs, before the backoff floor of %.2fs: %r" % (
            number, wait, floor, waits)
    for earlier, later in zip(waits, waits[1:], strict=False):
        assert later >= earlier - SLACK, "backoff shrank: %r" % waits


# ------------------------------------------------------------------------------------------------ tests

def test_create_survives_500_503_429_with_growing_waits_and_makes_one_endpoint(standin, proxy):
    name = "gw-create"
    for status in (500, 503, 429):  # consumed in this order, one per POST
        standin.fault(status=status, count=1, methods=["POST"], path_prefix=COLLECTION,
                      detail="drill: injected %d" % status)
    run, result = run_module(proxy.url, standin.user, name)
    assert run["rc"] == 0, result.get("msg")
    assert result["changed"] is True and result["operation"] == "create"

    assert standin.log("POST", COLLECTION) == [("POST", COLLECTION, s) for s in (500, 503, 429, 200)]
    assert standin.endpoint_names() == [name]
    posts = proxy.arrivals("POST", COLLECTION)
    assert [entry[3] for entry in posts] == [500, 503, 429, 200]
    waits = gaps(posts)
    print("waits between POST attempts: %s" % ", ".join("%.2fs" % w for w in waits))
    assert_backoff(waits)


def test_retry_after_as_a_date_and_in_seconds_is_waited_for_in_full(standin, proxy):
    name = "gw-retry-after"
    path = "%s/%s" % (COLLECTION, name)
    not_before = []

    def arrange(method, arrived_path):
        # when the first read arrives: answer it 503 "come back at <HTTP date>" (whole seconds, at
        # least 3 s ahead), and the next one 429 "come back in 2 s"
        if method == "GET" and arrived_path == path and not not_before:
            not_before.append(int(time.time()) + 4)
            standin.fault(status=503, count=1, methods=["GET"], path_prefix=path,
                          retry_after=email.utils.formatdate(not_before[0], usegmt=True))
            standin.fault(status=429, count=1, methods=["GET"], path_prefix=path, retry_after=2)

    proxy.on_arrival = arrange
    run, result = run_module(proxy.url, standin.user, name)
    assert run["rc"] == 0, result.get("msg")
    reads = proxy.arrivals("GET", path)
    assert [entry[3] for entry in reads][:3] == [503, 429, 404]
    print("Retry-After date: retried %.2fs after it; Retry-After 2: retried after %.2fs"
          % (reads[1][4] - not_before[0], reads[2][0] - reads[1][0]))
    # without the header these waits would be at most 1 s and 2 s
    assert reads[1][4] >= not_before[0], "retried %.2fs before the Retry-After date" % (not_before[0] - reads[1][4])
    assert reads[1][0] - reads[0][0] >= 3, gaps(reads)
    assert reads[2][0] - reads[1][0] >= 2, gaps(reads)
    assert standin.endpoint_names() == [name]


def test_a_post_that_times_out_after_the_server_created_the_endpoint_is_not_duplicated(standin, proxy):
    name = "gw-lost-answer"
    # The stand-in sleeps, then handles the POST (creates the endpoint); the client stopped waiting
    # after 1 s and retries after at least 0.5 s more, by when the endpoint exists.
    standin.fault(hang_seconds=1.2, count=1, methods=["POST"], path_prefix=COLLECTION)
    run, result = run_module(proxy.url, standin.user, name, timeout=1)
    assert run["rc"] == 0, result.get("msg")
    assert result["changed"] is True
    assert standin.log("POST", COLLECTION) == [("POST", COLLECTION, 200),
                                               ("POST", COLLECTION, 400)]  # the retry: "already exists"
    assert [entry["status"] for entry in result["requests"] if entry["method"] == "POST"] == [None, 400]
    assert standin.endpoint_names() == [name]
    assert result["endpoint"]["name"] == name

    # and the next run finds it and changes nothing
    run, result = run_module(standin.url, standin.user, name)
    assert run["rc"] == 0, result.get("msg")
    assert result["changed"] is False
    assert len(standin.log("POST", COLLECTION)) == 2


@pytest.mark.parametrize("status,detail", [
    (400, "Requested max workers 1 refused by the drill"),
    (404, "Model bundle drill-missing was not found."),
    (422, [{"type": "missing", "loc": ["body", "vllm", "labels"], "msg": "Field required"}]),
])
def test_a_client_error_fails_after_one_request_with_the_server_detail(standin, status, detail):
    name = "gw-%d" % status
    standin.fault(status=status, count=1, methods=["POST"], path_prefix=COLLECTION, detail=detail)
    run, result = run_module(standin.url, standin.user, name)
    assert run["rc"] != 0
    assert standin.log("POST", COLLECTION) == [("POST", COLLECTION, status)]
    shown = detail if isinstance(detail, str) else "vllm.labels: Field required"
    assert shown in result["msg"] and "answered %d" % status in result["msg"], result["msg"]
    assert result["status"] == status and result["detail"] == shown
    assert "gave up" not in result["msg"]
    assert standin.endpoint_names() == []


def test_an_endless_500_ends_when_the_retries_are_used_and_says_what_to_raise(standin, proxy):
    name = "gw-endless"
    path = "%s/%s" % (COLLECTION, name)
    standin.fault(status=500, count=-1, methods=["GET"], path_prefix=path, detail="drill: broker down")
    run, result = run_module(proxy.url, standin.user, name, retries=3, retry_budget=60)
    assert run["rc"] != 0
    message = result["msg"]
    assert standin.log("GET", path) == [("GET", path, 500)] * 4
    assert "%s%s" % (proxy.url, path) in message, message
    assert "gave up after 4 attempt(s)" in message and "last: HTTP 500" in message, message
    assert "raise retries (now 3)" in message and "drill: broker down" in message, message
    assert result["status"] == 500
    assert_backoff(gaps(proxy.arrivals("GET", path)))
    assert standin.log("POST") == []


def test_an_endless_500_ends_when_the_retry_budget_is_spent(standin, proxy):
    name = "gw-budget"
    path = "%s/%s" % (COLLECTION, name)
    standin.fault(status=500, count=-1, methods=["GET"], path_prefix=path)
    run, result = run_module(proxy.url, standin.user, name, retries=50, retry_budget=4)
    assert run["rc"] != 0
    message = result["msg"]
    reads = proxy.arrivals("GET", path)
    assert 3 <= len(reads) <= 4, reads  # waits of 0.5-1, 1-2, 2-4 s: the budget of 4 s ends it long before 50
    assert "gave up after %d attempt(s)" % len(reads) in message, message
    assert "would pass the retry_budget of 4s: raise retry_budget" in message, message
    assert "%s%s" % (proxy.url, path) in message and "last: HTTP 500" in message, message
    # no retry started after the budget
    assert reads[-1][0] - reads[0][0] <= 4 + SLACK, gaps(reads)

    # a Retry-After longer than the budget: give up at once instead of waiting or retrying early
    standin.clear_faults()
    standin.fault(status=429, count=-1, methods=["GET"], path_prefix=path, retry_after=600)
    before = len(standin.log("GET", path))
    run, result = run_module(standin.url, standin.user, name, retry_budget=30)
    assert run["rc"] != 0
    assert standin.log("GET", path)[before:] == [("GET", path, 429)]
    assert "asked to wait 600s (Retry-After), past the retry_budget of 30s: raise retry_budget" in result["msg"]


def test_role_applies_two_endpoints_through_faults_and_fails_clearly_when_one_never_recovers(standin, proxy):
    role_vars = {
        "llm_endpoints_url": proxy.url,
        "llm_endpoints_user_id": standin.user,
        "llm_endpoints_timeout": 1,
        "llm_endpoints_retries": 4,
        "llm_endpoints_retry_budget": 30,
        "llm_endpoints_poll_interval": 1,
        "llm_endpoints_wait": False,
        "llm_endpoints_defaults": dict(ENDPOINT),
        "llm_endpoints_list": [{"name": "gw-role-a"}, {"name": "gw-role-b", "max_workers": 2}],
    }
    play = [{"hosts": "localhost", "gather_facts": False, "roles": [{"role": "llmops.serving.llm_endpoints"}]}]
    path_a, path_b = COLLECTION + "/gw-role-a", COLLECTION + "/gw-role-b"
    standin.fault(status=503, count=1, methods=["GET"], path_prefix=path_a, retry_after=1)  # the plan's read
    standin.fault(hang_seconds=3, count=1, methods=["GET"], path_prefix=path_b)  # the plan's read times out
    standin.fault(status=500, count=2, methods=["POST"], path_prefix=COLLECTION)
    run = run_playbook(play, extra_vars=role_vars)
    assert run["rc"] == 0, run["stdout"][-4000:]
    assert standin.endpoint_names() == ["gw-role-a", "gw-role-b"]
    assert [s for _m, _p, s in standin.log("POST", COLLECTION)] == [500, 500, 200, 200]
    assert [s for _m, _p, s in standin.log("GET", path_a)][:2] == [503, 404]
    assert [s for _m, _p, s in standin.log("GET", path_b)][:2] == [404, 404]  # the first answered after the client left
    assert gaps(proxy.arrivals("GET", path_a)[:2])[0] >= 1  # Retry-After: 1
    assert gaps(proxy.arrivals("GET", path_b)[:2])[0] >= 1 + 0.5  # timeout, then at least half the first backoff

    # second run: nothing to do; then one endpoint's update meets a 503 that never ends
    again = run_playbook(play, extra_vars=role_vars)
    assert again["rc"] == 0, again["stdout"][-3000:]
    assert sum(h.get("changed", 0) for h in again["stats"].values()) == 0
    standin.fault(status=503, count=-1, methods=["PUT"], path_prefix=path_b, detail="drill: gateway overloaded")
    broken = dict(role_vars, llm_endpoints_retries=2, llm_endpoints_list=[
        {"name": "gw-role-a"}, {"name": "gw-role-b", "max_workers": 3}])
    failed = run_playbook(play, extra_vars=broken)
    assert failed["rc"] != 0
    assert [s for _m, _p, s in standin.log("PUT", path_b)] == [503, 503, 503]
    text = failed["stdout"]
    assert "endpoint gw-role-b: PUT %s answered 503: drill: gateway overloaded" % path_b in text, text[-3000:]
    assert "gave up after 3 attempt(s)" in text and "%s%s" % (proxy.url, path_b) in text, text[-3000:]
    assert "raise retries (now 2)" in text, text[-3000:]
    assert standin.user not in text  # the user id is a credential
