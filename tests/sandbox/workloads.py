#!/usr/bin/env python
"""The sandbox's kubelet for the workloads whose programs can run here: real local processes.

kwok marks every pod Running, but no container starts. For the images this file knows (`IMAGES`:
Redis, PostgreSQL, the LLM Engine server), `workloads.py run` (the sandbox component
`workloads`) watches the cluster and runs each matching Deployment or StatefulSet the way a kubelet
would run its pod, as a local process:

- the program: the container's `command`/`args` as rendered on the cluster, run by the local
  equivalent of the image (Debian `redis-server`/`postgres`, the pinned server's venv from
  `upstream_venv.py` with `/workspace/model-engine` laid out from the upstream checkout); init
  wrappers (`dumb-init --`) are dropped;
- its files: every ConfigMap, Secret and emptyDir/PVC volume written to a directory under
  `<sandbox>/workloads/<namespace>/<name>/root/<mountPath>`, and container paths in the
  command, the env and the files that name them rewritten to those directories;
- its env: `value`, `secretKeyRef`, `configMapKeyRef`, `fieldRef` resolved from the cluster;
- the Services it names: each Service gets a loopback address of this sandbox
  (`127.<n>.<c>.<d>` for ClusterIP `x.y.<c>.<d>`; `n` from the sandbox directory, so the demo's
  and the tests' sandboxes never meet), servers listen there on the Service's port, and the LLM
  Engine processes run in a private mount namespace (`unshare --mount`, root or unprivileged user
  namespaces) whose `/etc/hosts` maps every Service's DNS names to those addresses. This stands in
  for cluster DNS and kube-proxy; every resolver (glibc, libpq, uvloop) sees it.

What changes from the rendered pod, and why (nothing else does):
- the gateway runs `start_fastapi_server --port <free port> --num-workers 1`: its default binds
  [::]:5000 with 4 workers (start_fastapi_server.py:17-31), which two sandboxes on one machine
  cannot share and two cores cannot afford;
- no `KUBERNETES_SERVICE_HOST`: the server falls back to `KUBECONFIG` (the sandbox's admin
  kubeconfig), as `maybe_load_kube_config` does outside a pod;
- the image's env (`WORKSPACE`, `PYTHONPATH`, model-engine Dockerfile lines 68-70) points at the
  local workspace;
- the chart's pre-install/pre-upgrade migration Job is deleted by Helm once kwok marks it
  Succeeded, so it is read from the Helm release record in the cluster (`helm get hooks`) and run
  before the server's Deployments of that revision start.

`workloads.py status` prints what runs (also `<sandbox>/workloads/status.json`); a process that
exits is restarted with a back-off, like CrashLoopBackOff, and its last error is in the status.
"""

import argparse
import base64
import datetime
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import zlib
from urllib.parse import quote

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

# image (last path element, without tag) -> kind of local program
IMAGES = {"redis": "redis", "postgres": "postgres", "model-engine": "model-engine"}
INIT_WRAPPERS = ("dumb-init", "tini")
# a kubelet's CrashLoopBackOff: 10 s, doubled per restart, at most 5 minutes
CRASH_BACKOFF_FIRST = 10
CRASH_BACKOFF_MAX = 300


def log(msg):
    print("[workloads] %s" % msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- pure decisions

def image_kind(image):
    """'registry/x/model-engine:tag' -> 'model-engine' when the sandbox can run it, else None."""
    name = image.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0]
    return IMAGES.get(name)


def loopback_for(cluster_ip, sandbox_dir):
    """The loopback address that stands for a Service's ClusterIP in this sandbox."""
    if not cluster_ip or cluster_ip == "None" or ":" in cluster_ip:
        return None
    octets = cluster_ip.split(".")
    second = 100 + zlib.crc32(os.path.abspath(sandbox_dir).encode()) % 100
    return "127.%d.%s.%s" % (second, octets[2], octets[3])


def service_names(name, namespace, domain="cluster.local"):
    return ["%s.%s.svc.%s" % (name, namespace, domain), "%s.%s.svc" % (name, namespace),
            "%s.%s" % (name, namespace)]


def strip_init(argv):
    """Drop an init wrapper (`dumb-init --`) in front of the program."""
    argv = list(argv)
    if argv and os.path.basename(argv[0]) in INIT_WRAPPERS:
        argv = argv[1:]
        if argv and argv[0] == "--":
            argv = argv[1:]
    return argv


class PathMap:
    """Container paths -> local paths: mounts (longest first), then the image's own tree."""

    def __init__(self, mounts, image_roots):
        self.mounts = sorted(mounts.items(), key=lambda item: len(item[0]), reverse=True)
        self.image_roots = sorted(image_roots.items(), key=lambda item: len(item[0]), reverse=True)

    def local(self, path):
        for prefix, local in self.mounts + self.image_roots:
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return local + path[len(prefix.rstrip("/")):]
        return path

    def rewrite_text(self, text):
        """Every container path in free text (a script, an env value, a config file) rewritten, also
        where it is URL-encoded (`ssl_ca_certs=%2Fetc%2F...` in a Redis URL)."""
        prefixes = [prefix.rstrip("/") for prefix, _local in self.mounts + self.image_roots]
        if not prefixes:
            return text
        pattern = r"(?<![\w./-])(%s)(?=$|[/\s'\"=:;,)&])" % "|".join(re.escape(p) for p in prefixes)
        text = re.sub(pattern, lambda match: self.local(match.group(1)), text)
        encoded = {quote(p, safe=""): quote(self.local(p), safe="") for p in prefixes}
        pattern = r"(?<![\w%%])(%s)(?=$|%%2F|[&\s'\"])" % "|".join(re.escape(p) for p in encoded)
        return re.sub(pattern, lambda match: encoded[match.group(1)], text)


# ----------------------------------------------------------------------------- the cluster

class Cluster:
    def __init__(self, kubeconfig):
        from kubernetes import client, config

        self.kubeconfig = kubeconfig
        api_client = config.new_client_from_config(config_file=kubeconfig)
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.client = api_client

    def secret_data(self, namespace, name):
        data = self.core.read_namespaced_secret(name, namespace).data or {}
        return {key: base64.b64decode(value) for key, value in data.items()}

    def config_map_data(self, namespace, name):
        cm = self.core.read_namespaced_config_map(name, namespace)
        data = {key: value.encode() for key, value in (cm.data or {}).items()}
        data.update({key: base64.b64decode(value) for key, value in (cm.binary_data or {}).items()})
        return data

    def hosts(self, sandbox_dir):
        """Every Service's DNS names -> its loopback address; and (namespace, name) -> address."""
        names, addresses = {}, {}
        for svc in self.core.list_service_for_all_namespaces().items:
            address = loopback_for(svc.spec.cluster_ip, sandbox_dir)
            if address is None:
                continue
            addresses[(svc.metadata.namespace, svc.metadata.name)] = (address, svc)
            for dns in service_names(svc.metadata.name, svc.metadata.namespace):
                names[dns] = address
        return names, addresses


# ----------------------------------------------------------------------------- one pod, laid out locally

class LocalPod:
    """A workload's pod template laid out under ``root``: volumes, env, paths."""

    def __init__(self, cluster, namespace, owner, template, root, image_roots=None):
        self.cluster = cluster
        self.namespace = namespace
        self.owner = owner
        self.spec = template.spec
        self.root = root
        mounts = {}
        volumes = {volume.name: volume for volume in self.spec.volumes or []}
        containers = list(self.spec.init_containers or []) + list(self.spec.containers)
        for container in containers:
            for mount in container.volume_mounts or []:
                volume = volumes.get(mount.name)
                local = os.path.join(root, "volumes", mount.name)
                if mount.sub_path:
                    local = os.path.join(local, mount.sub_path)
                mounts[mount.mount_path] = local
                self._materialize(volume, os.path.join(root, "volumes", mount.name))
        self.paths = PathMap(mounts, image_roots or {})

    def _materialize(self, volume, local):
        if os.path.isdir(local) and volume is not None and volume.persistent_volume_claim is not None:
            return  # data survives restarts, like a PVC
        files = {}
        if volume is None or volume.empty_dir is not None or volume.persistent_volume_claim is not None:
            files = {}
        elif volume.config_map is not None:
            files = self._items(self.cluster.config_map_data(self.namespace, volume.config_map.name),
                                volume.config_map.items)
        elif volume.secret is not None:
            files = self._items(self.cluster.secret_data(self.namespace, volume.secret.secret_name),
                                volume.secret.items)
        elif volume.projected is not None:
            for source in volume.projected.sources or []:
                if source.config_map is not None:
                    files.update(self._items(self.cluster.config_map_data(self.namespace, source.config_map.name),
                                             source.config_map.items))
                elif source.secret is not None:
                    files.update(self._items(self.cluster.secret_data(self.namespace, source.secret.name),
                                             source.secret.items))
        if volume is not None and volume.persistent_volume_claim is None:
            shutil.rmtree(local, ignore_errors=True)
        os.makedirs(local, exist_ok=True)
        for key, content in files.items():
            path = os.path.join(local, key)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as handle:
                handle.write(content)
            os.chmod(path, 0o600)

    @staticmethod
    def _items(data, items):
        if not items:
            return data
        return {item.path: data[item.key] for item in items if item.key in data}

    def env(self, container, extra_field_values=None):
        fields = {"metadata.namespace": self.namespace, "metadata.name": self.owner, "status.hostIP": "127.0.0.1",
                  "status.podIP": "127.0.0.1", "spec.nodeName": "localhost"}
        fields.update(extra_field_values or {})
        env = {}
        for source in container.env_from or []:
            if source.secret_ref is not None:
                data = self.cluster.secret_data(self.namespace, source.secret_ref.name)
            else:
                data = self.cluster.config_map_data(self.namespace, source.config_map_ref.name)
            env.update({(source.prefix or "") + key: value.decode() for key, value in data.items()})
        for var in container.env or []:
            if var.value_from is None:
                value = var.value or ""
            elif var.value_from.secret_key_ref is not None:
                ref = var.value_from.secret_key_ref
                value = self.cluster.secret_data(self.namespace, ref.name)[ref.key].decode()
            elif var.value_from.config_map_key_ref is not None:
                ref = var.value_from.config_map_key_ref
                value = self.cluster.config_map_data(self.namespace, ref.name)[ref.key].decode()
            elif var.value_from.field_ref is not None:
                value = fields.get(var.value_from.field_ref.field_path, "")
            else:
                value = ""
            env[var.name] = re.sub(r"\$\((\w+)\)", lambda match: env.get(match.group(1), match.group(0)), value)
        return {key: self.paths.rewrite_text(value) for key, value in env.items()}

    def argv(self, container):
        argv = strip_init(list(container.command or []) + list(container.args or []))
        return [self.paths.rewrite_text(arg) for arg in argv]

    def rewrite_file(self, path):
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        new = self.paths.rewrite_text(text)
        if new != text:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(new)


# ----------------------------------------------------------------------------- workloads -> local programs

def workload_hash(cluster, namespace, template):
    """Changes when the pod template or any ConfigMap/Secret it reads changes (a rollout)."""
    digest = hashlib.sha256(json.dumps(cluster.client.sanitize_for_serialization(template), sort_keys=True).encode())
    refs = set()
    for volume in template.spec.volumes or []:
        if volume.config_map is not None:
            refs.add(("cm", volume.config_map.name))
        if volume.secret is not None:
            refs.add(("secret", volume.secret.secret_name))
    for container in list(template.spec.init_containers or []) + list(template.spec.containers):
        for var in container.env or []:
            if var.value_from is not None and var.value_from.secret_key_ref is not None:
                refs.add(("secret", var.value_from.secret_key_ref.name))
            if var.value_from is not None and var.value_from.config_map_key_ref is not None:
                refs.add(("cm", var.value_from.config_map_key_ref.name))
    for kind, name in sorted(refs):
        try:
            data = (cluster.secret_data if kind == "secret" else cluster.config_map_data)(namespace, name)
        except Exception:  # noqa: BLE001 - a missing object: the pod would wait for it
            return None
        digest.update(json.dumps({k: hashlib.sha256(v).hexdigest() for k, v in data.items()}, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def service_for(addresses, namespace, labels):
    """The non-headless Service of ``namespace`` whose selector picks pods with ``labels``."""
    for (svc_ns, _name), (address, svc) in sorted(addresses.items()):
        selector = svc.spec.selector or {}
        if svc_ns == namespace and selector and all(labels.get(k) == v for k, v in selector.items()):
            return address, svc
    return None, None


class Supervisor:
    def __init__(self, sandbox_dir, kubeconfig, helm, gateway_port, namespaces):
        self.dir = os.path.join(sandbox_dir, "workloads")
        self.sandbox_dir = sandbox_dir
        self.kubeconfig = kubeconfig
        self.helm = helm
        self.gateway_port = gateway_port
        self.namespaces = set(namespaces)
        self.cluster = Cluster(kubeconfig)
        self.procs = {}      # key -> dict(proc, hash, started, restarts, ...)
        self.status = {}
        self.migrated = set()
        self.gateway_key = None
        os.makedirs(self.dir, exist_ok=True)
        self.hosts_path = os.path.join(self.dir, "hosts")

    # ---- bookkeeping
    def write_status(self):
        out = {"gateway_url": "http://127.0.0.1:%d" % self.gateway_port, "workloads": self.status,
               "gateway": self.gateway_key, "reconciled_at": getattr(self, "reconcile_started", 0)}
        tmp = os.path.join(self.dir, "status.json.tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(out, handle, indent=2, sort_keys=True)
        os.replace(tmp, os.path.join(self.dir, "status.json"))

    def stop(self, key):
        entry = self.procs.pop(key, None)
        if entry is None:
            return
        proc = entry["proc"]
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for post in entry.get("after_stop", []):
            post()
        log("stopped %s" % key)

    def stop_all(self, *_):
        for key in list(self.procs):
            self.stop(key)
        self.write_status()
        sys.exit(0)

    def launch(self, key, argv, env, cwd, whash, ready=None, after_stop=()):
        logpath = os.path.join(self.dir, "logs", key.replace("/", "_") + ".log")
        os.makedirs(os.path.dirname(logpath), exist_ok=True)
        with open(logpath, "ab") as logfile:
            proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=logfile, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        previous = self.status.get(key, {})
        self.procs[key] = {"proc": proc, "hash": whash, "started": time.time(), "ready": ready,
                           "after_stop": list(after_stop)}
        same = previous.get("hash") == whash
        self.status[key] = {"pid": proc.pid, "state": "starting", "log": logpath, "argv": argv,
                            "restarts": previous.get("restarts", 0) if same else 0,
                            "hash": whash, "started": time.time()}
        for carried in ("exit_code", "last_error", "error"):
            if same and carried in previous:
                self.status[key][carried] = previous[carried]
        log("started %s (pid %d): %s" % (key, proc.pid, " ".join(argv)))

    # ---- one pass
    def reconcile(self):
        names, addresses = self.cluster.hosts(self.sandbox_dir)
        wanted = []
        for kind, lister in (("StatefulSet", self.cluster.apps.list_stateful_set_for_all_namespaces),
                             ("Deployment", self.cluster.apps.list_deployment_for_all_namespaces)):
            for obj in lister().items:
                containers = obj.spec.template.spec.containers
                program = next((image_kind(c.image) for c in containers if image_kind(c.image)), None)
                if program is None or not obj.spec.replicas or obj.metadata.namespace not in self.namespaces:
                    continue
                if program == "model-engine" and "meta.helm.sh/release-name" not in (obj.metadata.annotations or {}):
                    continue  # an endpoint's Deployment (forwarder + inference server): kwok only
                wanted.append((["redis", "postgres", "model-engine"].index(program), kind, obj, program))
        gateway_key = None
        self.reconcile_started = time.time()
        for _order, _kind, obj, program in sorted(wanted, key=lambda item: item[0]):
            key = "%s/%s" % (obj.metadata.namespace, obj.metadata.name)
            if program == "model-engine" and "start_fastapi_server" in " ".join(
                    obj.spec.template.spec.containers[0].args or []):
                gateway_key = key
        self.gateway_key = gateway_key
        self.write_hosts(names)
        seen = set()
        for _order, _kind, obj, program in sorted(wanted, key=lambda item: item[0]):
            key = "%s/%s" % (obj.metadata.namespace, obj.metadata.name)
            seen.add(key)
            whash = workload_hash(self.cluster, obj.metadata.namespace, obj.spec.template)
            entry = self.procs.get(key)
            if whash is None:
                self.status.setdefault(key, {})["state"] = "waiting for its ConfigMaps/Secrets"
                continue
            if entry is not None and entry["hash"] != whash:
                self.stop(key)
                entry = None
            if entry is not None and entry["proc"].poll() is not None:
                rc = entry["proc"].returncode
                st = self.status[key]
                backoff = min(CRASH_BACKOFF_MAX, CRASH_BACKOFF_FIRST * 2 ** st.get("restarts", 0))
                if "exited" not in entry:
                    entry["exited"] = time.time()
                    tail = last_error(st["log"])
                    st.update(state="CrashLoopBackOff (exit %s); restart after %ds" % (rc, backoff), exit_code=rc,
                              last_error=tail[-4000:], error=last_line(tail))
                    self.event(obj, "BackOff", "Back-off restarting failed container (exit %s; sandbox process, "
                               "log %s): %s" % (rc, st["log"], st["error"]))
                if time.time() - entry["exited"] < backoff:
                    continue
                self.procs.pop(key)
                st["restarts"] = st.get("restarts", 0) + 1
                entry = None
            if entry is None:
                try:
                    self.start_workload(key, program, obj, addresses, whash, is_gateway=key == gateway_key)
                except Exception as exc:  # noqa: BLE001 - report and retry on the next pass
                    self.status.setdefault(key, {}).update(state="cannot start: %s" % exc)
                    log("cannot start %s: %s" % (key, exc))
                continue
            self.check_ready(key)
        for key in list(self.procs):
            if key not in seen:
                self.stop(key)
                self.status.pop(key, None)
        for key in list(self.status):
            if key not in seen and key not in self.procs and not key.startswith("migrations/"):
                self.status.pop(key, None)
        self.write_status()

    def check_ready(self, key):
        entry = self.procs[key]
        st = self.status[key]
        if st.get("state") == "ready" or entry["ready"] is None:
            if entry["ready"] is None:
                st["state"] = "running"
            return
        try:
            if entry["ready"]():
                st["state"] = "ready"
                st["ready_after_s"] = round(time.time() - entry["started"], 1)
                log("%s ready after %.1fs" % (key, st["ready_after_s"]))
        except Exception as exc:  # noqa: BLE001 - not yet
            self.status[key]["probe"] = str(exc)[:200]

    def event(self, obj, reason, message):
        """A Warning Event on the workload's pods, as the kubelet gives one (kubectl describe, status.yml)."""
        from kubernetes import client

        selector = ",".join("%s=%s" % kv for kv in sorted((obj.spec.selector.match_labels or {}).items()))
        try:
            pods = self.cluster.core.list_namespaced_pod(obj.metadata.namespace, label_selector=selector).items
            now = datetime.datetime.now(datetime.timezone.utc)
            for pod in pods[:3]:
                self.cluster.core.create_namespaced_event(obj.metadata.namespace, client.CoreV1Event(
                    metadata=client.V1ObjectMeta(generate_name=pod.metadata.name + "."),
                    involved_object=client.V1ObjectReference(kind="Pod", name=pod.metadata.name,
                                                             namespace=pod.metadata.namespace, uid=pod.metadata.uid,
                                                             api_version="v1"),
                    reason=reason, message=message[:1000], type="Warning", count=1,
                    first_timestamp=now, last_timestamp=now,
                    source=client.V1EventSource(component="sandbox-workloads")))
        except Exception as exc:  # noqa: BLE001 - an event is best effort
            log("event for %s: %s" % (obj.metadata.name, exc))

    def write_hosts(self, names):
        """/etc/hosts of the LLM Engine processes; written in place, so their bind mounts see updates."""
        text = hosts_text(names)
        try:
            with open(self.hosts_path, encoding="utf-8") as handle:
                if handle.read() == text:
                    return
        except OSError:
            pass
        with open(self.hosts_path, "a+", encoding="utf-8") as handle:
            handle.seek(0)
            handle.truncate()
            handle.write(text)

    # ---- per program
    def start_workload(self, key, program, obj, addresses, whash, is_gateway=False):
        namespace = obj.metadata.namespace
        root = os.path.join(self.dir, namespace, obj.metadata.name)
        address, svc = service_for(addresses, namespace, obj.spec.template.metadata.labels or {})
        if program == "redis":
            self.start_redis(key, obj, root, address, whash)
        elif program == "postgres":
            self.start_postgres(key, obj, root, address, whash)
        else:
            self.start_model_engine(key, obj, root, addresses, whash, is_gateway)

    def start_redis(self, key, obj, root, address, whash):
        from tests.contract.servers import require_binary

        pod = LocalPod(self.cluster, obj.metadata.namespace, obj.metadata.name, obj.spec.template, root)
        container = obj.spec.template.spec.containers[0]
        argv = pod.argv(container)
        conf = argv[1] if os.path.basename(argv[0]).startswith("redis-server") else argv[0]
        lines = []
        with open(conf, encoding="utf-8") as handle:
            for line in handle.read().splitlines():
                words = line.split()
                if words and words[0] == "bind":
                    line = "bind %s" % address
                elif words and words[0] == "dir":
                    line = "dir %s" % pod.paths.local(words[1])
                lines.append(pod.paths.rewrite_text(line))
        local_conf = os.path.join(root, "redis.conf")
        with open(local_conf, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        os.chmod(local_conf, 0o600)
        for word in lines:
            if word.startswith("dir "):
                os.makedirs(word.split(None, 1)[1], exist_ok=True)
        env = dict(os.environ)
        port = container.ports[0].container_port
        self.launch(key, [require_binary("redis-server", ["/usr/bin/redis-server"]), local_conf], env, root, whash,
                    ready=functools.partial(tcp_ok, address, port))

    def start_postgres(self, key, obj, root, address, whash):
        from tests.contract.servers import as_user, chown_tree, postgres_bindir, server_user

        user, uid, gid = server_user()
        bindir = postgres_bindir()
        pod = LocalPod(self.cluster, obj.metadata.namespace, obj.metadata.name, obj.spec.template, root)
        for vol in os.listdir(os.path.join(root, "volumes")):
            vdir = os.path.join(root, "volumes", vol)
            for dirpath, _dirs, files in os.walk(vdir):
                for name in files:
                    if name.endswith((".sh", ".conf", ".sql")):
                        pod.rewrite_file(os.path.join(dirpath, name))
        make_traversable(root)
        chown_tree(root, uid, gid)
        container = obj.spec.template.spec.containers[0]
        env = dict(os.environ, PATH=bindir + os.pathsep + os.environ["PATH"])
        for var in ("PGPASSWORD", "PGUSER", "PGHOST", "PGPORT", "PGDATABASE", "PGHOSTADDR"):
            env.pop(var, None)
        cenv = pod.env(container)
        env.update(cenv)
        data = cenv["PGDATA"]
        port = container.ports[0].container_port

        def run(cmd):
            proc = subprocess.run(as_user(cmd, user), env=env, cwd=root, capture_output=True, text=True, timeout=300,
                                  check=False)
            if proc.returncode != 0:
                raise RuntimeError("%s failed: %s%s" % (" ".join(cmd), proc.stdout[-2000:], proc.stderr[-2000:]))
            return proc

        argv = pod.argv(container)
        if argv and argv[0] == "postgres":
            argv = [os.path.join(bindir, "postgres")] + argv[1:]
        if not os.path.exists(os.path.join(data, "PG_VERSION")):
            # what the image's entrypoint does for an empty PGDATA: initdb with POSTGRES_USER,
            # POSTGRES_PASSWORD_FILE and POSTGRES_INITDB_ARGS, then /docker-entrypoint-initdb.d/* with a
            # socket-only bootstrap server
            os.makedirs(data, exist_ok=True)
            chown_tree(os.path.dirname(data), uid, gid)
            os.chmod(data, 0o700)
            run([os.path.join(bindir, "initdb"), "-D", data, "-U", cenv.get("POSTGRES_USER", "postgres"),
                 "--pwfile=" + cenv["POSTGRES_PASSWORD_FILE"]] + cenv.get("POSTGRES_INITDB_ARGS", "").split())
            boot = argv[1:] + ["-c", "listen_addresses="]
            # -l: a server started by pg_ctl keeps any stdout it inherits open
            run([os.path.join(bindir, "pg_ctl"), "-D", data, "-w", "-t", "120",
                 "-l", os.path.join(root, "bootstrap.log"), "-o", " ".join(boot), "start"])
            try:
                initdb_d = pod.paths.local("/docker-entrypoint-initdb.d")
                for name in sorted(os.listdir(initdb_d)) if os.path.isdir(initdb_d) else []:
                    if name.endswith(".sh"):
                        run(["sh", os.path.join(initdb_d, name)])
            finally:
                run([os.path.join(bindir, "pg_ctl"), "-D", data, "-w", "-m", "fast", "stop"])
        for init in obj.spec.template.spec.init_containers or []:
            ienv = dict(env)
            ienv.update(pod.env(init))
            proc = subprocess.run(as_user(pod.argv(init), user), env=ienv, cwd=root, capture_output=True, check=False,
                                  text=True, timeout=300)
            if proc.returncode != 0:
                raise RuntimeError("init container %s failed: %s" % (init.name, proc.stderr[-2000:]))
        argv = argv + ["-c", "listen_addresses=%s" % address]
        self.launch(key, as_user(argv, user), env, root, whash, ready=functools.partial(tcp_ok, address, port))

    def model_engine_env(self, pod, container, addresses):
        from tests.sandbox import upstream_venv

        venv = os.path.dirname(os.path.dirname(upstream_venv.venv_python()))
        # nothing of the sandbox's own environment that a pod would not have (its S3 keys, KUBERNETES_*)
        dropped = ("KUBERNETES_", "PG", "AWS_", "VIRTUAL_ENV", "PYTHON", "SANDBOX_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
        env.update(pod.env(container))
        workspace = os.path.join(pod.root, "workspace")
        env.update({
            "KUBECONFIG": self.kubeconfig,
            "WORKSPACE": workspace,
            "PYTHONPATH": workspace,
            "PYTHONDONTWRITEBYTECODE": "1",
            "PATH": os.pathsep.join([os.path.join(venv, "bin"), os.environ.get("PATH", "")]),
            "HOME": pod.root,
        })
        return env, venv

    def in_cluster_dns(self, argv):
        """``argv`` in a private mount namespace whose /etc/hosts names the sandbox's Services."""
        prefix = ["unshare", "--mount", "--propagation", "private"]
        if os.geteuid() != 0:
            prefix.insert(1, "--map-root-user")
        return prefix + ["sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"', self.hosts_path] + argv

    def start_model_engine(self, key, obj, root, addresses, whash, is_gateway):
        from tests.sandbox import upstream_venv

        workspace = os.path.join(root, "workspace")
        lay_out_workspace(workspace, upstream_venv.server_dir())
        pod = LocalPod(self.cluster, obj.metadata.namespace, obj.metadata.name, obj.spec.template, root,
                       image_roots={"/workspace": workspace})
        container = obj.spec.template.spec.containers[0]
        env, venv = self.model_engine_env(pod, container, addresses)
        # the server's own config files name mounted files (the Redis CA in the cache URL); the
        # templates of the endpoints' objects are left as rendered: they are for the endpoints' pods
        for var in ("DEPLOY_SERVICE_CONFIG_PATH", "ML_INFRA_SERVICES_CONFIG_PATH"):
            if os.path.isfile(env.get(var, "")):
                pod.rewrite_file(env[var])
        self.run_migrations(obj, root, addresses)
        argv = self.venv_argv(pod.argv(container), venv)
        ready = None
        if is_gateway:
            argv += ["--port", str(self.gateway_port), "--num-workers", "1"]
            ready = functools.partial(http_ok, "http://127.0.0.1:%d/healthcheck" % self.gateway_port)
        self.launch(key, self.in_cluster_dns(argv), env, workspace, whash, ready=ready)

    @staticmethod
    def venv_argv(argv, venv):
        if argv and os.path.exists(os.path.join(venv, "bin", argv[0])):
            argv = [os.path.join(venv, "bin", argv[0])] + argv[1:]
        return argv

    def run_migrations(self, obj, root, addresses):
        """The release's migration hook Job, read from its Helm release record, once per revision."""
        import yaml

        annotations = obj.metadata.annotations or {}
        release = annotations.get("meta.helm.sh/release-name")
        namespace = annotations.get("meta.helm.sh/release-namespace", obj.metadata.namespace)
        if not release or not self.helm:
            return
        out = subprocess.run([self.helm, "get", "hooks", release, "-n", namespace, "--kubeconfig", self.kubeconfig],
                             capture_output=True, text=True, check=True).stdout
        revision = subprocess.run([self.helm, "status", release, "-n", namespace, "--kubeconfig", self.kubeconfig,
                                   "-o", "json"], capture_output=True, text=True, check=True)
        rev = json.loads(revision.stdout).get("version")
        for doc in yaml.safe_load_all(out):
            if not doc or doc.get("kind") != "Job":
                continue
            if "run_database_migration" not in json.dumps(doc):
                continue
            mkey = "migrations/%s/%s-%s" % (namespace, release, rev)
            if mkey in self.migrated:
                return
            from kubernetes.client import V1Job

            job = self.cluster.client._ApiClient__deserialize(doc, V1Job)  # noqa: SLF001 - typed object from a dict
            from tests.sandbox import upstream_venv

            workspace = os.path.join(root, "migration-workspace")
            lay_out_workspace(workspace, upstream_venv.server_dir())
            pod = LocalPod(self.cluster, namespace, job.metadata.name, job.spec.template,
                           os.path.join(root, "migration"), image_roots={"/workspace": workspace})
            container = job.spec.template.spec.containers[0]
            env, venv = self.model_engine_env(pod, container, addresses)
            argv = self.venv_argv(pod.argv(container), venv)
            logpath = os.path.join(self.dir, "logs", mkey.replace("/", "_") + ".log")
            os.makedirs(os.path.dirname(logpath), exist_ok=True)
            started = time.time()
            with open(logpath, "ab") as logfile:
                rc = subprocess.run(self.in_cluster_dns(argv), env=env, cwd=workspace, stdout=logfile,
                                    stderr=subprocess.STDOUT, check=False, timeout=900).returncode
            self.status[mkey] = {"state": "succeeded" if rc == 0 else "failed (exit %d)" % rc, "log": logpath,
                                 "argv": argv, "seconds": round(time.time() - started, 1)}
            if rc != 0:
                self.status[mkey]["last_error"] = last_error(logpath)
                raise RuntimeError("migration job %s failed (exit %d); log %s" % (job.metadata.name, rc, logpath))
            self.migrated.add(mkey)
            log("migrations %s done in %.1fs" % (mkey, time.time() - started))

    def run(self, interval=2.0):
        signal.signal(signal.SIGTERM, self.stop_all)
        signal.signal(signal.SIGINT, self.stop_all)
        while True:
            try:
                self.reconcile()
            except Exception as exc:  # noqa: BLE001 - the API may be restarting
                log("reconcile: %s" % exc)
            time.sleep(interval)


# ----------------------------------------------------------------------------- helpers

def lay_out_workspace(workspace, server_dir):
    """/workspace/model-engine as the image has it: the pinned server checkout (links), writable around it."""
    tree = os.path.join(workspace, "model-engine")
    os.makedirs(tree, exist_ok=True)
    for name in os.listdir(server_dir):
        link = os.path.join(tree, name)
        if not os.path.lexists(link):
            os.symlink(os.path.join(server_dir, name), link)


def hosts_text(names):
    """This machine's /etc/hosts plus one line per Service address with all its DNS names."""
    try:
        with open("/etc/hosts", encoding="utf-8") as handle:
            base = handle.read()
    except OSError:
        base = "127.0.0.1 localhost\n"
    by_address = {}
    for name, address in sorted(names.items()):
        by_address.setdefault(address, []).append(name)
    lines = ["%s %s" % (address, " ".join(sorted(dns))) for address, dns in sorted(by_address.items())]
    return base.rstrip("\n") + "\n# llmops sandbox Services (tests/sandbox/workloads.py)\n" + "\n".join(lines) + "\n"


def make_traversable(path):
    """Let the database user reach ``path`` (each parent gets o+x)."""
    path = os.path.abspath(path)
    while path not in ("/", ""):
        mode = os.stat(path).st_mode
        if not mode & 0o001:
            os.chmod(path, mode | 0o001)
        path = os.path.dirname(path)


def last_line(text):
    """The last exception line of a log tail (`module.SomeError: message`), else its last line."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Exit)\b.*", line)]
    return (errors or lines or [""])[-1][:500]


def last_error(logpath, lines=300):
    try:
        with open(logpath, errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])
    except OSError:
        return ""


def tcp_ok(host, port):
    with socket.create_connection((host, port), timeout=2):
        return True


def http_ok(url):
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - local sandbox URL
        return resp.status == 200


def read_status(sandbox_dir):
    path = os.path.join(sandbox_dir, "workloads", "status.json")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def wait_gateway(sandbox_dir, timeout=600):
    """Block until the gateway of what the cluster holds now answers /healthcheck: a pass of the runner
    that started after this call found it (so not the one of a release revision just replaced) and
    marked it ready. Raise with the workloads' states otherwise."""
    called = time.time()
    deadline = called + timeout
    status = {}
    while time.time() < deadline:
        status = read_status(sandbox_dir)
        url = status.get("gateway_url")
        gateway = status.get("workloads", {}).get(status.get("gateway") or "", {})
        try:
            if (url and status.get("reconciled_at", 0) > called and gateway.get("state") == "ready"
                    and http_ok(url + "/healthcheck")):
                return url
        except Exception as exc:  # noqa: BLE001 - not yet
            status["probe"] = str(exc)[:200]
        time.sleep(2)
    raise SystemExit("LLM Engine gateway not healthy within %ds; workloads: %s" % (
        timeout, json.dumps(status.get("workloads", {}), indent=1)[-4000:]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", required=True, help="the sandbox directory")
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run")
    run_p.add_argument("--kubeconfig", required=True)
    run_p.add_argument("--helm", default="")
    run_p.add_argument("--gateway-port", type=int, required=True)
    run_p.add_argument("--namespaces", default="llm-engine", help="comma-separated namespaces whose pods run here")
    sub.add_parser("status")
    wait_p = sub.add_parser("wait-gateway")
    wait_p.add_argument("--timeout", type=int, default=600)
    args = parser.parse_args(argv)
    if args.command == "run":
        Supervisor(os.path.abspath(args.dir), args.kubeconfig, args.helm, args.gateway_port,
                   [ns for ns in args.namespaces.split(",") if ns]).run()
    elif args.command == "status":
        print(json.dumps(read_status(args.dir), indent=2, sort_keys=True))
    else:
        print(wait_gateway(args.dir, args.timeout))
    return 0


if __name__ == "__main__":
    sys.exit(main())
