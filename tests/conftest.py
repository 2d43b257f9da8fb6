"""Shared pytest setup: import the collection as ``ansible_collections.llmops.serving``.

The checkout is linked into ``.collections/ansible_collections/llmops/serving`` (see the Makefile's
``collection-link``), and that directory is put on ``sys.path`` so module_utils import exactly as
they do when Ansible runs them.
"""

import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS_DIR = os.path.join(REPO_ROOT, ".collections")


def _link_collection():
    target_parent = os.path.join(COLLECTIONS_DIR, "ansible_collections", "llmops")
    link = os.path.join(target_parent, "serving")
    if not os.path.exists(link):
        os.makedirs(target_parent, exist_ok=True)
        try:
            os.symlink(REPO_ROOT, link)
        except FileExistsError:
            pass
    if COLLECTIONS_DIR not in sys.path:
        sys.path.insert(0, COLLECTIONS_DIR)
    # ansible_collections is a namespace package spread over .collections and site-packages
    # (where the `ansible` package keeps kubernetes.core); drop a cached single-path import.
    mod = sys.modules.get("ansible_collections")
    if mod is not None and hasattr(mod, "__path__"):
        path = os.path.join(COLLECTIONS_DIR, "ansible_collections")
        if path not in list(mod.__path__):
            mod.__path__.append(path)


_link_collection()


import pytest  # noqa: E402 - after the collection link is on sys.path


@pytest.fixture(scope="session")
def sandbox_env():
    """The running sandbox's env file as a dict (fails with the fix when it is not up)."""
    from tests.helpers.sandbox import load_env

    return load_env()
