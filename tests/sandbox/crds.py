#!/usr/bin/env python
"""Install or remove the upstream CRDs of an optional add-on in the sandbox.

The sandbox serves only built-in APIs. Some roles take another path when an add-on's API is served
(cert-manager for Redis TLS, KEDA and Istio for the LLM Engine chart). build.sh fetches the real
CustomResourceDefinitions from the add-ons' published sources (no controllers are built: the
add-ons' controllers are not available as modules here). Tests install them for as long as they
need the "served" path and remove them afterwards, because CRDs are cluster-wide.

    python tests/sandbox/crds.py install cert-manager keda istio
    python tests/sandbox/crds.py remove istio

The sandbox env (``sandbox.py env``) must be in the environment, or LLMOPS_SANDBOX_DIR must point
at the sandbox.
"""

import glob
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from tests.helpers.sandbox import load_env  # noqa: E402 - after sys.path gets the checkout

ADDONS = ("cert-manager", "keda", "istio")


def manifests(addon, env=None):
    """The CRD manifest files of an add-on from the sandbox cache (build.sh crds)."""
    if addon not in ADDONS:
        raise ValueError("unknown add-on %r: choose from %s" % (addon, ", ".join(ADDONS)))
    env = env or load_env()
    root = env.get("SANDBOX_CRDS_DIR") or ""
    files = sorted(glob.glob(os.path.join(root, addon, "*.yaml")))
    if not files:
        raise RuntimeError(
            "no CRDs for %s under %r: run `bash tests/sandbox/build.sh crds` and restart the sandbox "
            "(`make sandbox-up`) so its env file names SANDBOX_CRDS_DIR" % (addon, root))
    return files


def _kubectl(env, *args, check=True):
    penv = dict(os.environ)
    penv.update(env)
    done = subprocess.run([env["SANDBOX_KUBECTL"], *args], env=penv, text=True, capture_output=True, check=False)
    if check and done.returncode:
        detail = done.stderr.strip() or done.stdout.strip()
        raise RuntimeError("kubectl %s failed (exit %d): %s" % (" ".join(args[:2]), done.returncode, detail))
    return done


def crd_names(addon, env=None):
    env = env or load_env()
    names = []
    for path in manifests(addon, env):
        out = _kubectl(env, "create", "--dry-run=client", "-f", path, "-o", "name").stdout
        names += [line.strip() for line in out.splitlines() if line.strip()]
    return names


def install(addon, env=None):
    """Apply the add-on's CRDs and wait until the API server serves them."""
    env = env or load_env()
    for path in manifests(addon, env):
        _kubectl(env, "apply", "--server-side", "--force-conflicts", "-f", path)
    _kubectl(env, "wait", "--for=condition=Established", "--timeout=120s", *crd_names(addon, env))


def stalled(crd):
    """Whether a deleted CRD's cleanup failed and waits for a retry that may not come.

    Seen in this sandbox (kube-apiserver v1.34.4, CI of stop 23 and again locally): the apiserver's
    CRD finalizer lists the instances while the kind's watch cache is being rebuilt for the deletion,
    logs ``crd_finalizer.go:302 ... failed with: storage is (re)initializing``, sets the Terminating
    condition to InstanceDeletionFailed, and the CRD then stayed for 4-5 minutes (until the
    apiextensions informers' resync) instead of being retried at once.
    """
    meta = crd.get("metadata") or {}
    conditions = (crd.get("status") or {}).get("conditions") or []
    return bool(meta.get("deletionTimestamp")) and any(
        c.get("type") == "Terminating" and c.get("reason") == "InstanceDeletionFailed" for c in conditions)


def remove(addon, env=None, timeout=180.0):
    """Delete the add-on's CRDs (and so every object of their kinds) and wait until they are gone.

    A CRD whose cleanup stalled (``stalled``) gets a new annotation value: a metadata change makes the
    finalizer take it up again now rather than at the next resync.
    """
    env = env or load_env()
    names = crd_names(addon, env)
    _kubectl(env, "delete", "--ignore-not-found", "--wait=false", *names)
    deadline = time.monotonic() + timeout
    nudges = 0
    while True:
        out = _kubectl(env, "get", "--ignore-not-found", "-o", "json", *names).stdout
        found = json.loads(out) if out.strip() else {"items": []}
        left = found["items"] if "items" in found else [found]  # one name: the object itself
        if not left:
            return nudges
        if time.monotonic() > deadline:
            raise RuntimeError("CRDs of %s still present after %.0fs: %s (conditions: %s)" % (
                addon, timeout, ", ".join(c["metadata"]["name"] for c in left),
                [(c.get("status") or {}).get("conditions") for c in left]))
        for crd in filter(stalled, left):
            nudges += 1
            done = _kubectl(env, "annotate", "--overwrite", "customresourcedefinition/" + crd["metadata"]["name"],
                            "llmops.sandbox/cleanup-retry=%d" % nudges, check=False)
            if done.returncode and "NotFound" not in done.stderr:  # gone meanwhile: what we wait for
                raise RuntimeError("kubectl annotate failed: " + done.stderr.strip())
        time.sleep(1.0)


def main(argv):
    if len(argv) < 3 or argv[1] not in ("install", "remove"):
        sys.stderr.write("usage: crds.py install|remove ADDON [ADDON ...]  (add-ons: %s)\n" % ", ".join(ADDONS))
        return 2
    action = install if argv[1] == "install" else remove
    for addon in argv[2:]:
        action(addon)
        print("%s %s CRDs" % ("installed" if argv[1] == "install" else "removed", addon))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
