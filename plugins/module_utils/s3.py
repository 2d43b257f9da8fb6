# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE)
"""One way to connect to S3-compatible storage for every S3 module of the collection.

``s3_connection_spec()`` is the argument spec documented by the ``llmops.serving.s3`` doc fragment;
``client_config_kwargs()`` decides the botocore settings (pure, unit-tested); ``build_s3_client()``
makes the client; ``describe_s3_error()`` turns botocore exceptions into messages that name the
endpoint, the bucket and the fix.

Settings for S3-compatible stores (MinIO, Ceph RGW, ...):
- checksums ``when_required``: boto3 >= 1.36 otherwise adds CRC32 and ``aws-chunked`` trailers that
  several stores reject. Integrity comes from SigV4 payload signing instead (the SHA-256 of every
  request body is signed; every S3 implementation checks it) and from the SHA-256 per file in our
  manifest.
- path-style addressing and SigV4 whenever a custom endpoint is set.
- a connection pool at least as large as the number of concurrent requests.
- the classic (pure Python) transfer client, never the CRT one, which ignores ``endpoint_url``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible.module_utils.basic import env_fallback

try:
    import boto3
    import botocore
    from botocore.config import Config
    from botocore.exceptions import ClientError

    HAS_BOTO3 = True
    BOTO3_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - exercised only without boto3
    HAS_BOTO3 = False
    BOTO3_IMPORT_ERROR = exc
    ClientError = Exception

DEFAULT_REGION = "us-east-1"
# Requests the client itself may have in flight on top of the transfer workers (listing, HEAD,
# complete/abort calls issued from the coordinating thread).
POOL_HEADROOM = 4
DEFAULT_RETRY_ATTEMPTS = 3


def s3_connection_spec():
    """Argument spec of the connection options (documented in doc_fragments/s3.py)."""
    return dict(
        endpoint_url=dict(type="str", aliases=["s3_url"],
                          fallback=(env_fallback, ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"])),
        region=dict(type="str", aliases=["aws_region"],
                    fallback=(env_fallback, ["AWS_REGION", "AWS_DEFAULT_REGION"])),
        access_key=dict(type="str", aliases=["aws_access_key_id"], no_log=True,
                        fallback=(env_fallback, ["AWS_ACCESS_KEY_ID"])),
        secret_key=dict(type="str", aliases=["aws_secret_access_key"], no_log=True,
                        fallback=(env_fallback, ["AWS_SECRET_ACCESS_KEY"])),
        session_token=dict(type="str", aliases=["aws_session_token"], no_log=True,
                           fallback=(env_fallback, ["AWS_SESSION_TOKEN"])),
        ca_bundle=dict(type="path", fallback=(env_fallback, ["AWS_CA_BUNDLE"])),
        validate_certs=dict(type="bool", default=True),
        addressing_style=dict(type="str", default="auto", choices=["auto", "path", "virtual"]),
    )


class S3ConfigError(ValueError):
    """Connection options that cannot work; the message names the option and the fix."""


def validate_connection_params(params):
    """Check connection options before any request; return a list of error messages."""
    errors = []
    endpoint = params.get("endpoint_url")
    if endpoint and not (endpoint.startswith("http://") or endpoint.startswith("https://")):
        errors.append(
            "endpoint_url %r must start with http:// or https:// (for example https://minio.example:9000)"
            % endpoint
        )
    if bool(params.get("access_key")) != bool(params.get("secret_key")):
        errors.append(
            "access_key and secret_key must be given together (or both left to the AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY environment variables)"
        )
    ca_bundle = params.get("ca_bundle")
    if ca_bundle and not os.path.isfile(ca_bundle):
        errors.append("ca_bundle %r is not a readable file: give the path of the PEM CA certificate" % ca_bundle)
    return errors


def resolve_addressing_style(params):
    style = params.get("addressing_style") or "auto"
    if style == "auto" and params.get("endpoint_url"):
        return "path"
    return style


def resolve_region(params):
    return params.get("region") or DEFAULT_REGION


def client_config_kwargs(params, concurrency):
    """The botocore ``Config`` keyword arguments for these options and this many parallel requests."""
    return dict(
        region_name=resolve_region(params),
        signature_version="s3v4",
        # Sign the SHA-256 of every body, also over HTTPS: the server rejects a body that does not
        # match, which is how corrupted parts are caught. SHA-256 (SHA-NI) is ~4x cheaper than the
        # Content-MD5 alternative and needs no optional checksum support on the server.
        s3={"addressing_style": resolve_addressing_style(params), "payload_signing_enabled": True},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        max_pool_connections=max(int(concurrency), 1) + POOL_HEADROOM,
        retries={"max_attempts": DEFAULT_RETRY_ATTEMPTS, "mode": "standard"},
        tcp_keepalive=True,
    )


def client_kwargs(params):
    """Keyword arguments of ``session.client('s3', ...)`` other than ``config`` (secrets included)."""
    kwargs = {}
    if params.get("endpoint_url"):
        kwargs["endpoint_url"] = params["endpoint_url"]
    if not params.get("validate_certs", True):
        kwargs["verify"] = False
    elif params.get("ca_bundle"):
        kwargs["verify"] = params["ca_bundle"]
    return kwargs


def session_kwargs(params):
    kwargs = {}
    if params.get("access_key"):
        kwargs["aws_access_key_id"] = params["access_key"]
        kwargs["aws_secret_access_key"] = params["secret_key"]
    if params.get("session_token"):
        kwargs["aws_session_token"] = params["session_token"]
    return kwargs


def build_s3_client(params, concurrency=1):
    """A boto3 S3 client for ``params`` (the options of ``s3_connection_spec()``)."""
    errors = validate_connection_params(params)
    if errors:
        raise S3ConfigError("; ".join(errors))
    if not params.get("validate_certs", True):
        try:
            import urllib3

            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        except ImportError:  # pragma: no cover
            pass
    session = boto3.session.Session(**session_kwargs(params))
    config = Config(**client_config_kwargs(params, concurrency))
    return session.client("s3", config=config, **client_kwargs(params))


def error_code(exc):
    """The S3 error code of a ClientError (``NoSuchBucket``, ``403``, ...), else None."""
    response = getattr(exc, "response", None) or {}
    code = (response.get("Error") or {}).get("Code")
    if code:
        return str(code)
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return str(status) if status else None


CREDENTIAL_CODES = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
                    "InvalidClientTokenId", "AuthorizationHeaderMalformed")


def describe_s3_error(exc, endpoint_url, bucket, action):
    """A one-line explanation of ``exc`` naming endpoint, bucket, what we were doing and the fix."""
    where = "endpoint %s, bucket %r" % (endpoint_url or "AWS S3 (no endpoint_url)", bucket)
    if HAS_BOTO3:
        if isinstance(exc, botocore.exceptions.SSLError):
            return ("TLS verification failed while %s (%s): %s. Set ca_bundle to the CA certificate that "
                    "signed the server certificate, or validate_certs: false for a test endpoint"
                    % (action, where, exc))
        if isinstance(exc, botocore.exceptions.NoCredentialsError):
            return ("no S3 credentials while %s (%s): set access_key and secret_key (or AWS_ACCESS_KEY_ID / "
                    "AWS_SECRET_ACCESS_KEY)" % (action, where))
        if isinstance(exc, botocore.exceptions.EndpointConnectionError):
            return ("cannot connect while %s (%s): %s. Check endpoint_url and that the server is running"
                    % (action, where, exc))
        if isinstance(exc, (botocore.exceptions.ConnectTimeoutError, botocore.exceptions.ReadTimeoutError)):
            return "timed out while %s (%s): %s" % (action, where, exc)
    code = error_code(exc) if isinstance(exc, ClientError) else None
    message = ((getattr(exc, "response", None) or {}).get("Error") or {}).get("Message") or str(exc)
    if code in CREDENTIAL_CODES:
        return ("the S3 credentials were rejected (%s) while %s (%s): check access_key/secret_key%s"
                % (code, action, where, "/session_token" if code in ("InvalidToken", "ExpiredToken") else ""))
    if code in ("AccessDenied", "403"):
        return ("access denied while %s (%s): the credentials are wrong or lack permission on this bucket "
                "and prefix (%s)" % (action, where, message))
    if code in ("NoSuchBucket", "404") and "bucket" in action:
        return ("bucket %r does not exist at %s: create it, or set create_bucket: true"
                % (bucket, endpoint_url or "AWS S3"))
    return "S3 error while %s (%s): %s%s" % (action, where, code + ": " if code else "", message)
