"""The cert-manager stand-in: its signing and re-issue decisions (no cluster), then the controller
against the real cert-manager CRDs in the sandbox (marked ``sandbox``)."""

import base64
import datetime
import ipaddress
import time
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.sandbox import cert_manager_standin as cm

NOW = datetime.datetime(2030, 1, 1, 12, 0, 0, 123456, tzinfo=datetime.timezone.utc)
LEAF = {
    "secretName": "leaf-tls", "commonName": "svc.ns.svc", "dnsNames": ["svc", "svc.ns.svc"],
    "ipAddresses": ["127.0.0.1", "::1"], "duration": "720h", "usages": ["server auth", "digital signature"],
    "privateKey": {"algorithm": "ECDSA", "size": 384}, "issuerRef": {"name": "ca", "kind": "Issuer"},
}
CA = {"secretName": "ca-kp", "commonName": "test root", "isCA": True, "duration": "8760h",
      "privateKey": {"algorithm": "ECDSA", "size": 256}, "issuerRef": {"name": "root"}}


def spec(base, **changes):
    out = dict(base)
    out.update(changes)
    return out


def load(data):
    return (x509.load_pem_x509_certificates(data["tls.crt"]),
            serialization.load_pem_private_key(data["tls.key"], password=None),
            x509.load_pem_x509_certificate(data["ca.crt"]))


def ca_signer(now=NOW):
    data = cm.issue(CA, {"type": "selfSigned"}, None, now)
    certs, key, _ca = load(data)
    return {"type": "ca", "certs": certs, "key": key}, data


def secret_of(base, data):
    labels, annotations = cm.secret_metadata({"metadata": {"name": "c"}, "spec": base})
    return {"data": data, "annotations": annotations, "labels": labels}


# ------------------------------------------------------------------------------------ pure logic

@pytest.mark.parametrize("text, seconds", [("2160h", 2160 * 3600), ("1h30m", 5400), ("90m0s", 5400),
                                           ("1.5h", 5400), ("45s", 45), ("2h0m0s", 7200)])
def test_go_durations(text, seconds):
    assert cm.parse_duration(text) == datetime.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["3d", "", "10", "1h 30m", "h"])
def test_bad_durations_are_refused(text):
    with pytest.raises(cm.InvalidSpecError, match="not a Go duration"):
        cm.parse_duration(text)


def test_key_spec_defaults_and_limits():
    assert cm.key_spec({}) == ("RSA", 2048, "PKCS1", "Always")
    assert cm.key_spec({"privateKey": {"algorithm": "ECDSA"}}) == ("ECDSA", 256, "PKCS1", "Always")
    for bad, field in (({"algorithm": "DSA"}, "algorithm"), ({"algorithm": "ECDSA", "size": 255}, "size"),
                       ({"size": 1024}, "size"), ({"encoding": "DER"}, "encoding"),
                       ({"rotationPolicy": "Sometimes"}, "rotationPolicy")):
        with pytest.raises(cm.InvalidSpecError, match="spec.privateKey." + field):
            cm.key_spec({"privateKey": bad})


def test_self_signed_ca_certificate():
    data = cm.issue(CA, {"type": "selfSigned"}, None, NOW)
    [cert], key, ca = load(data)
    assert ca == cert  # a self-signed certificate is its own CA
    cert.verify_directly_issued_by(cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "test root"
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign is True
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size == 256
    assert data["tls.key"].startswith(b"-----BEGIN EC PRIVATE KEY-----")  # PKCS1 (SEC1) by default
    assert cert.not_valid_before_utc == NOW.replace(microsecond=0)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == datetime.timedelta(days=365)


def test_ca_issued_leaf_has_the_requested_names_usages_and_key():
    signer, ca_data = ca_signer()
    data = cm.issue(LEAF, signer, None, NOW)
    certs, key, ca = load(data)
    assert len(certs) == 1  # the self-signed root stays out of tls.crt, like cert-manager
    leaf = certs[0]
    assert data["ca.crt"] == ca_data["tls.crt"]
    leaf.verify_directly_issued_by(ca)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["svc", "svc.ns.svc"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    assert leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.SERVER_AUTH])
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_encipherment and not usage.key_cert_sign
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size == 384
    assert cm.same_public_key(key, leaf)
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == datetime.timedelta(hours=720)


def test_default_rsa_key_pkcs8_and_default_usages():
    signer, _ca = ca_signer()
    data = cm.issue(spec(LEAF, privateKey={"encoding": "PKCS8"}, usages=None), signer, None, NOW)
    [leaf], key, _ca_cert = load(data)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert data["tls.key"].startswith(b"-----BEGIN PRIVATE KEY-----")
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment
    with pytest.raises(x509.ExtensionNotFound):
        leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage)


def test_intermediate_chain_goes_into_tls_crt_and_the_root_into_ca_crt():
    root_signer, root_data = ca_signer()
    inter_data = cm.issue(spec(CA, commonName="intermediate"), root_signer, None, NOW)
    inter_certs, inter_key, _root = load(inter_data)
    assert len(inter_certs) == 1
    signer = {"type": "ca", "certs": inter_certs + root_signer["certs"], "key": inter_key}
    certs, _key, ca = load(cm.issue(LEAF, signer, None, NOW))
    assert [c.subject.rfc4514_string() for c in certs] == ["CN=svc.ns.svc", "CN=intermediate"]
    assert ca == x509.load_pem_x509_certificate(root_data["tls.crt"])


def test_rotation_policy_never_keeps_the_key_always_replaces_it():
    signer, _ca = ca_signer()
    first = cm.issue(LEAF, signer, None, NOW)
    kept = cm.issue(spec(LEAF, privateKey={"algorithm": "ECDSA", "size": 384, "rotationPolicy": "Never"}),
                    signer, first["tls.key"], NOW)
    assert kept["tls.key"] == first["tls.key"] and kept["tls.crt"] != first["tls.crt"]
    assert cm.issue(LEAF, signer, first["tls.key"], NOW)["tls.key"] != first["tls.key"]
    # Never, but the stored key no longer fits the spec: a new one
    resized = cm.issue(spec(LEAF, privateKey={"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Never"}),
                       signer, first["tls.key"], NOW)
    assert resized["tls.key"] != first["tls.key"]


def test_a_current_secret_needs_no_issuance():
    signer, _ca = ca_signer()
    data = cm.issue(LEAF, signer, None, NOW)
    assert cm.issuance_reason(LEAF, secret_of(LEAF, data), NOW + datetime.timedelta(days=19)) is None


@pytest.mark.parametrize("change, reason", [
    ({"dnsNames": ["svc", "svc.ns.svc", "extra"]}, "RequestChanged"),
    ({"ipAddresses": ["127.0.0.1"]}, "RequestChanged"),
    ({"commonName": "other"}, "RequestChanged"),
    ({"usages": ["server auth", "client auth", "digital signature"]}, "RequestChanged"),
    ({"duration": "721h"}, "RequestChanged"),
    ({"isCA": True}, "RequestChanged"),
    ({"privateKey": {"algorithm": "ECDSA", "size": 256}}, "SecretMismatch"),
    ({"privateKey": {"algorithm": "ECDSA", "size": 384, "encoding": "PKCS8"}}, "SecretMismatch"),
    ({"issuerRef": {"name": "other-ca", "kind": "Issuer"}}, "IncorrectIssuer"),
    ({"issuerRef": {"name": "ca", "kind": "ClusterIssuer"}}, "IncorrectIssuer"),
])
def test_spec_changes_trigger_issuance(change, reason):
    signer, _ca = ca_signer()
    secret = secret_of(LEAF, cm.issue(LEAF, signer, None, NOW))
    got = cm.issuance_reason(spec(LEAF, **change), secret, NOW)
    assert got is not None and got[0] == reason, got


def test_broken_or_missing_secret_and_due_renewal_trigger_issuance():
    signer, _ca = ca_signer()
    data = cm.issue(LEAF, signer, None, NOW)
    other = cm.issue(LEAF, signer, None, NOW)
    cases = [
        (None, NOW, "DoesNotExist"),
        ({"data": {"tls.crt": data["tls.crt"]}}, NOW, "MissingData"),
        ({"data": {"tls.crt": b"garbage", "tls.key": data["tls.key"]}}, NOW, "InvalidKeyPair"),
        ({"data": dict(data, **{"tls.key": other["tls.key"]})}, NOW, "InvalidKeyPair"),
        # 720h lifetime: renewal at two thirds (day 20), expiry at day 30
        (secret_of(LEAF, data), NOW + datetime.timedelta(days=20, seconds=1), "Renewing"),
        (secret_of(LEAF, data), NOW + datetime.timedelta(days=31), "Expired"),
    ]
    for secret, when, reason in cases:
        got = cm.issuance_reason(LEAF, secret, when)
        assert got is not None and got[0] == reason, (reason, got)


def test_renewal_time():
    signer, _ca = ca_signer()
    leaf = load(cm.issue(LEAF, signer, None, NOW))[0][0]
    start = NOW.replace(microsecond=0)
    assert cm.renewal_time(LEAF, leaf) == start + datetime.timedelta(days=20)
    assert cm.renewal_time(spec(LEAF, renewBefore="48h"), leaf) == start + datetime.timedelta(days=28)
    assert cm.renewal_time(spec(LEAF, renewBeforePercentage=50), leaf) == start + datetime.timedelta(days=15)


def test_issuer_readiness():
    signer, ca_data = ca_signer()
    leaf_data = cm.issue(LEAF, signer, None, NOW)
    ca_spec = {"ca": {"secretName": "ca-kp"}}
    assert cm.issuer_readiness({"selfSigned": {}}, None) == ("True", "IsReady", "")
    assert cm.issuer_readiness({"acme": {}}, None) is None
    assert cm.issuer_readiness(ca_spec, {"data": ca_data})[:2] == ("True", "KeyPairVerified")
    status, reason, message = cm.issuer_readiness(ca_spec, None)
    assert (status, reason) == ("False", "ErrGetKeyPair") and 'secret "ca-kp" not found' in message
    assert cm.issuer_readiness(ca_spec, {"data": {"tls.crt": ca_data["tls.crt"]}})[:2] == ("False", "ErrInvalidKeyPair")
    mixed = {"tls.crt": ca_data["tls.crt"], "tls.key": leaf_data["tls.key"]}
    assert cm.issuer_readiness(ca_spec, {"data": mixed})[1:] == (
        "ErrInvalidKeyPair", "Error getting keypair for CA issuer: key and certificate differ")
    assert cm.issuer_readiness(ca_spec, {"data": leaf_data})[2].endswith("certificate is not a CA")


@pytest.mark.parametrize("change, field", [
    ({"duration": "30m"}, "1h minimum"), ({"renewBefore": "800h"}, "renewBefore"),
    ({"usages": ["server auth", "flying"]}, "spec.usages"), ({"usages": ["encipher only"]}, "spec.usages"),
    ({"commonName": None, "dnsNames": None, "ipAddresses": None}, "at least one"),
    ({"ipAddresses": ["300.1.1.1"]}, "spec.ipAddresses"), ({"secretName": ""}, "secretName"),
])
def test_invalid_specs_are_refused(change, field):
    with pytest.raises(cm.InvalidSpecError, match=field):
        cm.validate(spec(LEAF, **change))


def test_ready_condition_keeps_its_transition_time_while_the_status_holds():
    first = cm.condition([], "False", "IssuerNotFound", "m", 1, NOW)
    same = cm.condition([first], "False", "IssuerNotReady", "m2", 2, NOW + datetime.timedelta(minutes=5))
    flipped = cm.condition([same], "True", "Ready", "ok", 2, NOW + datetime.timedelta(minutes=9))
    assert same["lastTransitionTime"] == first["lastTransitionTime"] == "2030-01-01T12:00:00Z"
    assert flipped["lastTransitionTime"] == "2030-01-01T12:09:00Z" and flipped["observedGeneration"] == 2


# ------------------------------------------------------------------------- against the real CRDs

@pytest.fixture(scope="module")
def cluster(sandbox_env):
    from kubernetes import client

    from tests.helpers.sandbox import kube_client
    from tests.sandbox import crds

    crds.install("cert-manager", sandbox_env)
    api_client = kube_client()
    core, custom = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
    namespace = "sbx-cm-" + uuid.uuid4().hex[:6]
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    try:
        with cm.running(sandbox_env, resync=1.0):
            yield {"core": core, "custom": custom, "ns": namespace, "client": client}
    finally:
        core.delete_namespace(namespace)
        with _suppress_404(client):
            custom.delete_cluster_custom_object(cm.GROUP, cm.VERSION, "clusterissuers", "sbx-cm-selfsigned")
        crds.remove("cert-manager", sandbox_env)


class _suppress_404:  # noqa: N801 - used like contextlib.suppress
    def __init__(self, client):
        self.client = client

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, _tb):
        return isinstance(exc, self.client.exceptions.ApiException) and exc.status == 404


def create(cluster, plural, name, body_spec, namespaced=True):
    kind = {"issuers": "Issuer", "clusterissuers": "ClusterIssuer", "certificates": "Certificate"}[plural]
    body = {"apiVersion": "cert-manager.io/v1", "kind": kind, "metadata": {"name": name}, "spec": body_spec}
    if namespaced:
        return cluster["custom"].create_namespaced_custom_object(cm.GROUP, cm.VERSION, cluster["ns"], plural, body)
    return cluster["custom"].create_cluster_custom_object(cm.GROUP, cm.VERSION, plural, body)


def get(cluster, plural, name):
    return cluster["custom"].get_namespaced_custom_object(cm.GROUP, cm.VERSION, cluster["ns"], plural, name)


def ready(obj):
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), {})


def wait_for(predicate, what, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.2)


def wait_ready(cluster, name, revision=None):
    def check():
        obj = get(cluster, "certificates", name)
        ok = ready(obj).get("status") == "True" and (revision is None or obj["status"].get("revision") == revision)
        return obj if ok else None
    return wait_for(check, "Certificate %s Ready (revision %s)" % (name, revision))


def secret(cluster, name):
    obj = cluster["core"].read_namespaced_secret(name, cluster["ns"])
    return obj, {k: base64.b64decode(v) for k, v in obj.data.items()}


@pytest.mark.sandbox
def test_ca_chain_issues_reissues_and_reports(cluster):
    ns = cluster["ns"]
    create(cluster, "issuers", "root", {"selfSigned": {}})
    create(cluster, "certificates", "ca", CA)
    create(cluster, "issuers", "ca", {"ca": {"secretName": "ca-kp"}})
    leaf_spec = spec(LEAF, secretTemplate={"labels": {"team": "sbx"}})
    create(cluster, "certificates", "leaf", leaf_spec)

    leaf = wait_ready(cluster, "leaf", revision=1)
    assert ready(get(cluster, "issuers", "ca"))["reason"] == "KeyPairVerified"
    obj, data = secret(cluster, "leaf-tls")
    assert obj.type == "kubernetes.io/tls" and set(data) == {"tls.crt", "tls.key", "ca.crt"}
    assert obj.metadata.labels["team"] == "sbx"
    assert obj.metadata.annotations["cert-manager.io/issuer-name"] == "ca"
    assert obj.metadata.annotations["cert-manager.io/certificate-name"] == "leaf"
    [cert], key, ca = load(data)
    cert.verify_directly_issued_by(ca)
    assert data["ca.crt"] == secret(cluster, "ca-kp")[1]["tls.crt"]
    assert cm.same_public_key(key, cert)
    assert leaf["status"]["notAfter"] == cm.rfc3339(cert.not_valid_after_utc)
    assert leaf["status"]["renewalTime"] == cm.rfc3339(cm.renewal_time(leaf_spec, cert))

    # nothing to do: the Secret is not written again across several resyncs
    version = obj.metadata.resource_version
    time.sleep(3)
    assert secret(cluster, "leaf-tls")[0].metadata.resource_version == version
    assert get(cluster, "certificates", "leaf")["status"]["revision"] == 1

    # a spec change re-issues
    cluster["custom"].patch_namespaced_custom_object(
        cm.GROUP, cm.VERSION, ns, "certificates", "leaf", {"spec": {"dnsNames": ["svc", "svc.ns.svc", "new.name"]}})
    wait_ready(cluster, "leaf", revision=2)
    cert = load(secret(cluster, "leaf-tls")[1])[0][0]
    assert "new.name" in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName)

    # a deleted Secret comes back
    cluster["core"].delete_namespaced_secret("leaf-tls", ns)
    wait_ready(cluster, "leaf", revision=3)
    assert load(secret(cluster, "leaf-tls")[1])[2] == ca


@pytest.mark.sandbox
def test_missing_and_unready_issuers_are_reported(cluster):
    create(cluster, "certificates", "orphan", spec(LEAF, secretName="orphan-tls", issuerRef={"name": "nope"}))
    orphan = wait_for(lambda: ready(get(cluster, "certificates", "orphan")).get("reason") == "IssuerNotFound"
                      and get(cluster, "certificates", "orphan"), "IssuerNotFound")
    assert ready(orphan)["status"] == "False" and 'Issuer "nope" not found' in ready(orphan)["message"]

    create(cluster, "issuers", "nope", {"ca": {"secretName": "no-such-secret"}})
    wait_for(lambda: ready(get(cluster, "certificates", "orphan")).get("reason") == "IssuerNotReady", "IssuerNotReady")
    issuer = ready(get(cluster, "issuers", "nope"))
    assert (issuer["status"], issuer["reason"]) == ("False", "ErrGetKeyPair")
    with pytest.raises(cluster["client"].exceptions.ApiException):
        cluster["core"].read_namespaced_secret("orphan-tls", cluster["ns"])

    # the CA arrives: the issuer turns ready and the Certificate is issued
    _signer, ca_data = ca_signer(datetime.datetime.now(datetime.timezone.utc))
    cluster["core"].create_namespaced_secret(cluster["ns"], cluster["client"].V1Secret(
        metadata=cluster["client"].V1ObjectMeta(name="no-such-secret"), type="kubernetes.io/tls",
        data={k: base64.b64encode(v).decode() for k, v in ca_data.items()}))
    wait_ready(cluster, "orphan", revision=1)


@pytest.mark.sandbox
def test_cluster_issuer(cluster):
    create(cluster, "clusterissuers", "sbx-cm-selfsigned", {"selfSigned": {}}, namespaced=False)
    create(cluster, "certificates", "by-cluster-issuer", spec(
        LEAF, secretName="cluster-issued", issuerRef={"name": "sbx-cm-selfsigned", "kind": "ClusterIssuer"}))
    wait_ready(cluster, "by-cluster-issuer", revision=1)
    obj, data = secret(cluster, "cluster-issued")
    assert obj.metadata.annotations["cert-manager.io/issuer-kind"] == "ClusterIssuer"
    assert data["ca.crt"] == data["tls.crt"]  # self-signed: the certificate is its own CA
