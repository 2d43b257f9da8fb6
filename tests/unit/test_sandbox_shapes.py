"""The sandbox's shape options (tests/sandbox/sandbox.py): LLMOPS_SANDBOX_NODES picks nodes of nodes.yaml,
kept for the sandbox's life; LLMOPS_SANDBOX_S3_TLS gives MinIO a certificate of a private CA of its own.
The guide tests (tests/guides) start their sandboxes with these; here only the choices, without processes."""

import importlib.util
import os

import pytest

from tests.helpers.sandbox import REPO_ROOT

SPEC = importlib.util.spec_from_file_location("sandbox_py", os.path.join(REPO_ROOT, "tests", "sandbox", "sandbox.py"))
sandbox_py = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(sandbox_py)


def test_all_nodes_by_default_and_the_named_ones_otherwise(tmp_path, monkeypatch):
    monkeypatch.delenv("LLMOPS_SANDBOX_NODES", raising=False)
    everything = [n["metadata"]["name"] for n in sandbox_py.selected_nodes(sandbox_py.Sandbox(str(tmp_path / "a")))]
    assert "sbx-l40-k3s" in everything and len(everything) > 2
    monkeypatch.setenv("LLMOPS_SANDBOX_NODES", "sbx-eks-a10g, sbx-cpu-1")
    chosen = sandbox_py.selected_nodes(sandbox_py.Sandbox(str(tmp_path / "b")))
    assert [n["metadata"]["name"] for n in chosen] == [n for n in everything if n in ("sbx-eks-a10g", "sbx-cpu-1")]


def test_an_unknown_node_name_is_refused_with_the_known_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMOPS_SANDBOX_NODES", "sbx-l40-k3s,sbx-nope")
    with pytest.raises(SystemExit) as err:
        sandbox_py.selected_nodes(sandbox_py.Sandbox(str(tmp_path)))
    assert "sbx-nope, not in tests/sandbox/nodes.yaml; choose from sbx-cpu-1" in str(err.value)


def test_the_choice_is_kept_and_another_one_needs_a_purge(tmp_path, monkeypatch):
    sb = sandbox_py.Sandbox(str(tmp_path))
    monkeypatch.setenv("LLMOPS_SANDBOX_NODES", "sbx-l40-k3s")
    sandbox_py.selected_nodes(sb)
    sb.save()
    monkeypatch.setenv("LLMOPS_SANDBOX_NODES", "sbx-cpu-1")
    with pytest.raises(SystemExit) as err:
        sandbox_py.selected_nodes(sandbox_py.Sandbox(str(tmp_path)))
    assert "was started with nodes sbx-l40-k3s, not sbx-cpu-1: purge it first" in str(err.value)


def test_s3_tls_gives_minio_a_certificate_of_its_own_private_ca(tmp_path, monkeypatch):
    from cryptography import x509

    monkeypatch.setenv("LLMOPS_SANDBOX_S3_TLS", "1")
    sb = sandbox_py.Sandbox(str(tmp_path))
    assert sandbox_py.s3_tls(sb)
    monkeypatch.delenv("LLMOPS_SANDBOX_S3_TLS")
    assert sandbox_py.s3_tls(sb), "the choice must stay with the sandbox"
    certs, ca_path = sandbox_py.ensure_s3_pki(sb)
    with open(os.path.join(certs, "public.crt"), "rb") as handle:
        cert = x509.load_pem_x509_certificate(handle.read())
    with open(ca_path, "rb") as handle:
        ca = x509.load_pem_x509_certificate(handle.read())
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert "sandbox-s3-private-ca" in ca.subject.rfc4514_string()
    assert oct(os.stat(os.path.join(certs, "private.key")).st_mode & 0o777) == "0o600"
