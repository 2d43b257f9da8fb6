"""Access to the running sandbox for tests: its env file, a Kubernetes client, and Ansible runs.

Tests use their own sandbox, ``.sandbox-test`` (``make test-sandbox-up``; ``LLMOPS_SANDBOX_DIR`` overrides),
never the demo's ``.sandbox``: the demo's endpoints, GPU capacity and Helm release must not change what a
test sees, and tests must not tear down what a user is exploring. Tests that need it fail (not skip)
when it is not running, so a missing sandbox can never turn into a green run.
"""

import json
import os
import subprocess
import tempfile

import yaml

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def sandbox_dir():
    return os.environ.get("LLMOPS_SANDBOX_DIR", os.path.join(REPO_ROOT, ".sandbox-test"))


def load_env():
    """Return the sandbox env file as a dict; raise with the fix when the sandbox is down."""
    path = os.path.join(sandbox_dir(), "sandbox.env")
    if not os.path.exists(path):
        raise RuntimeError(
            "sandbox env file %s not found: start the tests' sandbox with `make test-sandbox-up`" % path
        )
    env = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, value = line.split("=", 1)
            if key.startswith("export "):
                key = key[len("export "):]
            env[key] = value.strip("'\"")
    return env


def process_env(extra=None):
    """os.environ plus the sandbox env, with the sandbox binaries first on PATH."""
    senv = load_env()
    env = dict(os.environ)
    env.update(senv)
    env["PATH"] = senv.get("SANDBOX_BIN_PATH", "") + os.pathsep + env.get("PATH", "")
    env["ANSIBLE_CONFIG"] = os.path.join(REPO_ROOT, "ansible.cfg")
    # the sandbox inventory and sandbox.py find their sandbox through this variable, not a default
    env["LLMOPS_SANDBOX_DIR"] = sandbox_dir()
    if extra:
        env.update(extra)
    return env


def kubectl(*args, check=True, input_text=None):
    """Run the sandbox's kubectl; return CompletedProcess (text)."""
    env = process_env()
    return subprocess.run(
        [env["SANDBOX_KUBECTL"], *args], env=env, input=input_text, text=True,
        capture_output=True, check=check,
    )


def kubectl_json(*args):
    return json.loads(kubectl(*args, "-o", "json").stdout)


def kube_client():
    """A kubernetes.client.ApiClient for the sandbox."""
    from kubernetes import config

    env = load_env()
    return config.new_client_from_config(config_file=env["KUBECONFIG"])


def run_playbook(playbook, *, inventory=None, extra_vars=None, check=False, diff=False,
                 extra_args=(), env=None, timeout=1800):
    """Run ansible-playbook with the json callback.

    ``playbook`` is a path or a list of plays (dumped to a temp file). Returns a dict with
    ``rc``, ``stdout``, ``stderr``, ``json`` (callback output, or None), and ``stats``.
    """
    tmpdir = tempfile.mkdtemp(prefix="llmops-play-")
    if not isinstance(playbook, str):
        path = os.path.join(tmpdir, "play.yml")
        with open(path, "w", encoding="utf-8") as handle:
            yaml.safe_dump(playbook, handle, sort_keys=False)
        playbook = path
    cmd = [os.path.join(os.path.dirname(_python()), "ansible-playbook"), playbook]
    cmd += ["-i", inventory or "localhost,"]
    if not inventory:
        cmd += ["-c", "local"]
    if extra_vars:
        vars_path = os.path.join(tmpdir, "extra_vars.json")
        with open(vars_path, "w", encoding="utf-8") as handle:
            json.dump(extra_vars, handle)
        cmd += ["-e", "@" + vars_path]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    cmd += list(extra_args)
    penv = process_env({"ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
                        "ANSIBLE_PYTHON_INTERPRETER": _python(),
                        "ANSIBLE_LOCALHOST_WARNING": "False",
                        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False"})
    if env:
        penv.update(env)
    proc = subprocess.run(cmd, env=penv, text=True, capture_output=True, timeout=timeout,
                          cwd=REPO_ROOT, check=False)
    parsed = None
    try:
        parsed = json.loads(proc.stdout)
    except ValueError:
        pass
    return {
        "rc": proc.returncode,
        "stdout": proc.stdout,
        "stderr": proc.stderr,
        "json": parsed,
        "stats": (parsed or {}).get("stats", {}),
    }


def task_results(run, task_name):
    """All host results of the task(s) named ``task_name`` in a run_playbook() result."""
    out = []
    for play in (run["json"] or {}).get("plays", []):
        for task in play.get("tasks", []):
            if task["task"]["name"] == task_name:
                out.extend(task["hosts"].values())
    return out


def total_changed(run):
    return sum(host.get("changed", 0) for host in run["stats"].values())


def _python():
    import sys

    return sys.executable
