"""Secret values of the sandbox platform, and a scan of playbook output for them in every form.

Used by test_drill_site.py (drill 4). The values come from the cluster's Secrets (generated and
provided alike) and from the sandbox env file; the scan looks for each value as is, base64-encoded
(also as a fragment of a longer base64 blob, at each of the three byte alignments), URL-encoded and
JSON-escaped, in the raw output and in a copy with all whitespace removed (YAML output folds long
strings). A hit is reported by label, form and position with the value itself masked.
"""

import base64
import json
import re
import urllib.parse

# Secret keys whose values are not secret: names, addresses and public certificates.
PUBLIC_KEYS = frozenset({"username", "user", "database", "dbname", "host", "port", "sslmode",
                         "ca.crt", "tls.crt"})
# Helm keeps its release records in Secrets: the chart values (Secrets by reference only), gzipped.
HELM_RELEASE_TYPE = "helm.sh/release.v1"
MIN_LENGTH = 8
_PEM_ARMOR = re.compile(r"^-----(BEGIN|END) [A-Z ]+-----$")
_URL_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^:/@]*:([^@]+)@")


def secret_values(secrets):
    """[(label, value)] for every secret value in ``secrets`` (Kubernetes Secret objects, decoded
    from their base64 data). Besides each whole value: the lines of multi-line values (a PEM key's
    body lines, a config file's lines), the password in a URL, and the passwords and auth strings
    of a .dockerconfigjson."""
    out = []
    for secret in secrets:
        if secret.get("type") == HELM_RELEASE_TYPE:
            continue
        meta = secret["metadata"]
        for key, encoded in sorted((secret.get("data") or {}).items()):
            if key in PUBLIC_KEYS:
                continue
            label = "%s/%s[%s]" % (meta["namespace"], meta["name"], key)
            try:
                value = base64.b64decode(encoded).decode("utf-8")
            except UnicodeDecodeError:
                out.append((label + " (base64)", encoded))
                continue
            out.extend(_parts(label, value))
    return unique(out)


# Config documents that are mostly public settings (the same lines are in the chart's ConfigMaps) and
# hold a secret only inside URLs: the model_engine role's launch config with the Redis password in the
# cache URL. Their secret parts are the whole document and every URL password in it, not each line.
CONFIG_DOCUMENTS = ("[service_config.yaml]",)
_URL_PASSWORD_ANYWHERE = re.compile(r"[a-z][a-z0-9+.-]*://[^:/@\s]*:([^@\s]+)@")


def _parts(label, value):
    parts = [(label, value)]
    if label.endswith(CONFIG_DOCUMENTS):
        for number, match in enumerate(_URL_PASSWORD_ANYWHERE.finditer(value), 1):
            parts.append(("%s URL password %d" % (label, number), urllib.parse.unquote(match.group(1))))
        return parts
    if "\n" in value.strip():
        for number, line in enumerate(value.splitlines(), 1):
            line = line.strip()
            if len(line) >= 16 and not _PEM_ARMOR.match(line):
                parts.append(("%s line %d" % (label, number), line))
    match = _URL_PASSWORD.match(value)
    if match:
        parts.append((label + " URL password", urllib.parse.unquote(match.group(1))))
    if label.endswith("[.dockerconfigjson]"):
        for server, auth in json.loads(value).get("auths", {}).items():
            for field in ("password", "auth", "identitytoken", "registrytoken"):
                if auth.get(field):
                    parts.append(("%s %s %s" % (label, server, field), auth[field]))
    return parts


def unique(pairs):
    seen = set()
    out = []
    for label, value in pairs:
        if value not in seen:
            seen.add(value)
            out.append((label, value))
    return out


def _b64_fragments(raw, encode):
    """Base64 text that encodes ``raw`` wherever it sits in a longer byte string: for each of the
    three alignments, the characters that depend on ``raw``'s bytes only."""
    out = []
    for shift in range(3):
        encoded = encode(b"\0" * shift + raw).decode("ascii").rstrip("=")
        start = -(-8 * shift // 6)
        end = 8 * (shift + len(raw)) // 6
        if end - start >= MIN_LENGTH:
            out.append(encoded[start:end])
    return out


def forms(value):
    """{form name: text} under which ``value`` could show up in output."""
    raw = value.encode("utf-8")
    found = {
        "plain": value,
        "base64": base64.b64encode(raw).decode("ascii"),
        "base64url": base64.urlsafe_b64encode(raw).decode("ascii"),
        "url-encoded": urllib.parse.quote(value, safe=""),
        "form-encoded": urllib.parse.quote_plus(value),
        "json-escaped": json.dumps(value)[1:-1],
    }
    for index, fragment in enumerate(_b64_fragments(raw, base64.b64encode)):
        found["base64 fragment %d" % index] = fragment
    for index, fragment in enumerate(_b64_fragments(raw, base64.urlsafe_b64encode)):
        found["base64url fragment %d" % index] = fragment
    return found


def _squeeze(text):
    return re.sub(r"\\\n|\s+", "", text)


def scan(output, values):
    """Hits of ``values`` ([(label, value)]) in ``output``, as text that never contains a value."""
    squeezed = _squeeze(output)
    hits = []
    for label, value in values:
        for name, text in forms(value).items():
            where = output.find(text)
            if where >= 0:
                hits.append("%s as %s at offset %d: ...%s[SECRET]%s..." % (
                    label, name, where, _context(output, where - 60, where, values),
                    _context(output, where + len(text), where + len(text) + 60, values)))
                continue
            flat = _squeeze(text)
            if len(flat) >= MIN_LENGTH and flat in squeezed:
                hits.append("%s as %s (split by whitespace or line folding)" % (label, name))
    return hits


_TOKEN = re.compile(r"[A-Za-z0-9+/=_%.~-]{12,}")


def _context(output, start, end, values):
    """output[start:end] with every secret form masked, also forms cut off at the window's edges
    (masked in a wider window first), and any remaining long token that could be part of one."""
    start = max(0, start)
    margin = max([len(text) for _label, value in values for text in forms(value).values()] + [0])
    lead = max(0, start - margin)
    window = output[lead:end + margin]
    spans = []
    for _label, value in values:
        for text in forms(value).values():
            found = window.find(text)
            while found >= 0:
                spans.append((found, found + len(text)))
                found = window.find(text, found + 1)
    chars = list(window)
    for first, last in spans:
        chars[first:last] = ["\0"] * (last - first)
    text = "".join(chars)[start - lead:end - lead]
    text = re.sub("\x00+", "[SECRET]", text)
    text = _TOKEN.sub(lambda match: match.group(0) if match.group(0).isalpha() or match.group(0).isupper()
                      else "[TOKEN]", text)
    return text.replace("\n", "\\n")
