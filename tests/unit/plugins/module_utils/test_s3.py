"""Unit tests for module_utils/s3.py: client settings for S3-compatible stores and error messages."""

import botocore.exceptions
import pytest
from ansible_collections.llmops.serving.plugins.module_utils import s3
from botocore.exceptions import ClientError


def params(**over):
    base = {"endpoint_url": "http://127.0.0.1:9000", "region": None, "access_key": "AK", "secret_key": "SK",
            "session_token": None, "ca_bundle": None, "validate_certs": True, "addressing_style": "auto"}
    base.update(over)
    return base


def test_config_for_custom_endpoint_follows_s3_compatible_rules():
    kw = s3.client_config_kwargs(params(), concurrency=32)
    assert kw["request_checksum_calculation"] == "when_required"
    assert kw["response_checksum_validation"] == "when_required"
    assert kw["signature_version"] == "s3v4"
    assert kw["s3"]["addressing_style"] == "path"
    assert kw["s3"]["payload_signing_enabled"] is True
    assert kw["max_pool_connections"] >= 32
    assert kw["region_name"] == "us-east-1"


def test_addressing_style_auto_without_endpoint_and_explicit_choice():
    assert s3.resolve_addressing_style(params(endpoint_url=None)) == "auto"
    assert s3.resolve_addressing_style(params(addressing_style="virtual")) == "virtual"
    assert s3.resolve_region(params(region="eu-west-1")) == "eu-west-1"


@pytest.mark.parametrize("concurrency", [1, 8, 64, 256])
def test_pool_never_smaller_than_concurrency(concurrency):
    assert s3.client_config_kwargs(params(), concurrency)["max_pool_connections"] >= concurrency


def test_validate_connection_params_names_the_option():
    errors = s3.validate_connection_params(params(endpoint_url="minio:9000", secret_key=None,
                                                  ca_bundle="/nonexistent/ca.pem"))
    text = " ".join(errors)
    assert "endpoint_url 'minio:9000'" in text and "http://" in text
    assert "access_key and secret_key" in text
    assert "ca_bundle '/nonexistent/ca.pem'" in text
    assert s3.validate_connection_params(params()) == []


def test_client_kwargs_tls_options(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    assert s3.client_kwargs(params(validate_certs=False))["verify"] is False
    assert s3.client_kwargs(params(ca_bundle=str(ca)))["verify"] == str(ca)
    assert "verify" not in s3.client_kwargs(params())


def test_build_client_applies_settings_without_network():
    client = s3.build_s3_client(params(), concurrency=20)
    cfg = client.meta.config
    assert client.meta.endpoint_url == "http://127.0.0.1:9000"
    assert cfg.request_checksum_calculation == "when_required"
    assert cfg.response_checksum_validation == "when_required"
    assert cfg.s3["addressing_style"] == "path"
    assert cfg.max_pool_connections >= 20
    assert cfg.signature_version == "s3v4"


def test_build_client_rejects_bad_params_before_any_request():
    with pytest.raises(s3.S3ConfigError, match="endpoint_url"):
        s3.build_s3_client(params(endpoint_url="ftp://x"))


def client_error(code, status=400, message="msg"):
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "ListObjectsV2")


@pytest.mark.parametrize("code", ["InvalidAccessKeyId", "SignatureDoesNotMatch"])
def test_bad_credentials_message_names_endpoint_and_bucket(code):
    msg = s3.describe_s3_error(client_error(code, 403), "http://127.0.0.1:9000", "models", "listing")
    assert "credentials were rejected" in msg and code in msg
    assert "http://127.0.0.1:9000" in msg and "'models'" in msg
    assert "SK" not in msg


def test_access_denied_and_missing_bucket_messages():
    msg = s3.describe_s3_error(client_error("AccessDenied", 403), "http://e", "b", "listing")
    assert "access denied" in msg and "'b'" in msg
    msg = s3.describe_s3_error(client_error("NoSuchBucket", 404), "http://e", "b", "listing the bucket")
    assert "create_bucket: true" in msg
    assert s3.error_code(client_error("X")) == "X"
    assert s3.error_code(ClientError({"ResponseMetadata": {"HTTPStatusCode": 403}}, "HeadObject")) == "403"


def test_tls_and_connection_errors_say_what_to_fix():
    ssl = botocore.exceptions.SSLError(endpoint_url="https://e:9000", error="CERTIFICATE_VERIFY_FAILED")
    msg = s3.describe_s3_error(ssl, "https://e:9000", "b", "listing")
    assert "TLS verification failed" in msg and "ca_bundle" in msg and "https://e:9000" in msg
    conn = botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    msg = s3.describe_s3_error(conn, "http://127.0.0.1:1", "b", "listing")
    assert "cannot connect" in msg and "endpoint_url" in msg


def test_connection_spec_marks_secrets_no_log():
    spec = s3.s3_connection_spec()
    for name in ("access_key", "secret_key", "session_token"):
        assert spec[name]["no_log"] is True
    assert spec["addressing_style"]["choices"] == ["auto", "path", "virtual"]
