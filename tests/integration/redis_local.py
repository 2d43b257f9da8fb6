"""Run the Redis pod the role declared, as a local redis-server, from the objects in the cluster.

The sandbox starts no containers, so this lays the StatefulSet's volumes (ConfigMap and Secrets,
as the kubelet would mount them) into a local directory, starts the Debian ``redis-server`` with the
container's own arguments and runs the pod's own probe command, with REDISCLI_AUTH taken from the
Secret the pod's env names. Only what cannot be the same on a shared machine is rewritten: the
mount paths get the local directory as a prefix, the port becomes a free one and ``bind`` becomes
127.0.0.1.
"""

import base64
import os
import re
import subprocess

from tests.contract.servers import RedisProcess, free_port

PATH_DIRECTIVES = ("tls-cert-file", "tls-key-file", "tls-ca-cert-file", "include", "dir")


class PodRedis(RedisProcess):
    def __init__(self, core, apps, namespace, workdir, name="redis"):
        super().__init__(workdir, free_port())
        sts = apps.read_namespaced_stateful_set(name, namespace)
        pod = sts.spec.template.spec
        self.container = pod.containers[0]
        self.container_port = self.container.ports[0].container_port
        volumes = {volume.name: volume for volume in pod.volumes}
        self.mounts = {}
        for mount in self.container.volume_mounts:
            local = self.local(mount.mount_path)
            os.makedirs(local, exist_ok=True)
            self.mounts[mount.name] = mount.mount_path
            volume = volumes.get(mount.name)
            if volume is not None and volume.config_map is not None:
                data = core.read_namespaced_config_map(volume.config_map.name, namespace).data or {}
                files = {key: value.encode() for key, value in data.items()}
            elif volume is not None and volume.secret is not None:
                data = core.read_namespaced_secret(volume.secret.secret_name, namespace).data or {}
                files = {key: base64.b64decode(value) for key, value in data.items()}
            else:
                files = {}  # the data PVC and the emptyDir start empty
            for key, content in files.items():
                with open(os.path.join(local, key), "wb") as handle:
                    handle.write(content)
        self.auth = {}
        for env in self.container.env or []:
            ref = env.value_from.secret_key_ref
            secret = core.read_namespaced_secret(ref.name, namespace)
            self.auth[env.name] = base64.b64decode(secret.data[ref.key]).decode()
        self.conf_path = self.local(self.container.args[0])
        self._rewrite_config()

    def local(self, path):
        return os.path.join(self.workdir, path.lstrip("/"))

    def path(self, volume, key):
        return os.path.join(self.local(self.mounts[volume]), key)

    def _rewrite_config(self):
        lines = []
        with open(self.conf_path, encoding="utf-8") as handle:
            for line in handle.read().splitlines():
                words = line.split(" ", 1)
                if words[0] in PATH_DIRECTIVES:
                    line = "%s %s" % (words[0], self.local(words[1]))
                elif words[0] in ("port", "tls-port") and words[1] == str(self.container_port):
                    line = "%s %d" % (words[0], self.port)
                elif words[0] == "bind":
                    line = "bind 127.0.0.1"
                lines.append(line)
        with open(self.conf_path, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")

    def config_text(self):
        with open(self.conf_path, encoding="utf-8") as handle:
            return handle.read()

    def probe_command(self, kind="readiness"):
        """The pod's probe command, pointed at the local port and files."""
        probe = getattr(self.container, kind + "_probe")._exec.command
        script = re.sub(r"-p %d\b" % self.container_port, "-p %d" % self.port, probe[-1])
        # one pass, so a mount path inside an already rewritten path (/tmp) is not rewritten twice
        mounts = "|".join(re.escape(path) for path in sorted(self.mounts.values(), key=len, reverse=True))
        script = re.sub(r"(?<![\w./-])(%s)/" % mounts, lambda match: self.local(match.group(1)) + "/", script)
        return list(probe[:-1]) + [script]

    def run_probe(self, cli_dir, kind="readiness", auth=True):
        env = dict(os.environ, PATH=cli_dir + os.pathsep + os.environ["PATH"])
        env.pop("REDISCLI_AUTH", None)
        if auth:
            env.update(self.auth)
        return subprocess.run(self.probe_command(kind), env=env, check=False, capture_output=True).returncode
