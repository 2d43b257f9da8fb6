# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Connection options of every LLM Engine module
    # (argument spec: module_utils/llm_engine.py llm_engine_connection_spec()).
    DOCUMENTATION = r"""
options:
  url:
    description:
      - Base URL of the LLM Engine gateway, for example V(http://model-engine.llm-engine.svc.cluster.local)
        or V(https://llm.example.internal). The module adds C(/v1/llm/...).
      - Falls back to the E(LLM_ENGINE_URL) environment variable.
    type: str
    required: true
  user_id:
    description:
      - LLM Engine user id. Sent as the HTTP Basic username with an empty password, which is how the
        gateway authenticates; endpoints belong to this user id.
      - Treated as a secret, since whoever knows it acts as that user (hosted deployments use an API key
        here). It is never logged, and Ansible masks it wherever it appears in results, for example in
        C(spec.created_by) and in the Kubernetes names the server derives from it.
      - Falls back to the E(LLM_ENGINE_USER_ID) environment variable.
    type: str
    required: true
  validate_certs:
    description:
      - Verify the gateway's TLS certificate. Set to V(false) only for test gateways.
    type: bool
    default: true
  ca_path:
    description:
      - PEM file with the CA certificate(s) that signed the gateway's TLS certificate.
    type: path
  timeout:
    description:
      - Seconds to wait for each HTTP answer. A request that takes longer counts as failed and is
        retried like a connection error.
    type: float
    default: 30
  retries:
    description:
      - Extra attempts for a request that failed with a connection error, a timeout, HTTP 429 or a 5xx
        answer. Waits grow exponentially (up to 1s, 2s, 4s, ... 20s, each at least half of that, randomised
        so clients spread out); a C(Retry-After) answer is waited for as long as the gateway asks, when
        O(retry_budget) allows. Other 4xx answers are never retried.
    type: int
    default: 5
  retry_budget:
    description:
      - Seconds one request may spend on retries in total; no retry starts after the budget is used.
    type: float
    default: 120
notes:
  - The gateway silently drops request fields it does not know, so these modules validate every
    option against the server's rules before sending anything.
"""
