"""Offline replacement for the pip bootstrap script ansible-test downloads.

ansible-test fetches a `get-pip` script from its CI file host to put pip into the empty virtual
environments it makes for sanity tests; that host is not reachable from these machines. ansible-test
runs a cached copy if one exists, with `pip install` arguments on the command line. This script does
the same job with what every CPython carries: the bundled pip from `ensurepip`, then `pip install`
with the arguments given (pinned pip and friends from the package index).
"""

import ensurepip
import importlib.util
import os
import subprocess
import sys

ONLY_FOR_GET_PIP = {"--no-setuptools", "--no-wheel"}


def main():
    args = [arg for arg in sys.argv[1:] if arg not in ONLY_FOR_GET_PIP]
    env = dict(os.environ)
    if importlib.util.find_spec("pip") is None:
        ensurepip.bootstrap()
    # ensurepip points PIP_CONFIG_FILE at /dev/null for its own install; the real install must see
    # the machine's pip configuration (index, certificates) again.
    return subprocess.call([sys.executable, "-m", "pip", "install", *args], env=env)


if __name__ == "__main__":
    sys.exit(main())
