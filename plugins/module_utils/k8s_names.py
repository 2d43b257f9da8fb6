# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE)
"""Kubernetes name and label rules (k8s.io/apimachinery validation): the one place the collection's
GPU discovery and vLLM decisions check object names, label keys and label values.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

# RFC 1123 label (most object names, namespaces): lower case alphanumerics and '-', at most 63.
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# RFC 1035 label (Service names): as RFC 1123 but starting with a letter.
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# A label value, or the name part of a label key (non-empty there): alphanumerics, '-', '_', '.', at most 63.
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_MAX = 63
# A label key's prefix: a DNS subdomain, at most 253.
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
SUBDOMAIN_MAX = 253


def is_dns1123_label(name):
    return isinstance(name, str) and len(name) <= LABEL_MAX and bool(DNS1123_LABEL.match(name))


def is_dns1035_label(name, limit=LABEL_MAX):
    """An RFC 1035 label of at most ``limit`` characters (callers that append suffixes pass less)."""
    return isinstance(name, str) and len(name) <= limit and bool(DNS1035_LABEL.match(name))


def is_valid_label_value(value):
    return isinstance(value, str) and len(value) <= LABEL_MAX and bool(LABEL_VALUE.match(value))


def is_valid_label_key(key):
    """``name`` or ``prefix/name``; the name is a non-empty label value, the prefix a DNS subdomain."""
    if not isinstance(key, str) or not key or key.count("/") > 1:
        return False
    if "/" in key:
        prefix, name = key.split("/")
        if not prefix or len(prefix) > SUBDOMAIN_MAX or not _DNS1123_SUBDOMAIN.match(prefix):
            return False
    else:
        name = key
    return bool(name) and is_valid_label_value(name)
