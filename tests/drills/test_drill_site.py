"""Drills 2, 4 and 6 (issue 10) on playbooks/site.yml and teardown.yml, as one ordered scenario.

A full site.yml run takes minutes, so the three drills share five runs, in this order (each test
needs the state the one before left):

1. teardown purge (clean start), then ``site.yml -vvv`` with the default callback: the first run
   generates the Redis and Postgres passwords and the TLS keys. Drill 4: its whole output (stdout and
   stderr) holds none of the secret values of the cluster's Secrets or of the sandbox env file, in
   any form (plain, base64 also inside longer blobs, URL-encoded, JSON-escaped, folded by YAML).
2. Drill 6: teardown without purge keeps every PVC (same UID) and every Secret (same data) except
   the ones its Helm release owned.
3. Drill 2: site.yml again, and the sandbox's kube-apiserver is killed (SIGKILL) when the run
   creates the LLM Engine ServiceAccount (the task right before ``helm upgrade --install``), then
   restarted with ``sandbox.py up``. The run completes, or fails with a message that names the
   unreachable API server (not a bare traceback or MODULE FAILURE).
4. The next run converges. Rule: a task (name and file:line) may report changed only if it did not
   finish in the interrupted run (it failed there, or never started); every task that finished there
   reports no change. The passwords and keys are the ones generated in step 1 (drill 6: reused).
5. One more run changes nothing (only when step 3 failed: when it completed, step 4 already had to
   change nothing); teardown purge deletes the PVCs and Secrets.

Runs against the sandbox LLMOPS_SANDBOX_DIR names; it kills that sandbox's API server, so run it on
an instance of your own when others share the default one.
"""

import base64
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from tests.drills import site_secrets
from tests.helpers.playbook import INVENTORY, PLAYBOOKS, changed_keys, exists, failures, host_results
from tests.helpers.sandbox import (
    REPO_ROOT,
    kube_client,
    kubectl_json,
    load_env,
    process_env,
    sandbox_dir,
    total_changed,
)

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

SANDBOX_PY = os.path.join(REPO_ROOT, "tests", "sandbox", "sandbox.py")
NAMESPACE = "llm-engine"
NAMESPACES = (NAMESPACE, "llm-engine-endpoints", "vllm")
DATA_PVCS = ("data-redis-0", "data-postgres-0")
# The Secrets each role generates or is given: the scan must have found values in all of them.
EXPECTED_SECRETS = ("llm-engine/redis-cluster", "llm-engine/llm-engine-postgres-credentials",
                    "llm-engine/postgres-superuser", "llm-engine/redis-ca-keypair",
                    "llm-engine/regcred", "llm-engine/llm-engine-s3", "vllm/regcred", "vllm/llm-engine-s3")
TRIGGER = ("ServiceAccount", "model-engine")
API_DOWN = re.compile(r"(?i)(kubernetes cluster unreachable|connection refused|failed to establish a new connection"
                      r"|max retries exceeded|api ?server|connection reset|remotedisconnected|eof)")
TIMEOUT = 1800


# ----------------------------------------------------------------------------- runs

def start_playbook(name, *, extra_vars=None, extra_args=(), callback="ansible.builtin.json"):
    """Start ansible-playbook on the sandbox inventory in the background (output to temp files)."""
    tmpdir = tempfile.mkdtemp(prefix="llmops-drill-site-")
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), os.path.join(PLAYBOOKS, name),
           "-i", INVENTORY, *extra_args]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    env = process_env({"ANSIBLE_STDOUT_CALLBACK": callback, "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
                       "ANSIBLE_LOCALHOST_WARNING": "False", "ANSIBLE_NOCOLOR": "True"})
    out = open(os.path.join(tmpdir, "stdout"), "w+", encoding="utf-8")  # noqa: SIM115 - closed in finish()
    err = open(os.path.join(tmpdir, "stderr"), "w+", encoding="utf-8")  # noqa: SIM115 - closed in finish()
    proc = subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdout=out, stderr=err, text=True)
    return {"proc": proc, "out": out, "err": err, "started": time.monotonic(), "name": name}


def finish(run):
    try:
        rc = run["proc"].wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        run["proc"].kill()
        rc = run["proc"].wait()
    outputs = []
    for handle in (run["out"], run["err"]):
        handle.seek(0)
        outputs.append(handle.read())
        handle.close()
    parsed = None
    try:
        parsed = json.loads(outputs[0])
    except ValueError:
        pass
    return {"rc": rc, "stdout": outputs[0], "stderr": outputs[1], "json": parsed,
            "stats": (parsed or {}).get("stats", {}), "seconds": round(time.monotonic() - run["started"])}


def playbook(name, **kwargs):
    return finish(start_playbook(name, **kwargs))


def finished_keys(run):
    """Tasks with at least one result that is not a failure (ok, changed or skipped)."""
    return {key for key, host in host_results(run) if not host.get("failed") and not host.get("unreachable")}


def unexpected_changes(interrupted, converging):
    """Tasks that changed in ``converging`` although they finished in ``interrupted``."""
    return sorted(changed_keys(converging) & finished_keys(interrupted))


# ----------------------------------------------------------------------------- cluster

def secrets():
    out = []
    for namespace in NAMESPACES:
        out.extend(kubectl_json("get", "secrets", "-n", namespace)["items"])
    return [item for item in out if item.get("type") != site_secrets.HELM_RELEASE_TYPE]


def secret_map():
    """{namespace/name: data} of the platform's Secrets (Helm release records left out)."""
    return {"%s/%s" % (s["metadata"]["namespace"], s["metadata"]["name"]): s.get("data") or {} for s in secrets()}


def pvc_uids():
    items = kubectl_json("get", "pvc", "-n", NAMESPACE)["items"]
    return {item["metadata"]["name"]: item["metadata"]["uid"] for item in items}


# ----------------------------------------------------------------------------- the API server

def sandbox_state():
    with open(os.path.join(sandbox_dir(), "state.json"), encoding="utf-8") as handle:
        return json.load(handle)


def apiserver_pid():
    """The pid the sandbox recorded for its kube-apiserver, checked against the running process."""
    state = sandbox_state()
    pid = state["pids"]["kube-apiserver"]
    with open("/proc/%d/cmdline" % pid, "rb") as handle:
        binary = handle.read().split(b"\0")[0].decode()
    assert binary == state["cmds"]["kube-apiserver"][0], "pid %d is not the sandbox's kube-apiserver" % pid
    return pid


def sandbox_up():
    env = dict(os.environ, LLMOPS_SANDBOX_DIR=sandbox_dir())
    return subprocess.Popen([sys.executable, SANDBOX_PY, "up"], env=env, cwd=REPO_ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_for_object(run, kind, name, namespace):
    """Poll the API server until ``kind``/``name`` exists; False when the run ended first."""
    from kubernetes import client

    api = client.CoreV1Api(kube_client())
    read = {"ServiceAccount": api.read_namespaced_service_account}[kind]
    while run["proc"].poll() is None:
        try:
            read(name, namespace)
            return True
        except client.exceptions.ApiException as exc:
            if exc.status != 404:
                raise
        time.sleep(0.2)
    return False


def kill_apiserver_and_restart():
    pid = apiserver_pid()
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    deadline = killed + 30
    while time.monotonic() < deadline:
        try:
            with open("/proc/%d/stat" % pid, encoding="utf-8") as handle:
                if handle.read().split(")")[-1].split()[0] == "Z":
                    break
        except OSError:
            break
        time.sleep(0.1)
    return killed, sandbox_up()


# ----------------------------------------------------------------------------- the scenario

@pytest.fixture(scope="module")
def drill(sandbox_env):
    state = {"timings": {}}
    try:
        yield state
    finally:
        # leave the sandbox as found: API server up, platform purged
        if not os.path.exists("/proc/%d" % sandbox_state()["pids"].get("kube-apiserver", 0)):
            sandbox_up().communicate()
        if not state.get("purged"):
            playbook("teardown.yml", extra_vars={"purge": True})
        sys.stderr.write("drill timings (s): %s\n" % state["timings"])


def need(state, *keys):
    missing = [key for key in keys if key not in state]
    if missing:
        pytest.fail("an earlier step of the scenario did not complete: %s" % missing)


def check_no_secret_in(run, drill):
    """Drill 4 on a finished ``site.yml -vvv`` run; records the Secrets and PVCs it left."""
    platform_secrets = secrets()
    drill["secrets"] = secret_map()
    drill["helm_secrets"] = {"%s/%s" % (s["metadata"]["namespace"], s["metadata"]["name"]) for s in platform_secrets
                             if (s["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by") == "Helm"}
    drill["pvcs"] = pvc_uids()

    values = site_secrets.secret_values(platform_secrets)
    env = load_env()
    provided = [("env SANDBOX_S3_ACCESS_KEY", env["SANDBOX_S3_ACCESS_KEY"]),
                ("env SANDBOX_S3_SECRET_KEY", env["SANDBOX_S3_SECRET_KEY"])]
    with open(os.path.join(sandbox_dir(), "registry-password"), encoding="utf-8") as handle:
        provided.append(("registry password file", handle.read().split()[0]))
    in_cluster = "\n".join(value for _label, value in values)
    for label, value in provided:
        assert value in in_cluster, "%s is not in any Secret: the scan would look for the wrong value" % label
    values = site_secrets.unique(values + provided)

    # not a vacuous scan: every expected Secret contributed, every value is long enough to mean something
    sources = {"%s/%s" % (s["metadata"]["namespace"], s["metadata"]["name"]) for s in platform_secrets
               if site_secrets.secret_values([s])}
    assert set(EXPECTED_SECRETS) <= sources, sorted(set(EXPECTED_SECRETS) - sources)
    short = [label for label, value in values if len(value) < site_secrets.MIN_LENGTH]
    assert not short, "values too short to scan for: %s" % short
    assert len(run["stdout"]) > 100000, "-vvv output is suspiciously short"

    hits = site_secrets.scan(run["stdout"] + "\n" + run["stderr"], values)
    assert not hits, "secret values in the -vvv output of site.yml:\n" + "\n".join(hits)
    drill["scanned"] = len(values)


def test_first_run_with_vvv_prints_no_secret(drill):
    purge = playbook("teardown.yml", extra_vars={"purge": True})
    assert purge["rc"] == 0, failures(purge)
    assert not exists("secret", "redis-cluster", NAMESPACE), "purge left the Redis password behind"

    run = playbook("site.yml", extra_args=["-vvv"], callback="ansible.builtin.default")
    drill["timings"]["site -vvv"] = run["seconds"]
    assert run["rc"] == 0, run["stdout"][-4000:] + run["stderr"][-2000:]
    check_no_secret_in(run, drill)


def test_teardown_without_purge_keeps_volumes_and_secrets(drill):
    need(drill, "secrets", "pvcs")
    assert set(DATA_PVCS) <= set(drill["pvcs"]), drill["pvcs"]
    down = playbook("teardown.yml")
    drill["timings"]["teardown"] = down["seconds"]
    assert down["rc"] == 0, failures(down)
    assert not exists("statefulset", "redis", NAMESPACE) and not exists("deployment", "model-engine", NAMESPACE)
    assert not exists("serviceaccount", TRIGGER[1], NAMESPACE), \
        "the release's ServiceAccount survived the teardown: the restart drill would trigger at once"

    assert pvc_uids() == drill["pvcs"]
    after = secret_map()
    gone = sorted(set(drill["secrets"]) - set(after))
    changed = sorted(name for name in after if name in drill["secrets"] and after[name] != drill["secrets"][name])
    assert not changed, "teardown rewrote Secrets: %s" % changed
    # only the chart's own Secrets may go with the release (helm uninstall deletes them)
    assert set(gone) <= drill["helm_secrets"], "teardown without purge deleted Secrets: %s" % gone
    assert set(EXPECTED_SECRETS) <= set(after), sorted(set(EXPECTED_SECRETS) - set(after))
    drill["kept"] = after
    drill["torn_down"] = True


def test_apiserver_killed_mid_run_fails_clearly_or_completes(drill):
    need(drill, "torn_down")
    old_pid = apiserver_pid()
    run = start_playbook("site.yml")
    triggered = wait_for_object(run, TRIGGER[0], TRIGGER[1], NAMESPACE)
    restart = None
    if triggered:
        killed, restart = kill_apiserver_and_restart()
    result = finish(run)
    drill["timings"]["site (apiserver killed)"] = result["seconds"]
    if restart is not None:
        log, _unused = restart.communicate(timeout=600)
        drill["timings"]["apiserver down (kill to sandbox up)"] = round(time.monotonic() - killed)
        assert restart.returncode == 0, log
    assert triggered, "the run ended before it created %s %s/%s: %s" % (TRIGGER + (NAMESPACE, failures(result)))
    assert apiserver_pid() != old_pid
    drill["interrupted"] = result

    if result["rc"] != 0:
        failed = [(key, host) for key, host in host_results(result) if host.get("failed") and not host.get("ignored")]
        failed = failed or [(("(playbook)", ""), {"msg": result["stderr"]})]
        for (name, path), host in failed:
            message = str(host.get("msg", ""))
            assert message.strip(), "task %r (%s) failed without a message" % (name, path)
            assert "MODULE FAILURE" not in message and not message.lstrip().startswith("Traceback"), \
                "task %r (%s) failed with a bare traceback:\n%s" % (name, path, message[:2000])
            assert API_DOWN.search(message), \
                "task %r (%s) failed without naming the unreachable API server:\n%s" % (name, path, message[:2000])
        drill["interrupted_failures"] = [(key, str(host.get("msg"))[:300]) for key, host in failed]
    sys.stderr.write("interrupted run: rc=%d, %s\n" % (result["rc"], drill.get("interrupted_failures")))


def test_next_run_converges_where_work_was_unfinished_and_reuses_passwords(drill):
    need(drill, "interrupted")
    run = playbook("site.yml")
    drill["timings"]["site (converge)"] = run["seconds"]
    assert run["rc"] == 0, failures(run)
    unexpected = unexpected_changes(drill["interrupted"], run)
    assert not unexpected, "changed again although they finished in the interrupted run: %s" % unexpected
    assert pvc_uids() == drill["pvcs"]
    after = secret_map()
    assert {name: after.get(name) for name in drill["kept"]} == drill["kept"], \
        "Secrets kept by the teardown were rewritten: %s" % sorted(
            name for name in drill["kept"] if after.get(name) != drill["kept"][name])
    password = base64.b64decode(after["llm-engine/redis-cluster"]["password"])
    assert password == base64.b64decode(drill["secrets"]["llm-engine/redis-cluster"]["password"])
    drill["converged"] = run


def test_another_run_changes_nothing(drill):
    need(drill, "converged")
    if drill["interrupted"]["rc"] == 0:
        # the interrupted run finished everything, so the converging run was already this run (and the
        # rule above allowed it no change at all): a third full run would prove nothing new
        assert total_changed(drill["converged"]) == 0, sorted(changed_keys(drill["converged"]))
        return
    run = playbook("site.yml")
    drill["timings"]["site (idempotence)"] = run["seconds"]
    assert run["rc"] == 0, failures(run)
    assert total_changed(run) == 0, sorted(changed_keys(run))


def test_teardown_with_purge_deletes_volumes_and_secrets(drill):
    need(drill, "secrets")
    purge = playbook("teardown.yml", extra_vars={"purge": True})
    drill["timings"]["teardown purge"] = purge["seconds"]
    drill["purged"] = True
    assert purge["rc"] == 0, failures(purge)
    assert not set(pvc_uids()) & set(DATA_PVCS), pvc_uids()
    left = sorted(set(secret_map()) & set(drill["secrets"]))
    assert not left, "purge left Secrets behind: %s" % left
    assert kubectl_json("get", "namespace", NAMESPACE)["status"]["phase"] == "Active"
