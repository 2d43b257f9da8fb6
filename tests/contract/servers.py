"""Helpers for the contract tests: render a role's files through Ansible, find and run real servers.

The contract tests run the roles' own templates and logic (``tasks_from: render_config.yml``) on
localhost and feed the output to real ``redis-server`` / ``postgres`` processes from the Debian
packages. Missing binaries fail the tests with the command that installs them; they never skip.
"""

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INSTALL_HINT = "install the test packages with `make deps-system` (apt-get install redis-server postgresql)"


def require_binary(name, candidates=()):
    """Absolute path of ``name``; fail the test (not skip) with the fix when it is missing."""
    for path in list(candidates) + [shutil.which(name)]:
        if path and os.access(path, os.X_OK):
            return path
    pytest.fail("%s not found on this machine: %s" % (name, INSTALL_HINT), pytrace=False)
    return None  # unreachable


def postgres_bindir():
    """Directory with initdb/pg_ctl/postgres/psql of the newest installed PostgreSQL (14+)."""
    found = []
    for initdb in glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        version = os.path.basename(os.path.dirname(os.path.dirname(initdb)))
        if version.isdigit() and int(version) >= 14:
            found.append((int(version), os.path.dirname(initdb)))
    if found:
        return max(found)[1]
    initdb = shutil.which("initdb")
    if initdb:
        return os.path.dirname(os.path.realpath(initdb))
    pytest.fail("PostgreSQL 14+ server binaries (initdb, pg_ctl, postgres) not found: %s" % INSTALL_HINT,
                pytrace=False)
    return None


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port, timeout=30.0, proc=None, log_path=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    log = ""
    if log_path and os.path.exists(log_path):
        with open(log_path, encoding="utf-8", errors="replace") as handle:
            log = handle.read()[-4000:]
    raise AssertionError("server did not listen on 127.0.0.1:%d within %ss\n%s" % (port, timeout, log))


def run_role(role, tasks_from, role_vars, check_rc=True):
    """Run ``include_role: llmops.serving.<role>`` with ``tasks_from`` on localhost.

    Returns {"rc", "stdout", "stderr", "json", "changed"}; with ``check_rc`` a failure raises with
    the failing task's message.
    """
    workdir = tempfile.mkdtemp(prefix="llmops-contract-")
    play = [{
        "name": "Render %s" % role,
        "hosts": "localhost",
        "gather_facts": False,
        "tasks": [{
            "name": "Run the role entry point",
            "ansible.builtin.include_role": {"name": "llmops.serving.%s" % role, "tasks_from": tasks_from},
        }],
    }]
    playbook = os.path.join(workdir, "play.yml")
    vars_file = os.path.join(workdir, "vars.json")
    with open(playbook, "w", encoding="utf-8") as handle:
        json.dump(play, handle)
    with open(vars_file, "w", encoding="utf-8") as handle:
        json.dump(role_vars, handle)
    env = dict(os.environ)
    env.update({
        "ANSIBLE_CONFIG": os.path.join(REPO_ROOT, "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
    })
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), playbook,
           "-i", "localhost,", "-c", "local", "-e", "@" + vars_file]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, text=True, capture_output=True, timeout=600, check=False)
    shutil.rmtree(workdir, ignore_errors=True)
    try:
        parsed = json.loads(proc.stdout)
    except ValueError:
        parsed = None
    stats = (parsed or {}).get("stats", {})
    result = {
        "rc": proc.returncode,
        "stdout": proc.stdout,
        "stderr": proc.stderr,
        "json": parsed,
        "changed": sum(host.get("changed", 0) for host in stats.values()),
    }
    if check_rc and proc.returncode != 0:
        raise AssertionError("%s/%s failed (rc=%d): %s\n%s" % (
            role, tasks_from, proc.returncode, failure_messages(result), proc.stderr[-2000:]))
    return result


def failure_messages(result):
    """The ``msg`` of every failed task in a run_role() result."""
    messages = []
    for play in (result["json"] or {}).get("plays", []):
        for task in play.get("tasks", []):
            for host in task["hosts"].values():
                if host.get("failed"):
                    messages.append(str(host.get("msg", "")))
    return messages


def server_user():
    """(name, uid, gid) the database server runs as: `postgres` when we are root, else ourselves."""
    if os.geteuid() == 0:
        try:
            entry = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root but there is no `postgres` user to run the server: %s" % INSTALL_HINT,
                        pytrace=False)
        return entry.pw_name, entry.pw_uid, entry.pw_gid
    entry = pwd.getpwuid(os.geteuid())
    return entry.pw_name, entry.pw_uid, entry.pw_gid


def as_user(cmd, user):
    """Prefix ``cmd`` so it runs as ``user`` (runuser when we are root and user is not us)."""
    if os.geteuid() == 0 and user != "root":
        return ["runuser", "-u", user, "--"] + list(cmd)
    return list(cmd)


def chown_tree(path, uid, gid):
    for root, dirs, files in os.walk(path):
        os.chown(root, uid, gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)
