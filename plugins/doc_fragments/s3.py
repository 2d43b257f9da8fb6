# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Connection options of every S3 module (argument spec: module_utils/s3.py s3_connection_spec()).
    DOCUMENTATION = r"""
options:
  endpoint_url:
    description:
      - URL of the S3-compatible endpoint, for example V(https://minio.example.internal:9000).
      - Leave unset for AWS S3.
      - With a custom endpoint the client uses path-style addressing (unless O(addressing_style) says
        otherwise), SigV4, and sends checksums only where the API requires them, which is what MinIO,
        Ceph RGW and other S3-compatible stores accept.
      - Falls back to the E(AWS_ENDPOINT_URL_S3) or E(AWS_ENDPOINT_URL) environment variables.
    type: str
    aliases: [s3_url]
  region:
    description:
      - Region used to sign requests.
      - Falls back to E(AWS_REGION) or E(AWS_DEFAULT_REGION), then to V(us-east-1).
    type: str
    aliases: [aws_region]
  access_key:
    description:
      - Access key id.
      - Falls back to E(AWS_ACCESS_KEY_ID), then to the standard boto3 credential chain.
    type: str
    aliases: [aws_access_key_id]
  secret_key:
    description:
      - Secret access key. Never logged or returned.
      - Falls back to E(AWS_SECRET_ACCESS_KEY).
    type: str
    aliases: [aws_secret_access_key]
  session_token:
    description:
      - Session token for temporary credentials.
      - Falls back to E(AWS_SESSION_TOKEN).
    type: str
    aliases: [aws_session_token]
  ca_bundle:
    description:
      - PEM file with the CA certificate(s) that signed the endpoint's TLS certificate.
      - Falls back to E(AWS_CA_BUNDLE).
    type: path
  validate_certs:
    description:
      - Verify the endpoint's TLS certificate. Set to V(false) only for test endpoints.
    type: bool
    default: true
  addressing_style:
    description:
      - Bucket addressing. V(auto) means V(path) when O(endpoint_url) is set, else boto3's default.
    type: str
    default: auto
    choices: [auto, path, virtual]
requirements:
  - boto3 >= 1.36
  - s3transfer >= 0.11.2
"""
