# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE)
"""Filters for building connection strings; documentation of each filter is in its sidecar file
(database_url.yml) next to this one."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
from urllib.parse import quote, urlencode

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_text

_REQUIRED = ("user", "password", "host", "port", "database")


def _quote(value):
    return quote(to_text(value), safe="")


def database_url(parts, scheme="postgresql", params=None):
    """Return ``scheme://user:password@host:port/database[?params]`` with every part encoded."""
    if not isinstance(parts, dict):
        raise AnsibleFilterError(
            "database_url expects a dictionary with the keys %s, got %s" % (", ".join(_REQUIRED), type(parts).__name__)
        )
    missing = [key for key in _REQUIRED if parts.get(key) in (None, "")]
    if missing:
        raise AnsibleFilterError(
            "database_url: missing or empty %s; pass every one of %s" % (", ".join(missing), ", ".join(_REQUIRED))
        )
    host = to_text(parts["host"])
    if any(char in host for char in "/@?#[] "):
        raise AnsibleFilterError(
            "database_url: host %r must be a bare host name or IP address (no scheme, port or path)" % host
        )
    if ":" in host:
        try:
            host = "[%s]" % ipaddress.IPv6Address(host)
        except ValueError:
            raise AnsibleFilterError(
                "database_url: host %r must be a bare host name or IP address (put the port in 'port')" % host
            ) from None
    try:
        port = int(parts["port"])
    except (TypeError, ValueError):
        port = -1
    if not 0 < port < 65536:
        raise AnsibleFilterError("database_url: port %r is not a TCP port number (1-65535)" % (parts["port"],))
    if not isinstance(params or {}, dict):
        raise AnsibleFilterError("database_url: params must be a dictionary, got %s" % type(params).__name__)
    url = "%s://%s:%s@%s:%d/%s" % (
        scheme, _quote(parts["user"]), _quote(parts["password"]), host, port, _quote(parts["database"])
    )
    if params:
        url += "?" + urlencode(sorted((to_text(k), to_text(v)) for k, v in params.items()))
    return url


class FilterModule(object):
    def filters(self):
        return {"database_url": database_url}
