#!/usr/bin/env python
"""The local sandbox cluster: a real Kubernetes control plane and MinIO as plain processes.

    sandbox.py up        build (once) and start everything; idempotent
    sandbox.py down      stop the processes this sandbox started (by pid); --purge drops the data
    sandbox.py status    what runs, on which port, and the cluster's nodes
    sandbox.py env       print the env file (KUBECONFIG, S3 endpoint, ...)

Processes, all on 127.0.0.1 with free ports: etcd, kube-apiserver (RBAC, client-cert auth),
kube-controller-manager, kube-scheduler, kwok (fake nodes from nodes.yaml; pods scheduled onto
them become Running/Ready), a PV provisioner (this file, `provisioner`), MinIO, the LLM Engine
gateway stand-in when present, and `workloads` (workloads.py): in the namespace `llm-engine`, the
Redis and PostgreSQL the roles deploy and the pinned LLM Engine server the chart deploys run as real
local processes. Nothing runs in containers: no kubelet, no container starts.

A sandbox shaped like a guide's cluster (tests/guides), chosen when it is first started:
    LLMOPS_SANDBOX_NODES=sbx-l40-k3s,...   only these nodes of nodes.yaml (default: all of them)
    LLMOPS_SANDBOX_S3_TLS=1                MinIO serves HTTPS with a certificate of a private CA
                                           made for it (SANDBOX_S3_CA_BUNDLE in the env file)
"""

import argparse
import datetime
import glob
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_DIR = os.environ.get("LLMOPS_SANDBOX_DIR", os.path.join(REPO_ROOT, ".sandbox"))
PROVISIONER_NAME = "sandbox.llmops.local/hostpath"
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.0.0.0/16"

# Start order; a component restarts when anything it depends on restarted.
COMPONENTS = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok",
              "provisioner", "minio", "llm-engine-standin", "workloads"]
DEPENDS = {
    "kube-apiserver": ["etcd"],
    "kube-controller-manager": ["kube-apiserver"],
    "kube-scheduler": ["kube-apiserver"],
    "kwok": ["kube-apiserver"],
    "provisioner": ["kube-apiserver"],
    "llm-engine-standin": ["kube-apiserver"],
    "workloads": ["kube-apiserver"],
}
# where the workloads component runs pods as real processes (tests/sandbox/workloads.py): the sandbox
# inventory's control-plane namespace (llmops_namespace)
WORKLOAD_NAMESPACES = os.environ.get("LLMOPS_SANDBOX_WORKLOAD_NAMESPACES", "llm-engine")


def log(msg):
    print("[sandbox] %s" % msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- state & processes

class Sandbox:
    def __init__(self, directory):
        self.dir = os.path.abspath(directory)
        self.state_path = os.path.join(self.dir, "state.json")
        self.state = {"ports": {}, "pids": {}, "cmds": {}}
        if os.path.exists(self.state_path):
            with open(self.state_path, encoding="utf-8") as handle:
                self.state = json.load(handle)

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def save(self):
        os.makedirs(self.dir, exist_ok=True)
        tmp = self.state_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(self.state, handle, indent=2, sort_keys=True)
        os.replace(tmp, self.state_path)

    def port(self, name):
        ports = self.state.setdefault("ports", {})
        if name not in ports or not port_free(ports[name]) and not self.owns_port(name):
            ports[name] = free_port()
        return ports[name]

    def owns_port(self, name):
        """The port is in use by the component we started for it (so keep it)."""
        owner = name.split(":")[0]
        return self.alive(owner)

    def alive(self, name):
        pid = self.state.get("pids", {}).get(name)
        if not pid:
            return False
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as handle:
                cmdline = handle.read().split(b"\0")
        except OSError:
            return False
        expected = self.state.get("cmds", {}).get(name, [])
        return bool(expected) and cmdline[0].decode() == expected[0]

    def start(self, name, cmd, env=None):
        os.makedirs(self.path("logs"), exist_ok=True)
        logfile = open(self.path("logs", name + ".log"), "ab")  # noqa: SIM115 - handed to child
        penv = dict(os.environ)
        penv.update(env or {})
        proc = subprocess.Popen(cmd, stdout=logfile, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=penv, cwd=self.dir, start_new_session=True)
        logfile.close()
        self.state.setdefault("pids", {})[name] = proc.pid
        self.state.setdefault("cmds", {})[name] = cmd
        self.save()
        log("started %s (pid %d)" % (name, proc.pid))
        return proc.pid

    def stop(self, name, timeout=15):
        if not self.alive(name):
            self.state.get("pids", {}).pop(name, None)
            return False
        pid = self.state["pids"][name]
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.time() + timeout
        while time.time() < deadline and self.alive(name):
            time.sleep(0.2)
        if self.alive(name):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.state["pids"].pop(name, None)
        self.save()
        log("stopped %s (pid %d)" % (name, pid))
        return True


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_for(what, check, timeout=180, interval=0.5, logfile=None):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last = exc
        time.sleep(interval)
    tail = ""
    if logfile and os.path.exists(logfile):
        with open(logfile, errors="replace") as handle:
            tail = "".join(handle.readlines()[-30:])
    raise SystemExit("sandbox: %s did not become ready within %ds (last error: %s)\n%s"
                     % (what, timeout, last, tail))


# ----------------------------------------------------------------------------- binaries

def binaries():
    """Build (once) and return the cached binary directories from build.sh."""
    out = subprocess.run(["bash", os.path.join(HERE, "build.sh")], check=True, text=True,
                         stdout=subprocess.PIPE).stdout
    paths = dict(line.split("=", 1) for line in out.strip().splitlines() if "=" in line)
    return {
        "etcd": os.path.join(paths["ETCD_BIN"], "etcd"),
        "kube-apiserver": os.path.join(paths["KUBERNETES_BIN"], "kube-apiserver"),
        "kube-controller-manager": os.path.join(paths["KUBERNETES_BIN"], "kube-controller-manager"),
        "kube-scheduler": os.path.join(paths["KUBERNETES_BIN"], "kube-scheduler"),
        "kubectl": os.path.join(paths["KUBERNETES_BIN"], "kubectl"),
        "kwok": os.path.join(paths["KWOK_BIN"], "kwok"),
        "minio": os.path.join(paths["MINIO_BIN"], "minio"),
        "helm": os.path.join(paths["HELM_BIN"], "helm"),
        "crds": paths.get("CRDS_DIR", ""),
        "bin_path": os.pathsep.join([paths["KUBERNETES_BIN"], paths["HELM_BIN"], paths["KWOK_BIN"],
                                     paths["MINIO_BIN"], paths["ETCD_BIN"]]),
    }


def upstream_venv():
    """tests/sandbox/upstream_venv.py: the pinned LLM Engine server's venv (cached like the binaries)."""
    try:
        from tests.sandbox import upstream_venv as module
    except ImportError:  # run as a script: this directory is on sys.path
        import upstream_venv as module
    return module


# ----------------------------------------------------------------------------- PKI

def ensure_pki(sb):
    """CA, apiserver serving cert, client certs, service-account keys; made once."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    pki = sb.path("pki")
    if os.path.exists(os.path.join(pki, "done")):
        return pki
    os.makedirs(pki, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)

    def write_key(name, key):
        with open(os.path.join(pki, name), "wb") as handle:
            handle.write(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
        os.chmod(os.path.join(pki, name), 0o600)

    def write_cert(name, cert):
        with open(os.path.join(pki, name), "wb") as handle:
            handle.write(cert.public_bytes(serialization.Encoding.PEM))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llmops-sandbox-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    write_key("ca.key", ca_key)
    write_cert("ca.crt", ca)

    def issue(name, common_name, orgs=(), server=False, sans=()):
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in orgs]
        builder = (x509.CertificateBuilder().subject_name(x509.Name(attrs)).issuer_name(ca_name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(days=3650))
                   .add_extension(x509.ExtendedKeyUsage(
                       [ExtendedKeyUsageOID.SERVER_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False))
        if sans:
            entries = []
            for san in sans:
                try:
                    entries.append(x509.IPAddress(ipaddress.ip_address(san)))
                except ValueError:
                    entries.append(x509.DNSName(san))
            builder = builder.add_extension(x509.SubjectAlternativeName(entries), critical=False)
        write_key(name + ".key", key)
        write_cert(name + ".crt", builder.sign(ca_key, hashes.SHA256()))

    first_service_ip = str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))
    issue("apiserver", "kube-apiserver", server=True,
          sans=["127.0.0.1", "localhost", first_service_ip, "kubernetes", "kubernetes.default",
                "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"])
    issue("admin", "sandbox-admin", orgs=["system:masters"])
    issue("controller-manager", "system:kube-controller-manager")
    issue("scheduler", "system:kube-scheduler")
    issue("kwok", "sandbox-kwok", orgs=["system:masters"])
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    write_key("sa.key", sa_key)
    with open(os.path.join(pki, "sa.pub"), "wb") as handle:
        handle.write(sa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo))
    open(os.path.join(pki, "done"), "w").close()
    return pki


def write_kubeconfig(sb, name, user, server):
    import base64

    import yaml

    pki = sb.path("pki")

    def b64(fname):
        with open(os.path.join(pki, fname), "rb") as handle:
            return base64.b64encode(handle.read()).decode()

    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "llmops-sandbox",
        "clusters": [{"name": "llmops-sandbox", "cluster": {
            "server": server, "certificate-authority-data": b64("ca.crt")}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(user + ".crt"),
                                          "client-key-data": b64(user + ".key")}}],
        "contexts": [{"name": "llmops-sandbox", "context": {"cluster": "llmops-sandbox", "user": user}}],
    }
    path = sb.path(name)
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(config, handle)
    os.chmod(path, 0o600)
    return path


# ----------------------------------------------------------------------------- health checks

def https_ok(url, sb):
    ctx = ssl.create_default_context(cafile=sb.path("pki", "ca.crt"))
    ctx.load_cert_chain(sb.path("pki", "admin.crt"), sb.path("pki", "admin.key"))
    with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:  # noqa: S310 - local sandbox URL
        return resp.status == 200


def http_ok(url, cafile=None):
    ctx = ssl.create_default_context(cafile=cafile) if cafile else None
    with urllib.request.urlopen(url, timeout=5, context=ctx) as resp:  # noqa: S310 - local sandbox URL
        return resp.status == 200


# ----------------------------------------------------------------------------- up

def component_cmds(sb, bins):
    pki = sb.path("pki")
    p = sb.port
    etcd_url = "http://127.0.0.1:%d" % p("etcd:client")
    api_url = "https://127.0.0.1:%d" % p("kube-apiserver")
    cmds = {
        "etcd": [bins["etcd"], "--name=sandbox", "--data-dir=" + sb.path("etcd"),
                 "--listen-client-urls=" + etcd_url, "--advertise-client-urls=" + etcd_url,
                 "--listen-peer-urls=http://127.0.0.1:%d" % p("etcd:peer"),
                 "--initial-advertise-peer-urls=http://127.0.0.1:%d" % p("etcd:peer"),
                 "--initial-cluster=sandbox=http://127.0.0.1:%d" % p("etcd:peer"),
                 "--listen-metrics-urls=http://127.0.0.1:%d" % p("etcd:metrics"),
                 "--quota-backend-bytes=4294967296", "--log-level=warn"],
        "kube-apiserver": [
            bins["kube-apiserver"], "--etcd-servers=" + etcd_url,
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            "--secure-port=%d" % p("kube-apiserver"),
            "--tls-cert-file=%s/apiserver.crt" % pki, "--tls-private-key-file=%s/apiserver.key" % pki,
            "--client-ca-file=%s/ca.crt" % pki,
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file=%s/sa.pub" % pki,
            "--service-account-signing-key-file=%s/sa.key" % pki,
            "--service-cluster-ip-range=" + SERVICE_CIDR,
            "--authorization-mode=Node,RBAC", "--allow-privileged=true",
            # a loopback address cannot be published in the kubernetes Endpoints object
            "--endpoint-reconciler-type=none", "--profiling=false", "--v=1"],
        "kube-controller-manager": [
            bins["kube-controller-manager"], "--kubeconfig=" + sb.path("controller-manager.kubeconfig"),
            "--authentication-kubeconfig=" + sb.path("controller-manager.kubeconfig"),
            "--authorization-kubeconfig=" + sb.path("controller-manager.kubeconfig"),
            "--bind-address=127.0.0.1", "--secure-port=%d" % p("kube-controller-manager"),
            "--leader-elect=false", "--use-service-account-credentials=true",
            "--service-account-private-key-file=%s/sa.key" % pki, "--root-ca-file=%s/ca.crt" % pki,
            "--cluster-signing-cert-file=%s/ca.crt" % pki, "--cluster-signing-key-file=%s/ca.key" % pki,
            "--controllers=*,-nodeipam,-cloud-node-lifecycle", "--profiling=false", "--v=1",
            # kwok renews node leases from one process; on a loaded 2-core machine it can fall behind
            # the default 40s, and NotReady nodes would mark every pod on them NotReady for good.
            "--node-monitor-grace-period=300s"],
        "kube-scheduler": [
            bins["kube-scheduler"], "--kubeconfig=" + sb.path("scheduler.kubeconfig"),
            "--authentication-kubeconfig=" + sb.path("scheduler.kubeconfig"),
            "--authorization-kubeconfig=" + sb.path("scheduler.kubeconfig"),
            "--bind-address=127.0.0.1", "--secure-port=%d" % p("kube-scheduler"),
            "--leader-elect=false", "--profiling=false", "--v=1"],
        "kwok": [
            bins["kwok"], "--kubeconfig=" + sb.path("kwok.kubeconfig"),
            "--config=" + ",".join(sorted(glob.glob(os.path.join(HERE, "kwok-stages", "*.yaml")))),
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--cidr=" + POD_CIDR, "--node-ip=10.255.0.1",
            "--server-address=127.0.0.1:%d" % p("kwok"), "--node-lease-duration-seconds=40"],
        "provisioner": [sys.executable, os.path.abspath(__file__), "--dir", sb.dir, "provisioner"],
        "minio": [bins["minio"], "server", sb.path("minio-data"), "--quiet",
                  "--address=127.0.0.1:%d" % p("minio"),
                  "--console-address=127.0.0.1:%d" % p("minio:console")],
    }
    if s3_tls(sb):
        cmds["minio"].append("--certs-dir=" + ensure_s3_pki(sb)[0])
    cmds["workloads"] = [
        sys.executable, os.path.join(HERE, "workloads.py"), "--dir", sb.dir, "run",
        "--kubeconfig", sb.path("admin.kubeconfig"), "--helm", bins["helm"],
        "--gateway-port", str(p("workloads:gateway")), "--namespaces", WORKLOAD_NAMESPACES]
    standin = os.path.join(HERE, "llm_engine_standin.py")
    if os.path.exists(standin):
        cmds["llm-engine-standin"] = [
            sys.executable, standin, "--host", "127.0.0.1", "--port", str(p("llm-engine-standin")),
            "--kubeconfig", sb.path("admin.kubeconfig"), "--namespace", "llm-engine"]
    return cmds, api_url


def selected_nodes(sb):
    """The Node objects of this sandbox: nodes.yaml, or the ones LLMOPS_SANDBOX_NODES names.

    The choice is kept in the state on the first `up`; a later `up` with another choice fails with
    the fix instead of leaving a cluster whose nodes differ from what its tests read.
    """
    import yaml

    with open(os.path.join(HERE, "nodes.yaml"), encoding="utf-8") as handle:
        items = yaml.safe_load(handle)["items"]
    wanted = [name for name in os.environ.get("LLMOPS_SANDBOX_NODES", "").replace(" ", "").split(",") if name]
    known = [item["metadata"]["name"] for item in items]
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        raise SystemExit("sandbox: LLMOPS_SANDBOX_NODES names %s, not in tests/sandbox/nodes.yaml; choose from %s"
                         % (", ".join(unknown), ", ".join(known)))
    chosen = wanted or known
    before = sb.state.get("nodes")
    if before and before != chosen:
        raise SystemExit("sandbox in %s was started with nodes %s, not %s: purge it first (sandbox.py down --purge)"
                         % (sb.dir, ",".join(before), ",".join(chosen)))
    sb.state["nodes"] = chosen
    return [item for item in items if item["metadata"]["name"] in chosen]


def s3_tls(sb):
    """Whether MinIO serves HTTPS (LLMOPS_SANDBOX_S3_TLS=1 on the first `up`; kept in the state)."""
    if "s3_tls" not in sb.state:
        sb.state["s3_tls"] = os.environ.get("LLMOPS_SANDBOX_S3_TLS", "") in ("1", "true", "yes")
    return sb.state["s3_tls"]


def ensure_s3_pki(sb):
    """A private CA of its own for MinIO (not the cluster's CA) and MinIO's serving certificate.

    MinIO reads public.crt and private.key from its --certs-dir and then serves only HTTPS.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    certs = sb.path("s3-pki", "certs")
    ca_path = sb.path("s3-pki", "ca.crt")
    if os.path.exists(os.path.join(certs, "public.crt")):
        return certs, ca_path
    os.makedirs(certs, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llmops-sandbox-s3-private-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "minio")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    with open(os.path.join(certs, "private.key"), "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    os.chmod(os.path.join(certs, "private.key"), 0o600)
    with open(os.path.join(certs, "public.crt"), "wb") as handle:
        handle.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(ca_path, "wb") as handle:
        handle.write(ca.public_bytes(serialization.Encoding.PEM))
    return certs, ca_path


def s3_endpoint(sb):
    return "%s://127.0.0.1:%d" % ("https" if s3_tls(sb) else "http", sb.port("minio"))


def minio_credentials(sb):
    path = sb.path("minio-credentials.json")
    if not os.path.exists(path):
        creds = {"access_key": "sandbox-" + secrets.token_hex(4), "secret_key": secrets.token_urlsafe(24)}
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(creds, handle)
        os.chmod(path, 0o600)
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def up(sb):
    t0 = time.time()
    bins = binaries()
    try:
        upstream_venv().build()
    except (SystemExit, subprocess.CalledProcessError) as exc:
        # the workloads component then reports the LLM Engine pods as "cannot start" with this reason
        log("the LLM Engine server venv is not available (%s): its pods stay simulated; `make upstream "
            "sandbox-build` builds it" % exc)
    os.makedirs(sb.dir, exist_ok=True)
    ensure_pki(sb)
    creds = minio_credentials(sb)
    cmds, api_url = component_cmds(sb, bins)
    for name, user in [("admin.kubeconfig", "admin"), ("controller-manager.kubeconfig", "controller-manager"),
                       ("scheduler.kubeconfig", "scheduler"), ("kwok.kubeconfig", "kwok")]:
        write_kubeconfig(sb, name, user, api_url)

    env_extra = {"minio": {"MINIO_ROOT_USER": creds["access_key"], "MINIO_ROOT_PASSWORD": creds["secret_key"],
                           "MINIO_BROWSER": "off", "MINIO_UPDATE": "off"}}
    checks = {
        "etcd": lambda: http_ok("http://127.0.0.1:%d/health" % sb.port("etcd:client")),
        "kube-apiserver": lambda: https_ok(api_url + "/readyz", sb),
        "minio": lambda: http_ok(s3_endpoint(sb) + "/minio/health/live",
                                 cafile=ensure_s3_pki(sb)[1] if s3_tls(sb) else None),
        "llm-engine-standin": lambda: http_ok("http://127.0.0.1:%d/healthz" % sb.port("llm-engine-standin")),
    }
    restarted = set()
    for name in COMPONENTS:
        if name not in cmds:
            continue
        needs = any(dep in restarted for dep in DEPENDS.get(name, []))
        same_cmd = sb.state.get("cmds", {}).get(name) == cmds[name]
        if sb.alive(name) and same_cmd and not needs:
            continue
        sb.stop(name)
        sb.start(name, cmds[name], env_extra.get(name))
        restarted.add(name)
        if name in checks:
            wait_for(name, checks[name], logfile=sb.path("logs", name + ".log"))
        if name == "kube-apiserver":
            bootstrap_cluster(sb, bins)

    write_env(sb, bins, api_url, creds)
    wait_cluster_ready(sb, bins)
    sb.save()
    log("up in %.1fs; env file: %s" % (time.time() - t0, sb.path("sandbox.env")))


def kubectl(sb, bins, *args, input_text=None, check=True):
    return subprocess.run([bins["kubectl"], "--kubeconfig", sb.path("admin.kubeconfig"), *args],
                          input=input_text, text=True, capture_output=True, check=check)


def bootstrap_cluster(sb, bins):
    """Objects every sandbox has: the fake nodes (all, or the chosen ones), storage classes."""
    # JSON, not YAML: kubectl would read a label value such as 08 back as a number
    nodes = json.dumps({"apiVersion": "v1", "kind": "List", "items": selected_nodes(sb)})
    for path, text in (("nodes.yaml", nodes), (os.path.join(HERE, "storage.yaml"), None)):
        args = ("create", "-f", "-") if text else ("create", "-f", path)
        res = kubectl(sb, bins, *args, input_text=text, check=False)
        if res.returncode != 0 and "AlreadyExists" not in res.stderr:
            raise SystemExit("sandbox: creating objects from %s failed:\n%s" % (path, res.stderr))


def wait_cluster_ready(sb, bins):
    names = [doc["metadata"]["name"] for doc in selected_nodes(sb)]

    def nodes_ready():
        out = json.loads(kubectl(sb, bins, "get", "nodes", "-o", "json").stdout)
        ready = {n["metadata"]["name"] for n in out["items"]
                 if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))}
        return set(names) <= ready

    def default_sa():
        return kubectl(sb, bins, "get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0

    wait_for("fake nodes Ready (kwok)", nodes_ready, logfile=sb.path("logs", "kwok.log"))
    wait_for("default service account (controller-manager)", default_sa,
             logfile=sb.path("logs", "kube-controller-manager.log"))


def write_env(sb, bins, api_url, creds):
    values = {
        "SANDBOX_DIR": sb.dir,
        "KUBECONFIG": sb.path("admin.kubeconfig"),
        "K8S_AUTH_KUBECONFIG": sb.path("admin.kubeconfig"),
        "SANDBOX_API_SERVER": api_url,
        "SANDBOX_KUBECTL": bins["kubectl"],
        "SANDBOX_HELM": bins["helm"],
        "SANDBOX_BIN_PATH": bins["bin_path"],
        "SANDBOX_CRDS_DIR": bins["crds"],
        "SANDBOX_S3_ENDPOINT": s3_endpoint(sb),
        "SANDBOX_S3_ACCESS_KEY": creds["access_key"],
        "SANDBOX_S3_SECRET_KEY": creds["secret_key"],
        "SANDBOX_S3_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": creds["access_key"],
        "AWS_SECRET_ACCESS_KEY": creds["secret_key"],
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    if s3_tls(sb):
        values["SANDBOX_S3_CA_BUNDLE"] = ensure_s3_pki(sb)[1]
    # the real gateway (workloads.py) answers here once the model_engine role installed the chart in
    # llm-engine: `workloads.py --dir <sandbox> wait-gateway` waits for it
    values["SANDBOX_LLM_ENGINE_GATEWAY_URL"] = "http://127.0.0.1:%d" % sb.port("workloads:gateway")
    if "llm-engine-standin" in sb.state.get("pids", {}):
        values["SANDBOX_LLM_ENGINE_URL"] = "http://127.0.0.1:%d" % sb.port("llm-engine-standin")
        values["SANDBOX_LLM_ENGINE_USER"] = "sandbox-user"
    path = sb.path("sandbox.env")
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        handle.write("# written by tests/sandbox/sandbox.py up; source it or read it as KEY=VALUE\n")
        for key, value in values.items():
            handle.write("%s=%s\n" % (key, value))
    os.chmod(path + ".tmp", 0o600)
    os.replace(path + ".tmp", path)


# ----------------------------------------------------------------------------- down / status

def down(sb, purge=False):
    for name in reversed(COMPONENTS):
        sb.stop(name)
    if os.path.exists(sb.path("sandbox.env")):
        os.remove(sb.path("sandbox.env"))
    if purge and os.path.isdir(sb.dir):
        shutil.rmtree(sb.dir)
        log("removed %s" % sb.dir)


def status(sb):
    running = 0
    for name in COMPONENTS:
        ports = {k: v for k, v in sb.state.get("ports", {}).items() if k.split(":")[0] == name}
        state = "running" if sb.alive(name) else "stopped"
        running += state == "running"
        pid = sb.state.get("pids", {}).get(name, "-")
        port_list = ",".join("%s" % v for v in ports.values()) or "-"
        print("%-26s %-8s pid=%-8s ports=%s" % (name, state, pid, port_list))
    if sb.alive("kube-apiserver"):
        bins = binaries()
        print(kubectl(sb, bins, "get", "nodes", "-L", "nvidia.com/gpu.product",
                      "-L", "k8s.amazonaws.com/accelerator", check=False).stdout)
    return 0 if running else 3


# ----------------------------------------------------------------------------- PV provisioner

def provisioner(sb, interval=1.0):
    """Out-of-cluster dynamic provisioner: makes a hostPath PV for each claim of our classes.

    The real PV controller then binds claim and volume. Claims of a WaitForFirstConsumer class
    wait for the scheduler's selected-node annotation, and get a PV pinned to that node.
    """
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(config_file=sb.path("admin.kubeconfig")))
    storage = client.StorageV1Api(api.api_client)
    while True:
        try:
            classes = {sc.metadata.name: sc for sc in storage.list_storage_class().items
                       if sc.provisioner == PROVISIONER_NAME}
            pvs = api.list_persistent_volume().items
            by_claim = {(pv.spec.claim_ref.namespace, pv.spec.claim_ref.name)
                        for pv in pvs if pv.spec.claim_ref}
            for pvc in api.list_persistent_volume_claim_for_all_namespaces().items:
                sc = classes.get(pvc.spec.storage_class_name or "")
                if sc is None or pvc.status.phase != "Pending" or pvc.spec.volume_name:
                    continue
                if (pvc.metadata.namespace, pvc.metadata.name) in by_claim:
                    continue
                annotations = pvc.metadata.annotations or {}
                node = annotations.get("volume.kubernetes.io/selected-node")
                if sc.volume_binding_mode == "WaitForFirstConsumer" and not node:
                    continue
                api.create_persistent_volume(_pv_for(client, pvc, sc, node))
            for pv in pvs:
                provisioned = (pv.metadata.annotations or {}).get("pv.kubernetes.io/provisioned-by")
                if (provisioned == PROVISIONER_NAME and pv.status.phase == "Released"
                        and pv.spec.persistent_volume_reclaim_policy == "Delete"):
                    api.delete_persistent_volume(pv.metadata.name)
        except Exception as exc:  # noqa: BLE001 - keep serving; the API may be restarting
            log("provisioner: %s" % exc)
        time.sleep(interval)


def _pv_for(client, pvc, sc, node):
    name = "pvc-%s" % pvc.metadata.uid
    affinity = None
    if node:
        affinity = client.V1VolumeNodeAffinity(required=client.V1NodeSelector(node_selector_terms=[
            client.V1NodeSelectorTerm(match_expressions=[client.V1NodeSelectorRequirement(
                key="kubernetes.io/hostname", operator="In", values=[node])])]))
    return client.V1PersistentVolume(
        metadata=client.V1ObjectMeta(name=name, annotations={"pv.kubernetes.io/provisioned-by": PROVISIONER_NAME}),
        spec=client.V1PersistentVolumeSpec(
            capacity={"storage": pvc.spec.resources.requests["storage"]},
            access_modes=pvc.spec.access_modes,
            persistent_volume_reclaim_policy=sc.reclaim_policy or "Delete",
            storage_class_name=sc.metadata.name,
            volume_mode=pvc.spec.volume_mode or "Filesystem",
            host_path=client.V1HostPathVolumeSource(path="/var/lib/llmops-sandbox/%s" % name,
                                                    type="DirectoryOrCreate"),
            claim_ref=client.V1ObjectReference(namespace=pvc.metadata.namespace, name=pvc.metadata.name,
                                               uid=pvc.metadata.uid, kind="PersistentVolumeClaim",
                                               api_version="v1"),
            node_affinity=affinity))


# ----------------------------------------------------------------------------- main

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default=DEFAULT_DIR, help="state directory (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up")
    down_p = sub.add_parser("down")
    down_p.add_argument("--purge", action="store_true", help="also delete the cluster's data")
    sub.add_parser("status")
    sub.add_parser("env")
    sub.add_parser("build")
    sub.add_parser("provisioner")
    args = parser.parse_args(argv)
    sb = Sandbox(args.dir)
    if args.command == "up":
        up(sb)
    elif args.command == "down":
        down(sb, purge=args.purge)
    elif args.command == "status":
        return status(sb)
    elif args.command == "env":
        path = sb.path("sandbox.env")
        if not os.path.exists(path):
            print("sandbox is not up: run `make sandbox-up`", file=sys.stderr)
            return 1
        with open(path, encoding="utf-8") as handle:
            sys.stdout.write(handle.read())
    elif args.command == "build":
        binaries()
        upstream_venv().build()
    elif args.command == "provisioner":
        provisioner(sb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
