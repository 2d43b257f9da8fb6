#!/usr/bin/env python
"""cert-manager stand-in for the sandbox: issues Certificates for ``ca`` and ``selfSigned`` issuers.

THIS IS A TEST STAND-IN, NOT PART OF THE COLLECTION. The real cert-manager controller cannot be
built here (its cmd/controller module is not on the Go module proxy), so tests that need the
"cert-manager is installed" path install the real cert-manager CRDs (``tests/sandbox/crds.py
install cert-manager``) and run this process next to them. It watches Certificates, Issuers,
ClusterIssuers and Secrets with the Kubernetes client and, like cert-manager:

- sets Issuer/ClusterIssuer ``status.conditions`` Ready: ``selfSigned`` always (IsReady); ``ca`` when
  ``spec.ca.secretName`` holds a CA certificate with its matching key (KeyPairVerified), otherwise
  Ready=False (ErrGetKeyPair / ErrInvalidKeyPair). ClusterIssuers read their Secret from the
  cluster resource namespace (``--cluster-resource-namespace``, default ``cert-manager``);
- issues a Certificate into its ``spec.secretName`` Secret (type kubernetes.io/tls: ``tls.crt``,
  ``tls.key``, ``ca.crt``) with the requested commonName, subject, dnsNames, ipAddresses, uris,
  emailAddresses, isCA, usages, duration and privateKey (algorithm, size, encoding,
  rotationPolicy); ``secretTemplate`` labels/annotations and cert-manager's annotations and
  ``controller.cert-manager.io/fao`` label go on the Secret. ``tls.crt`` holds the chain without a
  self-signed root, ``ca.crt`` the root (for ``selfSigned``: the certificate itself);
- (re)issues only when needed: the Secret is missing or broken, its key does not match the
  private key spec or the certificate, its issuer annotations name another issuer, the certificate
  does not match the spec (names, usages, isCA, duration), or it is due for renewal
  (``renewBefore``, ``renewBeforePercentage``, default a third of the duration);
- sets Certificate ``status``: condition Ready, ``notBefore``, ``notAfter``, ``renewalTime``, and
  ``revision`` (+1 per issuance). When it must issue but the issuer is missing, not ready or of a type
  it does not implement, Ready=False with reason IssuerNotFound / IssuerNotReady /
  IssuerNotSupported (real cert-manager reports that on the CertificateRequest).

Not implemented: CertificateRequests (the stand-in signs directly), ACME/Vault/Venafi issuers,
external issuer groups (ignored), keystores, additionalOutputFormats, nameConstraints, literalSubject,
the webhook's validation (an invalid spec gives Ready=False, reason InvalidSpecError), clamping notAfter to
the CA's expiry, and owner references on Secrets.

    python tests/sandbox/cert_manager_standin.py --kubeconfig .sandbox/admin.kubeconfig

Tests use ``running(env)``. The process prints ``cert-manager stand-in: watching`` once its watches
run, logs one line per issuance and never logs key material.
"""

import argparse
import base64
import contextlib
import datetime
import ipaddress
import os
import re
import subprocess
import sys
import threading
import time

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

GROUP = "cert-manager.io"
VERSION = "v1"
FIELD_MANAGER = "cert-manager-certificates-issuing"
DEFAULT_DURATION = datetime.timedelta(hours=2160)
DEFAULT_USAGES = ("digital signature", "key encipherment")
ECDSA_CURVES = {256: ec.SECP256R1, 384: ec.SECP384R1, 521: ec.SECP521R1}
KEY_USAGES = {  # cert-manager usage name -> x509.KeyUsage argument
    "signing": "digital_signature", "digital signature": "digital_signature",
    "content commitment": "content_commitment", "key encipherment": "key_encipherment",
    "key agreement": "key_agreement", "data encipherment": "data_encipherment",
    "cert sign": "key_cert_sign", "crl sign": "crl_sign", "encipher only": "encipher_only",
    "decipher only": "decipher_only",
}
EXT_KEY_USAGES = {
    "any": ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE, "server auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "client auth": ExtendedKeyUsageOID.CLIENT_AUTH, "code signing": ExtendedKeyUsageOID.CODE_SIGNING,
    "email protection": ExtendedKeyUsageOID.EMAIL_PROTECTION, "s/mime": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "timestamping": ExtendedKeyUsageOID.TIME_STAMPING, "ocsp signing": ExtendedKeyUsageOID.OCSP_SIGNING,
    "ipsec end system": x509.ObjectIdentifier("1.3.6.1.5.5.7.3.5"),
    "ipsec tunnel": x509.ObjectIdentifier("1.3.6.1.5.5.7.3.6"),
    "ipsec user": x509.ObjectIdentifier("1.3.6.1.5.5.7.3.7"),
}
SUBJECT_FIELDS = (("organizations", NameOID.ORGANIZATION_NAME), ("countries", NameOID.COUNTRY_NAME),
                  ("organizationalUnits", NameOID.ORGANIZATIONAL_UNIT_NAME), ("localities", NameOID.LOCALITY_NAME),
                  ("provinces", NameOID.STATE_OR_PROVINCE_NAME), ("streetAddresses", NameOID.STREET_ADDRESS),
                  ("postalCodes", NameOID.POSTAL_CODE))


class InvalidSpecError(ValueError):
    """A Certificate spec the real cert-manager webhook would refuse."""


# ----------------------------------------------------------------------------------- pure logic

def parse_duration(text):
    """A Go duration ("2160h", "1h30m", "90m0s", "1.5h") as a timedelta."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)", text or "")
    if not parts or "".join(n + u for n, u in parts) != text:
        raise InvalidSpecError("duration %r is not a Go duration such as 2160h or 90m" % (text,))
    return datetime.timedelta(seconds=sum(float(n) * units[u] for n, u in parts))


def key_spec(spec):
    """(algorithm, size, encoding, rotationPolicy) of spec.privateKey with cert-manager's defaults."""
    private_key = spec.get("privateKey") or {}
    algorithm = private_key.get("algorithm") or "RSA"
    size = private_key.get("size")
    if algorithm == "RSA":
        size = size or 2048
        if not 2048 <= size <= 8192:
            raise InvalidSpecError("spec.privateKey.size %s: RSA keys must be 2048 to 8192 bits" % size)
    elif algorithm == "ECDSA":
        size = size or 256
        if size not in ECDSA_CURVES:
            raise InvalidSpecError("spec.privateKey.size %s: ECDSA keys must be 256, 384 or 521 bits" % size)
    elif algorithm == "Ed25519":
        size = 0
    else:
        raise InvalidSpecError("spec.privateKey.algorithm %r: use RSA, ECDSA or Ed25519" % algorithm)
    encoding = private_key.get("encoding") or "PKCS1"
    if encoding not in ("PKCS1", "PKCS8"):
        raise InvalidSpecError("spec.privateKey.encoding %r: use PKCS1 or PKCS8" % encoding)
    rotation = private_key.get("rotationPolicy") or "Always"
    if rotation not in ("Always", "Never"):
        raise InvalidSpecError("spec.privateKey.rotationPolicy %r: use Always or Never" % rotation)
    return algorithm, size, encoding, rotation


def generate_key(algorithm, size):
    if algorithm == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=size)
    if algorithm == "ECDSA":
        return ec.generate_private_key(ECDSA_CURVES[size]())
    return ed25519.Ed25519PrivateKey.generate()


def key_matches(key, algorithm, size):
    if algorithm == "RSA":
        return isinstance(key, rsa.RSAPrivateKey) and key.key_size == size
    if algorithm == "ECDSA":
        return isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size == size
    return isinstance(key, ed25519.Ed25519PrivateKey)


def encode_key(key, encoding):
    """PEM of the key: PKCS1 is the traditional form (RSA/EC PRIVATE KEY); Ed25519 is always PKCS8."""
    pkcs8 = encoding == "PKCS8" or isinstance(key, ed25519.Ed25519PrivateKey)
    fmt = serialization.PrivateFormat.PKCS8 if pkcs8 else serialization.PrivateFormat.TraditionalOpenSSL
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def same_public_key(key, cert):
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key.public_key().public_bytes(*spki) == cert.public_key().public_bytes(*spki)


def key_encoding(pem):
    return "PKCS8" if b"-----BEGIN PRIVATE KEY-----" in pem else "PKCS1"


def _hash_for(signer_key):
    if isinstance(signer_key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(signer_key, ec.EllipticCurvePrivateKey):
        return {256: hashes.SHA256, 384: hashes.SHA384}.get(signer_key.curve.key_size, hashes.SHA512)()
    return hashes.SHA256() if signer_key.key_size < 3072 else (
        hashes.SHA384() if signer_key.key_size < 4096 else hashes.SHA512())


def subject_name(spec):
    attributes = []
    for field, oid in SUBJECT_FIELDS:
        attributes += [x509.NameAttribute(oid, value) for value in (spec.get("subject") or {}).get(field) or []]
    if spec.get("commonName"):
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, spec["commonName"]))
    return x509.Name(attributes)


def requested_sans(spec):
    """The SubjectAlternativeName entries the spec asks for, in a comparable form."""
    names = [x509.DNSName(name) for name in spec.get("dnsNames") or []]
    try:
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in spec.get("ipAddresses") or []]
    except ValueError as exc:
        raise InvalidSpecError("spec.ipAddresses: %s" % exc) from exc
    names += [x509.UniformResourceIdentifier(uri) for uri in spec.get("uris") or []]
    names += [x509.RFC822Name(mail) for mail in spec.get("emailAddresses") or []]
    return names


def requested_usages(spec):
    """(x509.KeyUsage, [ExtendedKeyUsage OIDs]) for spec.usages and spec.isCA."""
    usages = list(spec.get("usages") or DEFAULT_USAGES)
    unknown = [u for u in usages if u not in KEY_USAGES and u not in EXT_KEY_USAGES]
    if unknown:
        raise InvalidSpecError("spec.usages %s: not a cert-manager key usage" % unknown)
    flags = dict.fromkeys(set(KEY_USAGES.values()), False)
    for usage in usages:
        if usage in KEY_USAGES:
            flags[KEY_USAGES[usage]] = True
    if spec.get("isCA"):
        flags["key_cert_sign"] = True
    try:
        key_usage = x509.KeyUsage(**flags)
    except ValueError as exc:
        raise InvalidSpecError("spec.usages %s: %s" % (usages, exc)) from exc
    ext = []
    for usage in usages:
        if usage in EXT_KEY_USAGES and EXT_KEY_USAGES[usage] not in ext:
            ext.append(EXT_KEY_USAGES[usage])
    return key_usage, ext


def validate(spec):
    """Raise InvalidSpecError for what cert-manager's webhook would refuse; return the duration."""
    if not spec.get("secretName"):
        raise InvalidSpecError("spec.secretName is required")
    if not (spec.get("issuerRef") or {}).get("name"):
        raise InvalidSpecError("spec.issuerRef.name is required")
    sans = requested_sans(spec)
    if not (spec.get("commonName") or sans):
        raise InvalidSpecError("set at least one of spec.commonName, dnsNames, ipAddresses, uris, emailAddresses")
    if len(spec.get("commonName") or "") > 64:
        raise InvalidSpecError("spec.commonName is longer than 64 characters")
    key_spec(spec)
    requested_usages(spec)
    duration = parse_duration(spec["duration"]) if spec.get("duration") else DEFAULT_DURATION
    if duration < datetime.timedelta(hours=1):
        raise InvalidSpecError("spec.duration %s is below the 1h minimum" % spec["duration"])
    if spec.get("renewBefore") and parse_duration(spec["renewBefore"]) >= duration:
        raise InvalidSpecError("spec.renewBefore %s must be shorter than spec.duration" % spec["renewBefore"])
    return duration


def build_certificate(spec, public_key, signer_key, issuer_cert, now):
    """Sign a certificate for the spec; ``issuer_cert`` None means self-signed by ``signer_key``."""
    duration = validate(spec)
    now = now.replace(microsecond=0)  # X.509 times have whole seconds; the duration must stay exact
    subject = subject_name(spec)
    key_usage, ext_usages = requested_usages(spec)
    builder = (x509.CertificateBuilder()
               .subject_name(subject)
               .issuer_name(issuer_cert.subject if issuer_cert is not None else subject)
               .public_key(public_key)
               .serial_number(x509.random_serial_number())
               .not_valid_before(now)
               .not_valid_after(now + duration)
               .add_extension(x509.BasicConstraints(ca=bool(spec.get("isCA")), path_length=None), critical=True)
               .add_extension(key_usage, critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))
    if ext_usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(ext_usages), critical=False)
    sans = requested_sans(spec)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=not subject)
    authority = issuer_cert.public_key() if issuer_cert is not None else public_key
    builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(authority), critical=False)
    return builder.sign(signer_key, _hash_for(signer_key))


def _pem(certs):
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)


def _self_signed(cert):
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def issue(spec, signer, existing_key_pem, now):
    """The Secret data (bytes) of a new issuance.

    ``signer``: {"type": "selfSigned"} or {"type": "ca", "certs": [CA cert, chain...], "key": CA key}.
    The private key is reused only with rotationPolicy Never and a stored key that fits the spec.
    """
    algorithm, size, encoding, rotation = key_spec(spec)
    key = None
    if rotation == "Never" and existing_key_pem:
        with contextlib.suppress(ValueError, TypeError):
            key = serialization.load_pem_private_key(existing_key_pem, password=None)
        if key is not None and not key_matches(key, algorithm, size):
            key = None
    key = key or generate_key(algorithm, size)
    if signer["type"] == "selfSigned":
        cert = build_certificate(spec, key.public_key(), key, None, now)
        chain, ca = [cert], cert
    else:
        ca_chain = list(signer["certs"])
        cert = build_certificate(spec, key.public_key(), signer["key"], ca_chain[0], now)
        ca = ca_chain[-1]
        chain = [cert] + (ca_chain[:-1] if _self_signed(ca) else ca_chain)
    return {"tls.crt": _pem(chain), "tls.key": encode_key(key, encoding), "ca.crt": _pem([ca])}


def renewal_time(spec, cert):
    """When cert-manager renews: notAfter - renewBefore (default a third of the lifetime)."""
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    if spec.get("renewBefore"):
        before = parse_duration(spec["renewBefore"])
    elif spec.get("renewBeforePercentage"):
        before = lifetime * int(spec["renewBeforePercentage"]) / 100
    else:
        before = lifetime / 3
    if before >= lifetime:
        before = lifetime / 3
    return cert.not_valid_after_utc - before


def _ext(cert, cls):
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def certificate_mismatches(spec, cert):
    """Names of the spec fields the issued certificate does not match."""
    fields = []
    if cert.subject != subject_name(spec):
        fields.append("spec.commonName/spec.subject")
    san = _ext(cert, x509.SubjectAlternativeName)
    have = sorted(map(repr, list(san) if san else []))
    if have != sorted(map(repr, requested_sans(spec))):
        fields.append("spec.dnsNames/ipAddresses/uris/emailAddresses")
    constraints = _ext(cert, x509.BasicConstraints)
    if bool(constraints and constraints.ca) != bool(spec.get("isCA")):
        fields.append("spec.isCA")
    key_usage, ext_usages = requested_usages(spec)
    eku = _ext(cert, x509.ExtendedKeyUsage)
    if _ext(cert, x509.KeyUsage) != key_usage or sorted(o.dotted_string for o in (eku or [])) != sorted(
            o.dotted_string for o in ext_usages):
        fields.append("spec.usages")
    duration = parse_duration(spec["duration"]) if spec.get("duration") else DEFAULT_DURATION
    if cert.not_valid_after_utc - cert.not_valid_before_utc != duration:
        fields.append("spec.duration")
    return fields


def issuance_reason(spec, secret, now):
    """Why the Certificate must be (re)issued, as (reason, message), or None when the Secret is current.

    ``secret``: None, or {"data": {key: bytes}, "annotations": {...}}.
    """
    if secret is None:
        return "DoesNotExist", "Issuing certificate as Secret does not exist"
    data = secret.get("data") or {}
    if not data.get("tls.crt") or not data.get("tls.key"):
        return "MissingData", "Issuing certificate as Secret does not contain a certificate and private key"
    try:
        cert = x509.load_pem_x509_certificate(data["tls.crt"])
        key = serialization.load_pem_private_key(data["tls.key"], password=None)
    except (ValueError, TypeError):
        return "InvalidKeyPair", "Issuing certificate as Secret contains invalid certificate or key data"
    if not same_public_key(key, cert):
        return "InvalidKeyPair", "Issuing certificate as Secret holds a private key that does not match the certificate"
    algorithm, size, encoding, _rotation = key_spec(spec)
    if not key_matches(key, algorithm, size) or key_encoding(data["tls.key"]) != encoding:
        return "SecretMismatch", "Existing private key is not up to date for spec: [spec.privateKey]"
    ref = spec["issuerRef"]
    annotations = secret.get("annotations") or {}
    for key_name, wanted in (("cert-manager.io/issuer-name", ref["name"]),
                             ("cert-manager.io/issuer-kind", ref.get("kind") or "Issuer"),
                             ("cert-manager.io/issuer-group", ref.get("group") or GROUP)):
        # like cert-manager, only annotations that are present are compared
        if key_name in annotations and annotations[key_name] != wanted:
            return "IncorrectIssuer", "Issuing certificate as Secret was previously issued by %s %s" % (
                annotations.get("cert-manager.io/issuer-kind", "Issuer"),
                annotations.get("cert-manager.io/issuer-name"))
    mismatches = certificate_mismatches(spec, cert)
    if mismatches:
        return "RequestChanged", "Fields on existing certificate not up to date: %s" % mismatches
    if cert.not_valid_after_utc <= now:
        return "Expired", "Certificate expired on %s" % rfc3339(cert.not_valid_after_utc)
    when = renewal_time(spec, cert)
    if when <= now:
        return "Renewing", "Renewing certificate as renewal was scheduled at %s" % rfc3339(when)
    return None


def secret_metadata(cert_obj):
    """Labels and annotations cert-manager puts on the Secret of a Certificate."""
    spec = cert_obj["spec"]
    ref = spec["issuerRef"]
    template = spec.get("secretTemplate") or {}
    labels = dict(template.get("labels") or {})
    labels["controller.cert-manager.io/fao"] = "true"
    annotations = dict(template.get("annotations") or {})
    annotations.update({
        "cert-manager.io/certificate-name": cert_obj["metadata"]["name"],
        "cert-manager.io/issuer-name": ref["name"],
        "cert-manager.io/issuer-kind": ref.get("kind") or "Issuer",
        "cert-manager.io/issuer-group": ref.get("group") or GROUP,
        "cert-manager.io/common-name": spec.get("commonName") or "",
        "cert-manager.io/alt-names": ",".join(spec.get("dnsNames") or []),
        "cert-manager.io/ip-sans": ",".join(spec.get("ipAddresses") or []),
        "cert-manager.io/uri-sans": ",".join(spec.get("uris") or []),
    })
    return labels, annotations


def issuer_readiness(issuer_spec, ca_secret):
    """(status, reason, message) of an Issuer; None for issuer types the stand-in does not implement."""
    if "selfSigned" in issuer_spec:
        return "True", "IsReady", ""
    if "ca" not in issuer_spec:
        return None
    name = (issuer_spec["ca"] or {}).get("secretName")
    if ca_secret is None:
        return "False", "ErrGetKeyPair", 'Error getting keypair for CA issuer: secret "%s" not found' % name
    try:
        certs = x509.load_pem_x509_certificates(ca_secret["data"]["tls.crt"])
        key = serialization.load_pem_private_key(ca_secret["data"]["tls.key"], password=None)
    except (KeyError, ValueError, TypeError):
        return ("False", "ErrInvalidKeyPair",
                "Error getting keypair for CA issuer: secret %s has no valid tls.crt/tls.key" % name)
    if not same_public_key(key, certs[0]):
        return "False", "ErrInvalidKeyPair", "Error getting keypair for CA issuer: key and certificate differ"
    constraints = _ext(certs[0], x509.BasicConstraints)
    if not (constraints and constraints.ca):
        return "False", "ErrInvalidKeyPair", "Error getting keypair for CA issuer: certificate is not a CA"
    return "True", "KeyPairVerified", "Signing CA verified"


def rfc3339(moment):
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(previous, status, reason, message, generation, now):
    """A Ready condition; lastTransitionTime kept while the status stays the same."""
    old = next((c for c in previous or [] if c.get("type") == "Ready"), None)
    since = old["lastTransitionTime"] if old and old.get("status") == status and old.get(
        "lastTransitionTime") else rfc3339(now)
    return {"type": "Ready", "status": status, "reason": reason, "message": message,
            "lastTransitionTime": since, "observedGeneration": generation}


# ---------------------------------------------------------------------------------- controller

def _now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


class Controller:
    """Level-triggered: any watch event (or the resync timer) reconciles every issuer and Certificate."""

    def __init__(self, api_client_factory, cluster_resource_namespace="cert-manager", resync=30.0, log=None):
        from kubernetes import client

        self._client = client
        self._factory = api_client_factory
        api_client = api_client_factory()
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.cluster_resource_namespace = cluster_resource_namespace
        self.resync = resync
        self.trigger = threading.Event()
        self.stopping = threading.Event()
        self.log = log or (lambda text: print("cert-manager stand-in: " + text, flush=True))

    # -- reads
    def _list(self, plural):
        try:
            return self.custom.list_cluster_custom_object(GROUP, VERSION, plural)["items"]
        except self._client.exceptions.ApiException as exc:
            if exc.status == 404:  # CRDs not installed (yet)
                return []
            raise

    def _secret(self, namespace, name):
        try:
            secret = self.core.read_namespaced_secret(name, namespace)
        except self._client.exceptions.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return {"data": {k: base64.b64decode(v) for k, v in (secret.data or {}).items()},
                "annotations": secret.metadata.annotations or {}, "labels": secret.metadata.labels or {},
                "type": secret.type}

    # -- writes
    def _patch_status(self, obj, plural, status):
        namespace = obj["metadata"].get("namespace")
        body = {"status": status}
        kwargs = {"_content_type": "application/merge-patch+json"}
        if namespace:
            self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, plural,
                                                              obj["metadata"]["name"], body, **kwargs)
        else:
            self.custom.patch_cluster_custom_object_status(GROUP, VERSION, plural, obj["metadata"]["name"], body,
                                                           **kwargs)

    def _apply_secret(self, cert_obj, data):
        labels, annotations = secret_metadata(cert_obj)
        namespace, name = cert_obj["metadata"]["namespace"], cert_obj["spec"]["secretName"]
        body = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations},
                "data": {k: base64.b64encode(v).decode() for k, v in data.items()}}
        self.core.patch_namespaced_secret(name, namespace, body, field_manager=FIELD_MANAGER, force=True,
                                          _content_type="application/apply-patch+yaml")

    # -- reconcile
    def reconcile_issuers(self, now):
        ready = {}
        for plural, kind in (("issuers", "Issuer"), ("clusterissuers", "ClusterIssuer")):
            for obj in self._list(plural):
                meta, spec = obj["metadata"], obj.get("spec") or {}
                namespace = meta.get("namespace") or self.cluster_resource_namespace
                ca_secret = None
                if "ca" in spec and (spec["ca"] or {}).get("secretName"):
                    ca_secret = self._secret(namespace, spec["ca"]["secretName"])
                state = issuer_readiness(spec, ca_secret)
                ready[(kind, meta.get("namespace"), meta["name"])] = (state, spec, ca_secret)
                if state is None:
                    continue  # not an issuer type the stand-in implements: leave it alone
                old = (obj.get("status") or {}).get("conditions") or []
                new = [condition(old, *state, meta.get("generation"), now)]
                if old != new:
                    self._patch_status(obj, plural, {"conditions": new})
        return ready

    def _signer(self, cert_obj, issuers):
        ref = cert_obj["spec"]["issuerRef"]
        kind = ref.get("kind") or "Issuer"
        namespace = cert_obj["metadata"]["namespace"] if kind == "Issuer" else None
        found = issuers.get((kind, namespace, ref["name"]))
        if found is None:
            return None, ("IssuerNotFound", '%s "%s" not found' % (kind, ref["name"]))
        state, spec, ca_secret = found
        if state is None:
            return None, ("IssuerNotSupported", "%s %s is neither a ca nor a selfSigned issuer (the stand-in "
                                                "implements only those)" % (kind, ref["name"]))
        if state[0] != "True":
            return None, ("IssuerNotReady", "%s %s is not ready: %s" % (kind, ref["name"], state[2]))
        if "selfSigned" in spec:
            return {"type": "selfSigned"}, None
        return {"type": "ca", "certs": x509.load_pem_x509_certificates(ca_secret["data"]["tls.crt"]),
                "key": serialization.load_pem_private_key(ca_secret["data"]["tls.key"], password=None)}, None

    def reconcile_certificate(self, obj, issuers, now):
        """Returns True when it issued a new certificate."""
        meta, spec = obj["metadata"], obj.get("spec") or {}
        if ((spec.get("issuerRef") or {}).get("group") or GROUP) != GROUP:
            return False  # an external issuer's Certificate: not ours
        status = dict(obj.get("status") or {})
        old_conditions = status.get("conditions") or []
        issued = False
        try:
            validate(spec)
            secret = self._secret(meta["namespace"], spec["secretName"])
            why = issuance_reason(spec, secret, now)
            if why is not None:
                signer, problem = self._signer(obj, issuers)
                if problem is not None:
                    status["conditions"] = [condition(old_conditions, "False", problem[0], "%s; waiting: %s" % (
                        why[1], problem[1]), meta.get("generation"), now)]
                else:
                    existing_key = (secret or {}).get("data", {}).get("tls.key")
                    self._apply_secret(obj, issue(spec, signer, existing_key, now))
                    status["revision"] = int(status.get("revision") or 0) + 1
                    self.log("issued Secret %s/%s for Certificate %s (revision %d): %s" % (
                        meta["namespace"], spec["secretName"], meta["name"], status["revision"], why[0]))
                    secret, issued = self._secret(meta["namespace"], spec["secretName"]), True
            else:
                labels, annotations = secret_metadata(obj)
                if not (labels.items() <= secret["labels"].items()
                        and annotations.items() <= secret["annotations"].items()):
                    self._apply_secret(obj, secret["data"])  # secretTemplate changed: metadata only
            if issued or why is None:
                cert = x509.load_pem_x509_certificate(secret["data"]["tls.crt"])
                status.update({"notBefore": rfc3339(cert.not_valid_before_utc),
                               "notAfter": rfc3339(cert.not_valid_after_utc),
                               "renewalTime": rfc3339(renewal_time(spec, cert))})
                status["conditions"] = [condition(old_conditions, "True", "Ready",
                                                  "Certificate is up to date and has not expired",
                                                  meta.get("generation"), now)]
        except InvalidSpecError as exc:
            status["conditions"] = [condition(old_conditions, "False", "InvalidSpecError", str(exc),
                                              meta.get("generation"), now)]
        if status != (obj.get("status") or {}):
            self._patch_status(obj, "certificates", status)
        return issued

    def reconcile(self):
        """One pass over everything; repeated while it issues (a CA Certificate feeds its CA Issuer)."""
        for _round in range(5):
            now = _now()
            issuers = self.reconcile_issuers(now)
            issued = False
            for obj in self._list("certificates"):
                try:
                    issued = self.reconcile_certificate(obj, issuers, now) or issued
                except self._client.exceptions.ApiException as exc:
                    self.log("Certificate %s/%s: API error %s %s" % (
                        obj["metadata"]["namespace"], obj["metadata"]["name"], exc.status, exc.reason))
            if not issued:
                return

    # -- watches
    def _watch(self, list_call_name, args):
        from kubernetes import watch

        api_client = self._factory()
        api = (self._client.CoreV1Api(api_client) if list_call_name == "list_secret_for_all_namespaces"
               else self._client.CustomObjectsApi(api_client))
        list_call = getattr(api, list_call_name)
        while not self.stopping.is_set():
            try:
                for _event in watch.Watch().stream(list_call, *args, timeout_seconds=60):
                    self.trigger.set()
                    if self.stopping.is_set():
                        return
            except self._client.exceptions.ApiException as exc:
                if exc.status not in (404, 410):
                    self.log("watch %s: API error %s" % (args or list_call_name, exc.status))
                time.sleep(1)
            except Exception as exc:  # noqa: BLE001 - a broken watch connection must not end the stand-in
                self.log("watch %s: %s" % (args or list_call_name, type(exc).__name__))
                time.sleep(1)

    def run(self):
        watches = [("list_secret_for_all_namespaces", ())] + [
            ("list_cluster_custom_object", (GROUP, VERSION, plural))
            for plural in ("certificates", "issuers", "clusterissuers")]
        for name, args in watches:
            threading.Thread(target=self._watch, args=(name, args), daemon=True).start()
        self.log("watching")
        while not self.stopping.is_set():
            self.trigger.wait(self.resync)
            self.trigger.clear()
            time.sleep(0.1)  # let a burst of events settle into one pass
            try:
                self.reconcile()
            except Exception as exc:  # noqa: BLE001 - keep serving; the next event or resync retries
                self.log("reconcile failed: %s: %s" % (type(exc).__name__, exc))


@contextlib.contextmanager
def running(env, resync=5.0):
    """Run the stand-in against the sandbox described by ``env`` (load_env()) for a with-block."""
    cmd = [sys.executable, os.path.abspath(__file__), "--kubeconfig", env["KUBECONFIG"], "--resync-seconds",
           str(resync)]
    log_path = os.path.join(os.path.dirname(env["KUBECONFIG"]), "logs", "cert-manager-standin.log")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in the finally below
    pump = threading.Thread(target=lambda: [log.write(text) or log.flush() for text in proc.stdout], daemon=True)
    try:
        line = proc.stdout.readline()
        log.write(line)
        if "watching" not in line:
            raise RuntimeError("cert-manager stand-in did not start: %s%s" % (line, proc.stdout.read()))
        pump.start()
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if pump.is_alive():
            pump.join(timeout=5)
        log.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--cluster-resource-namespace", default="cert-manager")
    parser.add_argument("--resync-seconds", type=float, default=30.0)
    args = parser.parse_args(argv)

    from kubernetes import config

    controller = Controller(lambda: config.new_client_from_config(config_file=args.kubeconfig),
                            args.cluster_resource_namespace, args.resync_seconds)
    try:
        controller.run()
    except KeyboardInterrupt:
        controller.stopping.set()
    return 0


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, lambda *_args: sys.exit(0))
    sys.exit(main())
