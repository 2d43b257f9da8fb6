"""Helpers for the S3 staging integration tests and benchmarks: module runs, bucket snapshots, and a
throwaway MinIO server (own port, own data dir) that tests may pause and kill without touching the
sandbox's shared MinIO."""

import datetime
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

from tests.helpers.sandbox import REPO_ROOT, process_env, run_playbook, task_results

MODULE = "llmops.serving.s3_model_stage"
STAGE_TASK = "stage"
THROWAWAY_USER = "llmops-it"
THROWAWAY_PASSWORD = "llmops-it-secret-key"


def sandbox_s3(env):
    """Connection options of the sandbox MinIO from its env file."""
    return {
        "endpoint_url": env["SANDBOX_S3_ENDPOINT"],
        "access_key": env["SANDBOX_S3_ACCESS_KEY"],
        "secret_key": env["SANDBOX_S3_SECRET_KEY"],
        "region": env.get("SANDBOX_S3_REGION") or "us-east-1",
    }


def client_for(conn, concurrency=4):
    from ansible_collections.llmops.serving.plugins.module_utils.s3 import build_s3_client

    params = {"endpoint_url": conn["endpoint_url"], "access_key": conn["access_key"],
              "secret_key": conn["secret_key"], "region": conn.get("region"), "session_token": None,
              "ca_bundle": conn.get("ca_bundle"), "validate_certs": conn.get("validate_certs", True),
              "addressing_style": "auto"}
    return build_s3_client(params, concurrency)


def unique_bucket(tag):
    return "it-s3-%s-%s" % (tag, uuid.uuid4().hex[:8])


def snapshot(client, bucket, prefix=""):
    """key -> (size, etag, last_modified) for every object: equal snapshots mean nothing was written."""
    out = {}
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []) or []:
            out[obj["Key"]] = (obj["Size"], obj["ETag"], obj["LastModified"].isoformat())
    return out


def delete_bucket(client, bucket):
    """Remove a bucket with everything in it, including unfinished multipart uploads."""
    try:
        paginator = client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=bucket):
            for up in page.get("Uploads", []) or []:
                client.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", []) or []]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        client.delete_bucket(Bucket=bucket)
    except Exception as exc:  # noqa: BLE001 - cleanup must not hide the test's own result
        code = getattr(exc, "response", {}).get("Error", {}).get("Code")
        if code != "NoSuchBucket":
            print("cleanup of bucket %s failed: %s" % (bucket, exc), file=sys.stderr)


def stage_play(args, name=STAGE_TASK):
    return [{"name": "s3 model staging", "hosts": "localhost", "gather_facts": False,
             "tasks": [{"name": name, MODULE: args, "register": "staged"}]}]


def run_stage(conn, check=False, diff=False, **args):
    """Run the module once through ansible-playbook; return its result."""
    return run_stage_full(conn, check=check, diff=diff, **args)[0]


def run_stage_full(conn, check=False, diff=False, **args):
    """Run the module once through ansible-playbook; return (module result, run)."""
    module_args = dict(conn)
    module_args.update(args)
    run = run_playbook(stage_play(module_args), check=check, diff=diff)
    results = task_results(run, STAGE_TASK)
    assert results, "no result for the staging task: rc=%s\n%s\n%s" % (
        run["rc"], run["stdout"][-3000:], run["stderr"][-3000:])
    return results[0], run


def start_stage(conn, **args):
    """Start a module run in the background (for interrupting it); returns the Popen."""
    import json

    module_args = dict(conn)
    module_args.update(args)
    tmpdir = tempfile.mkdtemp(prefix="llmops-s3-play-")
    play = os.path.join(tmpdir, "play.yml")
    import yaml

    with open(play, "w", encoding="utf-8") as handle:
        yaml.safe_dump(stage_play(module_args), handle, sort_keys=False)
    env = process_env({"ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
                       "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
                       "ANSIBLE_LOCALHOST_WARNING": "False",
                       "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False"})
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), play, "-i", "localhost,",
           "-c", "local"]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    proc.parse_json = json.loads
    return proc


# ---- throwaway MinIO ---------------------------------------------------------------------------

def minio_binary():
    """Path of the MinIO binary built by tests/sandbox/build.sh (fails with the fix when missing)."""
    out = subprocess.run(["bash", os.path.join(REPO_ROOT, "tests", "sandbox", "build.sh"), "--paths"],
                         capture_output=True, text=True, check=True).stdout
    paths = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    binary = os.path.join(paths["MINIO_BIN"], "minio")
    if not os.access(binary, os.X_OK):
        raise RuntimeError("MinIO binary %s missing: run `bash tests/sandbox/build.sh minio`" % binary)
    return binary


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_self_signed_cert(directory):
    """Write public.crt/private.key (MinIO's names) for 127.0.0.1 into ``directory``; return the cert path."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llmops-it-minio")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    os.makedirs(directory, exist_ok=True)
    cert_path = os.path.join(directory, "public.crt")
    with open(cert_path, "wb") as handle:
        handle.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(os.path.join(directory, "private.key"), "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return cert_path


class ThrowawayMinio:
    """A MinIO server on a free 127.0.0.1 port with its own data dir, for fault injection."""

    def __init__(self, workdir, tls=False):
        self.workdir = workdir
        self.data_dir = os.path.join(workdir, "data")
        self.certs_dir = os.path.join(workdir, "certs")
        self.port = free_port()
        self.console_port = free_port()
        self.tls = tls
        self.ca_cert = make_self_signed_cert(self.certs_dir) if tls else None
        self.proc = None
        self.log_path = os.path.join(workdir, "minio.log")

    @property
    def endpoint(self):
        return "%s://127.0.0.1:%d" % ("https" if self.tls else "http", self.port)

    def conn(self, **extra):
        conn = {"endpoint_url": self.endpoint, "access_key": THROWAWAY_USER, "secret_key": THROWAWAY_PASSWORD,
                "region": "us-east-1"}
        conn.update(extra)
        return conn

    def start(self, timeout=60):
        os.makedirs(self.data_dir, exist_ok=True)
        env = dict(os.environ, MINIO_ROOT_USER=THROWAWAY_USER, MINIO_ROOT_PASSWORD=THROWAWAY_PASSWORD,
                   MINIO_BROWSER="off", MINIO_UPDATE="off")
        cmd = [minio_binary(), "server", "--quiet", "--address", "127.0.0.1:%d" % self.port,
               "--console-address", "127.0.0.1:%d" % self.console_port, "--certs-dir", self.certs_dir,
               self.data_dir]
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the server's lifetime
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.time() + timeout
        url = "http://127.0.0.1:%d/minio/health/live" % self.port
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("MinIO exited: %s" % self.log_tail())
            try:
                if self.tls:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                        pass
                    client = client_for(self.conn(ca_bundle=self.ca_cert))
                    client.list_buckets()
                    return self
                with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback only
                    if resp.status == 200:
                        return self
            except Exception:  # noqa: BLE001,S110 - not up yet
                pass
            time.sleep(0.2)
        raise RuntimeError("MinIO did not become ready on port %d: %s" % (self.port, self.log_tail()))

    def log_tail(self):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                return handle.read()[-2000:]
        except OSError:
            return ""

    def pause(self):
        os.kill(self.proc.pid, signal.SIGSTOP)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def destroy(self):
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
