#!/usr/bin/env python
"""A Python 3.12 virtualenv with the pinned LLM Engine server (`model_engine_server`) installed.

    upstream_venv.py build     build once (cold ~5 min, ~670 MB); prints the venv's python
    upstream_venv.py python    print the venv's python if it is built (exit 1 otherwise)
    upstream_venv.py key       print the cache key

The venv is cached outside the checkout like the sandbox's Go binaries:
`${LLMOPS_SANDBOX_CACHE:-~/.cache/llmops-sandbox}/llm-engine-server-<key>/`, where the key is a
digest of the upstream server's source tree (`model-engine/`: the code, `requirements.txt`,
`setup.py`), so another commit of upstream, or other requirements, gets its own venv, and a warm
cache builds nothing.

What is installed, and the one deviation from upstream:
- every pin of `model-engine/requirements.txt`, except `pycurl==7.45.2`, which has no wheel for
  Python 3.12 and does not build without libcurl headers; `pycurl==7.45.3` (a wheel) is installed
  instead (the range in upstream's `requirements.in` allows it);
- the `model_engine_server` package itself, `pip install -e` like upstream's Dockerfile, from a copy
  of the checkout (which may be read-only) inside the venv, so the venv runs exactly the pinned
  source.

The checkout is found as `tests/scripts/upstream-llm-engine.sh path` finds it
(`$LLMOPS_UPSTREAM_LLM_ENGINE`, else `../shared/upstream/llm-engine`, else `make upstream`'s clone).
The interpreter is `$LLMOPS_UPSTREAM_PYTHON`, default pyenv's 3.12.1, else `python3.12` on PATH.
"""

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
# pins replaced because the upstream pin cannot be installed here (see the module docstring)
PIN_OVERRIDES = {"pycurl": "7.45.3"}


def log(msg):
    print("[upstream-venv] %s" % msg, file=sys.stderr, flush=True)


def upstream_dir():
    """The llm-engine checkout, by tests/scripts/upstream-llm-engine.sh's rule: $LLMOPS_UPSTREAM_LLM_ENGINE,
    else ../shared/upstream/llm-engine next to the checkout, else the clone `make upstream` leaves in the cache."""
    if os.environ.get("LLMOPS_UPSTREAM_LLM_ENGINE"):
        return os.path.abspath(os.environ["LLMOPS_UPSTREAM_LLM_ENGINE"])
    script = os.path.join(REPO_ROOT, "tests", "scripts", "upstream-llm-engine.sh")
    return subprocess.run(["bash", script, "path"], capture_output=True, text=True, check=True).stdout.strip()


def server_dir():
    path = os.path.join(upstream_dir(), "model-engine")
    if not os.path.isfile(os.path.join(path, "requirements.txt")):
        raise SystemExit("upstream-venv: no model-engine/requirements.txt under %s; set LLMOPS_UPSTREAM_LLM_ENGINE "
                         "to a checkout of github.com/scaleapi/llm-engine at the pinned commit" % upstream_dir())
    return path


def cache_dir():
    return os.environ.get("LLMOPS_SANDBOX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "llmops-sandbox")


def base_python():
    explicit = os.environ.get("LLMOPS_UPSTREAM_PYTHON")
    candidates = [explicit] if explicit else [os.path.expanduser("~/.pyenv/versions/3.12.1/bin/python3.12"),
                                              shutil.which("python3.12") or ""]
    for cand in candidates:
        if cand and os.access(cand, os.X_OK):
            return cand
    raise SystemExit("upstream-venv: no Python 3.12 found (tried %s); install one or set LLMOPS_UPSTREAM_PYTHON"
                     % ", ".join(c for c in candidates if c))


def tree_digest(root):
    """sha256 over the relative paths and contents of the server's source files (not its tests)."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("tests", "__pycache__", "docs", "build")
                             and not d.endswith(".egg-info"))
        for name in sorted(filenames):
            if name.endswith(".pyc"):
                continue
            path = os.path.join(dirpath, name)
            digest.update(os.path.relpath(path, root).encode() + b"\0")
            with open(path, "rb") as handle:
                digest.update(hashlib.sha256(handle.read()).digest())
    digest.update(repr(sorted(PIN_OVERRIDES.items())).encode())
    return digest.hexdigest()[:16]


def key():
    return tree_digest(server_dir())


def venv_dir():
    return os.path.join(cache_dir(), "llm-engine-server-%s" % key())


def venv_python(venv=None):
    return os.path.join(venv or venv_dir(), "bin", "python")


def requirements_with_overrides(text):
    """upstream's requirements.txt with PIN_OVERRIDES applied (pure; returns the new text)."""
    out = []
    for line in text.splitlines():
        name = line.split("==", 1)[0].strip().lower()
        if "==" in line and not line.lstrip().startswith("#") and name in PIN_OVERRIDES:
            line = "%s==%s" % (name, PIN_OVERRIDES[name])
        out.append(line)
    return "\n".join(out) + "\n"


def build():
    """Build the venv unless the cached one is complete; return its python.

    Built in place (venvs are not relocatable) under a lock; `.complete` marks a finished build, so
    an interrupted one is removed and redone.
    """
    import fcntl

    venv = venv_dir()
    done = os.path.join(venv, ".complete")
    if os.path.exists(done):
        return venv_python(venv)
    src = server_dir()
    os.makedirs(cache_dir(), exist_ok=True)
    with open(venv + ".lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(done):
            return venv_python(venv)
        log("building %s from %s (cold: ~5 min, ~670 MB)" % (venv, src))
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([base_python(), "-m", "venv", venv], check=True)
        pip = [venv_python(venv), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        with tempfile.TemporaryDirectory() as work:
            reqs = os.path.join(work, "requirements.txt")
            with open(os.path.join(src, "requirements.txt"), encoding="utf-8") as handle:
                text = requirements_with_overrides(handle.read())
            with open(reqs, "w", encoding="utf-8") as handle:
                handle.write(text)
            subprocess.run(pip + ["--upgrade", "pip", "setuptools", "wheel"], check=True)
            subprocess.run(pip + ["-r", reqs], check=True)
        install_server(venv, src)
        smoke = "import model_engine_server.common.types.gen.openai, celery, fastapi, pycurl, alembic"
        subprocess.run([venv_python(venv), "-c", smoke], check=True, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
        open(done, "w").close()
    log("built %s" % venv)
    return venv_python(venv)


def install_server(venv, src):
    """`pip install -e .` as upstream's Dockerfile does, from a copy inside the venv (the checkout
    may be read-only). Editable matters: `model_engine_server/common/types/gen` has no
    `__init__.py`, so a regular install (find_packages) leaves the generated OpenAPI types out."""
    copy = os.path.join(venv, "src", "model-engine")
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns("tests", "__pycache__", "*.egg-info", "build"))
    subprocess.run([venv_python(venv), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                    "--no-build-isolation", "-e", copy], check=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["build", "python", "key"])
    args = parser.parse_args(argv)
    if args.command == "build":
        print(build())
    elif args.command == "key":
        print(key())
    else:
        python = venv_python()
        if not os.path.exists(os.path.join(venv_dir(), ".complete")):
            print("upstream venv not built: run `python tests/sandbox/upstream_venv.py build`", file=sys.stderr)
            return 1
        print(python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
