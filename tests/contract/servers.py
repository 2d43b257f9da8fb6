"""Helpers for the contract tests: render a role's files through Ansible, find and run real servers.

The contract tests run the roles' own templates and logic (``tasks_from: render_config.yml``) on
localhost and feed the output to real ``redis-server`` / ``postgres`` processes from the Debian
packages. Missing binaries fail the tests with the command that installs them; they never skip.
The sandbox tests run the Redis pod the role declared with the same process handling
(tests/integration/redis_local.py).
"""

import datetime
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
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

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


class RedisProcess:
    """A redis-server running the config file ``conf_path`` (set by the subclass), its output in
    ``<workdir>/redis.log``, ready once it listens on ``port``."""

    conf_path = None

    def __init__(self, workdir, port):
        self.workdir = workdir
        self.port = port
        self.proc = None
        self.log_path = os.path.join(workdir, "redis.log")
        self._log = None

    def start(self, binary):
        self._log = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([binary, self.conf_path], stdout=self._log, stderr=self._log)
        wait_for_port(self.port, proc=self.proc, log_path=self.log_path)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self._log:
            self._log.close()


class RedisServer(RedisProcess):
    """redis-server with what the redis role's render_config.yml wrote into ``<workdir>/render``."""

    def __init__(self, workdir, port, tls=True):
        super().__init__(workdir, port)
        self.render_dir = os.path.join(workdir, "render")
        self.data_dir = os.path.join(workdir, "data")
        self.tls = tls

    def role_vars(self, **extra):
        values = {
            "redis_render_dir": self.render_dir,
            "redis_render_data_dir": self.data_dir,
            "redis_port": self.port,
            "redis_bind": "127.0.0.1",
            "redis_tls_enabled": self.tls,
        }
        values.update(extra)
        return values

    def path(self, *parts):
        return os.path.join(self.render_dir, *parts)

    @property
    def conf_path(self):
        return self.path("conf", "redis.conf")

    @property
    def password(self):
        with open(self.path("secrets", "redis-cluster", "password"), encoding="utf-8") as handle:
            return handle.read()

    def start(self, binary):
        os.makedirs(self.data_dir, exist_ok=True)
        super().start(binary)

    def client(self, password=None, ca=None, host="127.0.0.1", tls=None, **kwargs):
        tls = self.tls if tls is None else tls
        options = {"host": host, "port": self.port, "password": password, "socket_timeout": 5,
                   "socket_connect_timeout": 5}
        if tls:
            options.update({"ssl": True, "ssl_cert_reqs": "required", "ssl_check_hostname": True,
                            "ssl_ca_certs": ca or self.path("tls", "ca.crt")})
        options.update(kwargs)
        return redis.Redis(**options)


def other_ca(path):
    """Write a CA that did not sign the server's certificate to ``path``; return ``path``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not the redis CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    with open(path, "wb") as handle:
        handle.write(cert.public_bytes(serialization.Encoding.PEM))
    return path
