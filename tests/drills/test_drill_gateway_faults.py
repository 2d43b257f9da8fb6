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

The ansible-playbook start-up dominates on a busy machine, so all module scenarios run as the tasks
of one playbook (``scenarios`` fixture) and the tests read their scenario's outcome. Each scenario
has its own user id, so its endpoints and log entries are its own, and its faults are registered
the moment its first request reaches the proxy, so they meet exactly that scenario's requests.
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
    """The stand-in's admin routes and each user's share of its request log."""

    def __init__(self, url):
        self.url = url.rstrip("/")

    def _call(self, method, path, body=None, user=None):
        headers = {"Content-Type": "application/json"}
        if user:
            headers["Authorization"] = "Basic " + base64.b64encode(("%s:" % user).encode()).decode()
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

    def log(self, user, method=None, path=None):
        """(method, path, status) of the user's API requests, oldest first."""
        entries = self._call("GET", "/_standin/requests")[1]["requests"]
        return [(e["method"], e["path"], e["status"]) for e in entries
                if e["user"] == user and (method is None or e["method"] == method)
                and (path is None or e["path"] == path)]

    def endpoint_names(self, user):
        return sorted(e["name"] for e in self._call("GET", COLLECTION, user=user)[1]["model_endpoints"])

    def delete_all(self, user):
        for name in self.endpoint_names(user):
            for _attempt in range(100):
                if self._call("DELETE", "%s/%s" % (COLLECTION, name), user=user)[0] != 409:
                    break
                time.sleep(0.2)
        deadline = time.monotonic() + 60
        while self.endpoint_names(user):
            assert time.monotonic() < deadline, "endpoints of %s left behind" % user
            time.sleep(0.3)


def _users():
    run = uuid.uuid4().hex[:6]
    return lambda scenario: "drill-gw-%s-%s" % (run, scenario)


USER = _users()


def _path(name):
    return "%s/%s" % (COLLECTION, name)


def _retry_after_faults():
    """The first read is told to come back at an HTTP date (whole seconds, >= 3 s ahead), the second in 2 s."""
    not_before = int(time.time()) + 4
    return [dict(status=503, count=1, methods=["GET"], path_prefix=_path("gw-retry-after"),
                 retry_after=email.utils.formatdate(not_before, usegmt=True), not_before=not_before),
            dict(status=429, count=1, methods=["GET"], path_prefix=_path("gw-retry-after"), retry_after=2)]


CLIENT_ERRORS = {
    400: "Requested max workers 1 refused by the drill",
    404: "Model bundle drill-missing was not found.",
    422: [{"type": "missing", "loc": ["body", "vllm", "labels"], "msg": "Field required"}],
}

# scenario -> (endpoint name, module options, faults registered when its first request arrives)
SCENARIOS = {
    "create": ("gw-create", {}, lambda: [
        dict(status=status, count=1, methods=["POST"], path_prefix=COLLECTION, detail="drill: injected %d" % status)
        for status in (500, 503, 429)]),  # consumed in this order, one per POST
    "retry-after": ("gw-retry-after", {}, _retry_after_faults),
    # The stand-in sleeps 1.2 s, then handles the POST (creates the endpoint); the client stopped
    # waiting after 1 s and retries after at least 0.5 s more, by when the endpoint exists.
    "lost-answer": ("gw-lost-answer", {"timeout": 1}, lambda: [
        dict(hang_seconds=1.2, count=1, methods=["POST"], path_prefix=COLLECTION)]),
    "lost-answer-rerun": ("gw-lost-answer", {}, list),  # same user as lost-answer (see below)
    "endless": ("gw-endless", {"retries": 3, "retry_budget": 60}, lambda: [
        dict(status=500, count=-1, methods=["GET"], path_prefix=_path("gw-endless"), detail="drill: broker down")]),
    "budget": ("gw-budget", {"retries": 50, "retry_budget": 4}, lambda: [
        dict(status=500, count=-1, methods=["GET"], path_prefix=_path("gw-budget"))]),
    "retry-after-too-long": ("gw-patience", {"retry_budget": 30}, lambda: [
        dict(status=429, count=-1, methods=["GET"], path_prefix=_path("gw-patience"), retry_after=600)]),
}
for _status, _detail in CLIENT_ERRORS.items():
    SCENARIOS["client-%d" % _status] = ("gw-%d" % _status, {}, lambda s=_status, d=_detail: [
        dict(status=s, count=1, methods=["POST"], path_prefix=COLLECTION, detail=d)])


def scenario_user(scenario):
    return USER("lost-answer" if scenario == "lost-answer-rerun" else scenario)


@pytest.fixture(scope="module")
def standin(sandbox_env):
    url = sandbox_env.get("SANDBOX_LLM_ENGINE_URL")
    assert url, "the sandbox env has no SANDBOX_LLM_ENGINE_URL: is the LLM Engine stand-in running?"
    gateway = StandIn(url)
    gateway.clear_faults()
    yield gateway
    gateway.clear_faults()
    for scenario in list(SCENARIOS) + ["role"]:
        gateway.delete_all(scenario_user(scenario))


@pytest.fixture(scope="module")
def proxy(standin):
    with GatewayProxy(standin.url) as recording:
        yield recording


@pytest.fixture(scope="module")
def scenarios(standin, proxy):
    """Run every module scenario as one task of one playbook; return {scenario: (result, faults)}."""
    pending = dict((scenario_user(s), s) for s in SCENARIOS if s != "lost-answer-rerun")
    registered = {}

    def arrange(_method, _path, user):
        scenario = pending.pop(user, None)
        if scenario is not None:
            registered[scenario] = SCENARIOS[scenario][2]()
            for fault in registered[scenario]:
                standin.fault(**dict((k, v) for k, v in fault.items() if k != "not_before"))

    proxy.on_arrival = arrange
    tasks = []
    for scenario, (name, options, _faults) in SCENARIOS.items():
        args = dict(ENDPOINT, url=proxy.url, user_id=scenario_user(scenario), name=name, wait=False)
        args.update(options)
        tasks.append({"name": scenario, "llmops.serving.llm_endpoint": args, "ignore_errors": True})
    started = time.monotonic()
    run = run_playbook([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}])
    print("module scenarios: %d tasks in %.1fs" % (len(tasks), time.monotonic() - started))
    proxy.on_arrival = None
    standin.clear_faults()
    outcome = {}
    for scenario in SCENARIOS:
        results = task_results(run, scenario)
        assert results, "no result for %s:\n%s\n%s" % (scenario, run["stdout"][-3000:], run["stderr"][-3000:])
        outcome[scenario] = (results[0], registered.get(scenario, []))
    return outcome


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

def test_create_survives_500_503_429_with_growing_waits_and_makes_one_endpoint(scenarios, standin, proxy):
    result, _faults = scenarios["create"]
    user = USER("create")
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is True and result["operation"] == "create"
    assert standin.log(user, "POST", COLLECTION) == [("POST", COLLECTION, s) for s in (500, 503, 429, 200)]
    assert standin.endpoint_names(user) == ["gw-create"]
    posts = proxy.arrivals(user, "POST", COLLECTION)
    assert [entry[3] for entry in posts] == [500, 503, 429, 200]
    waits = gaps(posts)
    print("waits between POST attempts: %s" % ", ".join("%.2fs" % w for w in waits))
    assert_backoff(waits)


def test_retry_after_as_a_date_and_in_seconds_is_waited_for_in_full(scenarios, standin, proxy):
    result, faults = scenarios["retry-after"]
    user, path = USER("retry-after"), _path("gw-retry-after")
    assert not result.get("failed"), result.get("msg")
    not_before = faults[0]["not_before"]
    reads = proxy.arrivals(user, "GET", path)
    assert [entry[3] for entry in reads][:3] == [503, 429, 404]
    print("Retry-After date: retried %.2fs after it; Retry-After 2: retried after %.2fs"
          % (reads[1][4] - not_before, reads[2][0] - reads[1][0]))
    # without the header these waits would be at most 1 s and 2 s
    assert reads[1][4] >= not_before, "retried %.2fs before the Retry-After date" % (not_before - reads[1][4])
    assert reads[1][0] - reads[0][0] >= 3, gaps(reads)
    assert reads[2][0] - reads[1][0] >= 2, gaps(reads)
    assert standin.endpoint_names(user) == ["gw-retry-after"]


def test_a_post_that_times_out_after_the_server_created_the_endpoint_is_not_duplicated(scenarios, standin):
    result, _faults = scenarios["lost-answer"]
    user = USER("lost-answer")
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is True and result["endpoint"]["name"] == "gw-lost-answer"
    posts = standin.log(user, "POST", COLLECTION)
    # the first POST created the endpoint after the client had left; the retry heard "already exists"
    assert posts == [("POST", COLLECTION, 200), ("POST", COLLECTION, 400)]
    assert [entry["status"] for entry in result["requests"] if entry["method"] == "POST"] == [None, 400]
    assert standin.endpoint_names(user) == ["gw-lost-answer"]
    # and the next run finds it and changes nothing
    rerun, _faults = scenarios["lost-answer-rerun"]
    assert not rerun.get("failed"), rerun.get("msg")
    assert rerun["changed"] is False
    assert [entry["method"] for entry in rerun["requests"]] == ["GET", "GET"]


@pytest.mark.parametrize("status", sorted(CLIENT_ERRORS))
def test_a_client_error_fails_after_one_request_with_the_server_detail(scenarios, standin, status):
    result, _faults = scenarios["client-%d" % status]
    user = USER("client-%d" % status)
    assert result.get("failed") is True
    assert standin.log(user, "POST") == [("POST", COLLECTION, status)]
    detail = CLIENT_ERRORS[status]
    shown = detail if isinstance(detail, str) else "vllm.labels: Field required"
    assert "POST %s answered %d: %s" % (COLLECTION, status, shown) in result["msg"], result["msg"]
    assert result["status"] == status and result["detail"] == shown
    assert "gave up" not in result["msg"]
    assert standin.endpoint_names(user) == []


def test_an_endless_500_ends_when_the_retries_are_used_and_says_what_to_raise(scenarios, standin, proxy):
    result, _faults = scenarios["endless"]
    user, path = USER("endless"), _path("gw-endless")
    assert result.get("failed") is True
    message = result["msg"]
    assert standin.log(user) == [("GET", path, 500)] * 4
    assert "%s%s" % (proxy.url, path) in message, message
    assert "gave up after 4 attempt(s)" in message and "last: HTTP 500" in message, message
    assert "raise retries (now 3)" in message and "drill: broker down" in message, message
    assert result["status"] == 500
    assert_backoff(gaps(proxy.arrivals(user, "GET", path)))


def test_an_endless_500_ends_when_the_retry_budget_is_spent(scenarios, standin, proxy):
    result, _faults = scenarios["budget"]
    user, path = USER("budget"), _path("gw-budget")
    assert result.get("failed") is True
    message = result["msg"]
    reads = proxy.arrivals(user, "GET", path)
    assert 3 <= len(reads) <= 4, reads  # waits of 0.5-1, 1-2, 2-4 s: the budget of 4 s ends it long before 50
    assert len(standin.log(user)) == len(reads)
    assert "gave up after %d attempt(s)" % len(reads) in message, message
    assert "would pass the retry_budget of 4s: raise retry_budget" in message, message
    assert "%s%s" % (proxy.url, path) in message and "last: HTTP 500" in message, message
    # no retry started after the budget
    assert reads[-1][0] - reads[0][0] <= 4 + SLACK, gaps(reads)


def test_a_retry_after_longer_than_the_budget_gives_up_at_once(scenarios, standin):
    result, _faults = scenarios["retry-after-too-long"]
    user, path = USER("retry-after-too-long"), _path("gw-patience")
    assert result.get("failed") is True
    assert standin.log(user) == [("GET", path, 429)]
    assert "asked to wait 600s (Retry-After), past the retry_budget of 30s: raise retry_budget" in result["msg"]


def test_role_applies_endpoints_through_faults_and_names_the_one_that_never_recovers(standin, proxy):
    """One role run, three endpoints: a and b get through a 503 with Retry-After, a read that hangs
    and two 500s on create; c's create meets a 503 that never ends. a and b exist once each, c does
    not, and the role fails naming c, the URL, the attempts and the option to raise."""
    user = USER("role")
    role_vars = {
        "llm_endpoints_url": proxy.url,
        "llm_endpoints_user_id": user,
        "llm_endpoints_timeout": 1,
        "llm_endpoints_retries": 3,
        "llm_endpoints_retry_budget": 30,
        "llm_endpoints_wait": False,
        "llm_endpoints_defaults": dict(ENDPOINT),
        "llm_endpoints_list": [{"name": "gw-role-a"}, {"name": "gw-role-b", "max_workers": 2}, {"name": "gw-role-c"}],
    }
    play = [{"hosts": "localhost", "gather_facts": False, "roles": [{"role": "llmops.serving.llm_endpoints"}]}]
    path_a, path_b, path_c = _path("gw-role-a"), _path("gw-role-b"), _path("gw-role-c")
    # the plan step reads a, b, c; the apply step reads and creates a, then b, then c
    standin.fault(status=503, count=1, methods=["GET"], path_prefix=path_a, retry_after=1)  # a's plan read
    standin.fault(hang_seconds=3, count=1, methods=["GET"], path_prefix=path_b)  # b's plan read times out
    standin.fault(status=500, count=2, methods=["POST"], path_prefix=COLLECTION)  # a's create
    reads_of_c = []

    def arrange(method, path, _user):
        if method == "GET" and path == path_c:
            reads_of_c.append(path)
            if len(reads_of_c) == 2:  # the apply step's read of c: its create will not get through
                standin.fault(status=503, count=-1, methods=["POST"], path_prefix=COLLECTION,
                              detail="drill: gateway overloaded")

    proxy.on_arrival = arrange
    try:
        run = run_playbook(play, extra_vars=role_vars)
    finally:
        proxy.on_arrival = None
        standin.clear_faults()
    assert run["rc"] != 0, run["stdout"][-3000:]
    assert standin.endpoint_names(user) == ["gw-role-a", "gw-role-b"]
    assert [s for _m, _p, s in standin.log(user, "POST", COLLECTION)] == [500, 500, 200, 200, 503, 503, 503, 503]
    assert [s for _m, _p, s in standin.log(user, "GET", path_a)][:2] == [503, 404]
    assert [s for _m, _p, s in standin.log(user, "GET", path_b)][:2] == [404, 404]  # the first answered too late
    assert gaps(proxy.arrivals(user, "GET", path_a)[:2])[0] >= 1  # Retry-After: 1
    assert gaps(proxy.arrivals(user, "GET", path_b)[:2])[0] >= 1 + 0.5  # timeout, then half the first backoff
    assert_backoff(gaps(proxy.arrivals(user, "POST", COLLECTION)[:3]))

    applied = [host for play_result in run["json"]["plays"] for task in play_result["tasks"]
               for host in task["hosts"].values()
               if task["task"]["name"].endswith("Create, update or delete the endpoints without waiting")]
    assert applied, run["stdout"][-3000:]
    items = dict((item["item"]["name"], item) for item in applied[0]["results"])
    assert not items["gw-role-a"].get("failed") and items["gw-role-a"]["changed"] is True
    assert not items["gw-role-b"].get("failed") and items["gw-role-b"]["changed"] is True
    message = items["gw-role-c"]["msg"]
    assert "endpoint gw-role-c: POST %s answered 503: drill: gateway overloaded" % COLLECTION in message, message
    assert "gave up after 4 attempt(s)" in message and "%s%s" % (proxy.url, COLLECTION) in message, message
    assert "last: HTTP 503" in message and "raise retries (now 3)" in message, message
    assert user not in run["stdout"]  # the user id is a credential
