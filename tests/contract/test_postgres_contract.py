"""Contract: PostgreSQL runs with the postgres role's settings and LLM Engine connects with its Secret.

The role's render_config entry point writes postgresql.conf, pg_hba.conf, the idempotent init
script/SQL, the credential files and the credentials Secret's data. A fresh cluster from the
Debian package's initdb (initialised the way the role's StatefulSet asks the image to) is brought
up with them; the init script runs in both of its modes (server stopped: init container; server
running: entrypoint), twice; then the Secret's database_url must connect and nothing without the
password may.
"""

import json
import os
import shutil
import subprocess
import tempfile
from urllib.parse import urlsplit

import psycopg
import pytest

from tests.contract.servers import (
    as_user,
    chown_tree,
    failure_messages,
    free_port,
    postgres_bindir,
    run_role,
    server_user,
    wait_for_port,
)

pytestmark = pytest.mark.contract


class PostgresCluster:
    def __init__(self, workdir, bindir, user):
        self.workdir = workdir
        self.bindir = bindir
        self.user, self.uid, self.gid = user
        self.render_dir = os.path.join(workdir, "render")
        self.data_dir = os.path.join(workdir, "data")
        self.socket_dir = os.path.join(workdir, "run")
        self.log_path = os.path.join(workdir, "postgres.log")
        self.port = free_port()

    def role_vars(self, **extra):
        values = {
            "postgres_render_dir": self.render_dir,
            "postgres_render_data_dir": self.data_dir,
            "postgres_render_socket_dir": self.socket_dir,
            "postgres_port": self.port,
            "postgres_listen_addresses": "127.0.0.1",
            "postgres_client_host": "127.0.0.1",
            "postgres_superuser": self.user,
        }
        values.update(extra)
        return values

    def render(self, **extra):
        result = run_role("postgres", "render_config.yml", self.role_vars(**extra))
        chown_tree(self.workdir, self.uid, self.gid)
        return result

    def path(self, *parts):
        return os.path.join(self.render_dir, *parts)

    @property
    def secret(self):
        with open(self.path("secrets", "llm-engine-postgres-credentials.json"), encoding="utf-8") as handle:
            return json.load(handle)

    def run(self, cmd, check=True):
        env = dict(os.environ, PATH=self.bindir + os.pathsep + os.environ["PATH"])
        for key in ("PGPASSWORD", "PGUSER", "PGHOST", "PGPORT", "PGDATABASE", "PGSERVICE"):
            env.pop(key, None)
        proc = subprocess.run(as_user(cmd, self.user), env=env, cwd=self.workdir, text=True,
                              capture_output=True, check=False, timeout=180)
        if check and proc.returncode != 0:
            raise AssertionError("%s failed (rc=%d)\n%s\n%s" % (cmd, proc.returncode, proc.stdout, proc.stderr))
        return proc

    def initdb(self):
        os.makedirs(self.socket_dir, exist_ok=True)
        chown_tree(self.workdir, self.uid, self.gid)
        # what the StatefulSet asks the image's entrypoint for (POSTGRES_INITDB_ARGS, POSTGRES_PASSWORD_FILE)
        self.run([os.path.join(self.bindir, "initdb"), "-D", self.data_dir, "-U", self.user,
                  "--auth-local=peer", "--auth-host=scram-sha-256", "--data-checksums",
                  "--pwfile=" + self.path("superuser", "password")])

    def ensure(self):
        return self.run(["sh", self.path("conf", "ensure-database.sh")])

    def start(self):
        # log_statement=all: the init SQL must keep the password out of the log anyway
        self.run([os.path.join(self.bindir, "pg_ctl"), "-D", self.data_dir, "-w", "-t", "60", "-l", self.log_path,
                  "-o", "-c config_file=%s -c log_statement=all" % self.path("conf", "postgresql.conf"), "start"])
        wait_for_port(self.port, log_path=self.log_path)

    def stop(self):
        if os.path.exists(os.path.join(self.data_dir, "postmaster.pid")):
            self.run([os.path.join(self.bindir, "pg_ctl"), "-D", self.data_dir, "-w", "-m", "fast", "stop"],
                     check=False)

    def superuser_sql(self, sql, database="postgres"):
        """Run SQL as the superuser through the socket (peer authentication)."""
        proc = self.run([os.path.join(self.bindir, "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                         "-h", self.socket_dir, "-p", str(self.port), "-U", self.user, "-d", database, "-c", sql])
        return proc.stdout.strip()

    def log(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()


def connect(url="", **kwargs):
    return psycopg.connect(url, connect_timeout=5, **kwargs)


@pytest.fixture(scope="module")
def cluster():
    bindir = postgres_bindir()
    workdir = tempfile.mkdtemp(prefix="llmops-pg-contract-")
    pg = PostgresCluster(workdir, bindir, server_user())
    pg.first_render = pg.render()
    pg.initdb()
    # init-container mode: the server is down, the script starts a socket-only one and stops it
    pg.ensure_outputs = [pg.ensure()]
    pg.start()
    # entrypoint mode (server up), twice: it must be idempotent
    pg.ensure_outputs += [pg.ensure(), pg.ensure()]
    yield pg
    pg.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def test_database_url_from_the_secret_connects(cluster):
    secret = cluster.secret
    url = urlsplit(secret["database_url"])
    assert url.scheme == "postgresql"
    assert (url.hostname, url.port, url.path) == ("127.0.0.1", cluster.port, "/llm_engine")
    with connect(secret["database_url"]) as conn:
        user, database = conn.execute("SELECT current_user, current_database()").fetchone()
        assert (user, database) == ("llm_engine", "llm_engine")
        # LLM Engine's migrations create their own schemas and tables
        conn.execute("CREATE SCHEMA IF NOT EXISTS hosted_model_inference")
        conn.execute("CREATE TABLE IF NOT EXISTS hosted_model_inference.contract (id int)")
        conn.execute("CREATE TABLE IF NOT EXISTS public.contract (id int)")


def test_secret_holds_all_parts(cluster):
    secret = cluster.secret
    assert secret["username"] == "llm_engine"
    assert secret["database"] == "llm_engine"
    assert secret["host"] == "127.0.0.1"
    assert secret["port"] == str(cluster.port)
    assert len(secret["password"]) == 48 and secret["password"].isalnum()
    with connect(host="127.0.0.1", port=cluster.port, user=secret["username"],
                 password=secret["password"], dbname=secret["database"]) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_no_password_is_refused(cluster):
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        connect("postgresql://llm_engine@127.0.0.1:%d/llm_engine" % cluster.port)


def test_wrong_password_is_refused(cluster):
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect("postgresql://llm_engine:wrong-password@127.0.0.1:%d/llm_engine" % cluster.port)


def test_socket_without_password_is_refused_for_the_app_login(cluster):
    proc = cluster.run([os.path.join(cluster.bindir, "psql"), "-X", "-w", "-h", cluster.socket_dir,
                        "-p", str(cluster.port), "-U", "llm_engine", "-d", "llm_engine", "-c", "SELECT 1"],
                       check=False)
    assert proc.returncode != 0
    assert "no password supplied" in proc.stderr


def test_superuser_cannot_log_in_over_tcp_even_with_its_password(cluster):
    with open(cluster.path("superuser", "password"), encoding="utf-8") as handle:
        password = handle.read()
    with pytest.raises(psycopg.OperationalError, match="rejects connection"):
        connect(host="127.0.0.1", port=cluster.port, user=cluster.user, password=password, dbname="postgres")


def test_password_is_stored_as_scram(cluster):
    stored = cluster.superuser_sql("SELECT rolpassword FROM pg_authid WHERE rolname = 'llm_engine'")
    assert stored.startswith("SCRAM-SHA-256$4096:")
    assert cluster.superuser_sql("SHOW password_encryption") == "scram-sha-256"


def test_app_login_is_not_privileged(cluster):
    row = cluster.superuser_sql(
        "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = 'llm_engine'")
    assert row == "f|f|f"
    assert cluster.superuser_sql(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'llm_engine'") == "llm_engine"
    # PUBLIC may not connect to the LLM Engine database
    assert cluster.superuser_sql(
        "SELECT has_database_privilege('public', 'llm_engine', 'CONNECT')") == "f"


def test_init_script_is_idempotent(cluster):
    assert len(cluster.ensure_outputs) == 3
    for proc in cluster.ensure_outputs:
        assert "login llm_engine and database llm_engine are in place" in proc.stdout
    assert cluster.superuser_sql("SELECT count(*) FROM pg_database WHERE datname = 'llm_engine'") == "1"
    assert cluster.superuser_sql("SELECT count(*) FROM pg_roles WHERE rolname = 'llm_engine'") == "1"


def test_password_never_reaches_the_server_log(cluster):
    log = cluster.log()
    assert "statement:" in log  # log_statement=all is really on
    assert cluster.secret["password"] not in log


def test_probe_command_reports_the_server(cluster):
    with open(cluster.path("probe.json"), encoding="utf-8") as handle:
        probe = json.load(handle)
    assert probe[0] == "pg_isready"
    assert cluster.run(probe, check=False).returncode == 0
    down = [arg if arg != str(cluster.port) else str(free_port()) for arg in probe]
    assert cluster.run(down, check=False).returncode != 0


def test_rerender_keeps_the_passwords(cluster):
    before = cluster.secret
    rerun = cluster.render()
    assert rerun["changed"] == 0
    assert cluster.secret == before


def test_password_rotation_with_special_characters(cluster):
    """A supplied password full of URL delimiters: the URL stays parseable and the init applies it."""
    old_url = cluster.secret["database_url"]
    new_password = "n3w p@ss:w/rd?#%&'\"\\-rotated"
    cluster.render(postgres_password=new_password)
    secret = cluster.secret
    assert secret["password"] == new_password
    assert new_password not in secret["database_url"]
    cluster.ensure()
    with connect(secret["database_url"]) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("llm_engine",)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(old_url)
    assert new_password not in cluster.log()


def test_in_cluster_url_points_at_the_service(tmp_path):
    render_dir = str(tmp_path / "render")
    run_role("postgres", "render_config.yml", {
        "postgres_render_dir": render_dir, "postgres_render_data_dir": str(tmp_path / "data"),
        "postgres_render_socket_dir": str(tmp_path / "run"), "postgres_namespace": "llm-engine",
        "postgres_database_url_key": "uri", "postgres_database_url_params": {"sslmode": "prefer"}})
    with open(os.path.join(render_dir, "secrets", "llm-engine-postgres-credentials.json"), encoding="utf-8") as handle:
        secret = json.load(handle)
    url = urlsplit(secret["uri"])
    assert (url.hostname, url.port, url.path, url.query) == (
        "postgres.llm-engine.svc", 5432, "/llm_engine", "sslmode=prefer")
    assert "database_url" not in secret


@pytest.mark.parametrize("bad_vars, expected", [
    ({"postgres_database": "llm-engine"}, "postgres_database (llm-engine)"),
    ({"postgres_settings": {"hba_file": "/tmp/x"}}, "postgres_settings may not set"),
    ({"postgres_mode": "external"}, "postgres_external_host"),
    ({"postgres_password": "tiny-Pw9"}, "postgres_password is set but is shorter than 16"),
    ({"postgres_hba_allowed_cidrs": ["everyone"]}, "postgres_hba_allowed_cidrs"),
    ({"postgres_port": "fivefour"}, "postgres_port"),
])
def test_bad_input_fails_before_writing(tmp_path, bad_vars, expected):
    render_dir = str(tmp_path / "render")
    result = run_role("postgres", "render_config.yml", dict({
        "postgres_render_dir": render_dir, "postgres_render_data_dir": str(tmp_path / "data"),
        "postgres_render_socket_dir": str(tmp_path / "run")}, **bad_vars), check_rc=False)
    assert result["rc"] != 0
    assert not os.path.exists(render_dir)
    assert expected in " ".join(failure_messages(result))
    if "postgres_password" in bad_vars:
        assert bad_vars["postgres_password"] not in result["stdout"] + result["stderr"]
