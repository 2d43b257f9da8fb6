"""Fixtures shared by the contract tests."""

import pytest

from tests.contract.servers import require_binary


@pytest.fixture(scope="module")
def redis_binaries():
    """Debian's redis-server and redis-cli (installed by `make deps` from bindep.txt)."""
    return {
        "server": require_binary("redis-server", ["/usr/bin/redis-server"]),
        "cli": require_binary("redis-cli", ["/usr/bin/redis-cli"]),
    }
