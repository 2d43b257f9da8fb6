"""The database_url filter: every part is encoded so the URL parses back to exactly what went in."""

from urllib.parse import unquote, urlsplit

import psycopg
import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.llmops.serving.plugins.filter.urls import FilterModule, database_url

PARTS = {"user": "llm_engine", "password": "secret", "host": "postgres.llm-engine.svc", "port": 5432,
         "database": "llm_engine"}


def test_plain_url():
    assert database_url(PARTS) == "postgresql://llm_engine:secret@postgres.llm-engine.svc:5432/llm_engine"


@pytest.mark.parametrize("password", [
    "p@ss:w/rd", "100%", "a?b#c", "sp ace", "quo'te\"", "back\\slash", "[brackets]", "ünïcödé", "&=+;,$",
])
def test_password_round_trips(password):
    url = database_url(dict(PARTS, password=password))
    split = urlsplit(url)
    assert unquote(split.password) == password
    assert split.hostname == "postgres.llm-engine.svc" and split.port == 5432
    assert psycopg.conninfo.conninfo_to_dict(url)["password"] == password


def test_user_and_database_are_encoded_too():
    url = database_url(dict(PARTS, user="a@b", database="d/b"))
    assert url.startswith("postgresql://a%40b:secret@")
    assert url.endswith("/d%2Fb")


def test_ipv6_host_is_bracketed():
    assert "@[fd00::1]:5432/" in database_url(dict(PARTS, host="fd00::1"))


def test_params_are_sorted_and_encoded():
    url = database_url(PARTS, params={"sslmode": "verify-full", "application_name": "llm engine"})
    assert url.endswith("?application_name=llm+engine&sslmode=verify-full")


def test_port_given_as_string():
    assert ":6543/" in database_url(dict(PARTS, port="6543"))


@pytest.mark.parametrize("parts, message", [
    ({k: v for k, v in PARTS.items() if k != "password"}, "missing or empty password"),
    (dict(PARTS, host=""), "missing or empty host"),
    (dict(PARTS, host="db:5432"), "put the port in 'port'"),
    (dict(PARTS, host="db/x"), "must be a bare host name"),
    (dict(PARTS, port="http"), "not a TCP port number"),
    (dict(PARTS, port=70000), "not a TCP port number"),
    ("postgresql://x", "expects a dictionary"),
])
def test_bad_input_is_named(parts, message):
    with pytest.raises(AnsibleFilterError, match=message):
        database_url(parts)


def test_registered_name():
    assert FilterModule().filters() == {"database_url": database_url}
