"""Drills run against the sandbox named by LLMOPS_SANDBOX_DIR (default: the checkout's .sandbox)."""

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.drill)
        item.add_marker(pytest.mark.sandbox)
