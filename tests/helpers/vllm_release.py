"""The vLLM release data files (plugins/module_utils/vllm_releases/) seen from the tests.

``release_parser`` rebuilds ``vllm serve``'s parser with Python's own argparse from a data file, so the
tests check the role's arguments with argparse itself, not with the role's resolver
(module_utils/vllm_cli.py) that they are meant to check. ``ingress_exposure`` follows an Ingress (and a
Traefik Middleware) the way the controllers route, and looks the resulting path up in the release's
route table.
"""

import argparse
import glob
import json
import os
import re

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RELEASES_DIR = os.path.join(REPO_ROOT, "plugins", "module_utils", "vllm_releases")
TAG_RE = re.compile(r"^v?([0-9]+\.[0-9]+\.[0-9]+)(?:[-+][0-9A-Za-z.]+)?$")
OPEN_BY_DESIGN = ("/health", "/metrics")


def data_files():
    """{version: path} of every committed data file."""
    out = {}
    for path in glob.glob(os.path.join(RELEASES_DIR, "vllm-*.json")):
        out[os.path.basename(path)[len("vllm-"):-len(".json")]] = path
    return out


def load(version):
    with open(data_files()[version], encoding="utf-8") as handle:
        return json.load(handle)


def tag_version(tag):
    match = TAG_RE.match(str(tag))
    return match.group(1) if match else None


class RefusedError(ValueError):
    """vllm serve's parser would exit with this message."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise RefusedError(message)


def release_parser(data):
    """argparse.ArgumentParser equal to the release's ``vllm serve`` parser in option strings, nargs,
    choices and action kinds (help and version become plain flags so that nothing exits)."""
    meta = data["parser"]
    parser = _Parser(prog="vllm serve", prefix_chars=meta["prefix_chars"], allow_abbrev=meta["allow_abbrev"],
                     add_help=False)
    for positional in meta["positionals"]:
        parser.add_argument(positional["dest"], nargs=positional["nargs"])
    for option in data["options"]:
        strings, kind, dest = option["option_strings"], option["kind"], option["dest"]
        if kind == "boolean_optional":
            positive = [text for text in strings if not text.startswith("--no-")]
            action = parser.add_argument(*positive, dest=dest, action=argparse.BooleanOptionalAction)
            assert sorted(action.option_strings) == sorted(strings), (strings, action.option_strings)
        elif kind in ("store_true", "store_false", "count"):
            parser.add_argument(*strings, dest=dest, action=kind)
        elif kind in ("help", "version", "store_const"):
            parser.add_argument(*strings, dest=dest, action="store_true")
        elif kind in ("store", "append", "extend", "custom"):
            # vLLM's own Action subclasses (kind custom) take their values like store.
            parser.add_argument(*strings, dest=dest, action="store" if kind == "custom" else kind,
                                nargs=option["nargs"], choices=option["choices"])
        else:
            raise AssertionError("action kind %r of %s is new: teach release_parser about it" % (kind, strings))
    return parser


def flexible_preprocess(args):
    """FlexibleArgumentParser.parse_args (vllm/utils/__init__.py): '_' -> '-' in --names before the first '.'."""
    out = []
    for arg in args:
        if arg.startswith("--"):
            key, equals, value = arg.partition("=")
            name, dot, rest = key[2:].partition(".")
            out.append("--" + name.replace("_", "-") + dot + rest + equals + value)
        else:
            out.append(arg)
    return out


def check_args(args, data):
    """Problems ``vllm serve`` of this release has with an argument list (empty when it accepts it)."""
    parser = release_parser(data)
    args = flexible_preprocess([str(arg) for arg in args])
    try:
        namespace = parser.parse_args(args)
    except RefusedError as exc:
        return ["refused: %s" % exc]
    problems = []
    for dest, table in data.get("values_checked_after_parsing", {}).items():
        value = getattr(namespace, dest, None)
        if value is not None and value not in table["values"]:
            problems.append("%s=%r is not in %s" % (dest, value, table["source"]))
    deprecated = set(text for option in data["options"] if option["deprecated"] for text in option["option_strings"])
    for arg in args:
        if arg.split("=", 1)[0] in deprecated:
            problems.append("%s is deprecated in vLLM %s" % (arg, data["vllm_version"]))
    return problems


def env_names_read(data):
    """Every environment variable name the release (or a library the role's env is meant for) reads."""
    names = set()
    for values in data["env"].values():
        names.update(values)
    return names


# --------------------------------------------------------------------------- ingress


def _element_prefix(prefix, path):
    """Kubernetes pathType Prefix: matches element-wise (/a/v1 matches /a/v1 and /a/v1/x, not /a/v1x)."""
    prefix = prefix.rstrip("/") or "/"
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


def _rewrite(target, groups):
    """ingress-nginx's rewrite-target: $1.. are the regex groups of the matched path."""
    return re.sub(r"\$([0-9])", lambda ref: groups[int(ref.group(1)) - 1] or "", target)


def backend_path(path, ingress, middlewares):
    """The path vLLM sees for an external request path, or None when the Ingress does not route it.

    Exact and Prefix as in the Ingress API; ImplementationSpecific as ingress-nginx does it (a regex
    matched from the start of the URI, case-insensitive, then rewrite-target); a Traefik stripPrefix
    Middleware named in the router.middlewares annotation removes its prefix.
    """
    annotations = ingress["metadata"].get("annotations") or {}
    for rule in ingress["spec"].get("rules") or []:
        for item in rule["http"]["paths"]:
            kind, rule_path = item["pathType"], item["path"]
            if kind == "Exact" and path == rule_path or kind == "Prefix" and _element_prefix(rule_path, path):
                seen = path
                wanted = annotations.get("traefik.ingress.kubernetes.io/router.middlewares", "")
                for name in [part.split("@")[0] for part in wanted.split(",") if part]:
                    middleware = middlewares.get(name)
                    assert middleware is not None, "the Ingress names Middleware %s, which does not exist" % name
                    for prefix in middleware["spec"]["stripPrefix"]["prefixes"]:
                        if _element_prefix(prefix, seen):
                            seen = seen[len(prefix.rstrip("/")):] or "/"
                            break
                return seen
            if kind == "ImplementationSpecific":
                match = re.match(rule_path, path, re.IGNORECASE)
                if match:
                    target = annotations.get("nginx.ingress.kubernetes.io/rewrite-target")
                    if not target:
                        return path
                    return _rewrite(target, match.groups())
    return None


def route_for(path, routes):
    """The route of the release's table that serves ``path`` (path parameters match one segment;
    /metrics is a mount), or None."""
    for route in routes:
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(route["path"])) + "$"
        if route["path"] == "/metrics":
            pattern = "^/metrics"
        if re.match(pattern, path):
            return route
    return None


def ingress_exposure(ingresses, middlewares, data, prefixes):
    """For every route of the release and every Ingress: the external path that reaches it.

    ``middlewares`` are Traefik Middleware objects; ``prefixes`` maps an Ingress name to the path prefix
    of its model ("/llama" or "" for a host of its own). Returns [(ingress, external path, route)] for each
    route the Ingress routes to vLLM.
    """
    # Traefik names a Kubernetes CRD middleware <namespace>-<name>@kubernetescrd.
    middlewares = dict(("%s-%s" % (item["metadata"]["namespace"], item["metadata"]["name"]), item)
                       for item in middlewares)
    reached = []
    for ingress in ingresses:
        prefix = prefixes[ingress["metadata"]["name"]]
        for route in data["routes"]:
            concrete = re.sub(r"\{[^}]+\}", "x", route["path"])
            for candidate in (concrete, concrete + "/", concrete + "/x"):
                external = prefix + candidate
                seen = backend_path(external, ingress, middlewares)
                if seen is not None and route_for(seen, data["routes"]) is route:
                    reached.append((ingress["metadata"]["name"], external, route))
                    break
    return reached


def unguarded(reached):
    """Routes reached through an Ingress that answer without the API key, other than /health and /metrics."""
    return [(name, external, route["method"] + " " + route["path"]) for name, external, route in reached
            if not route["requires_key"] and route["path"] not in OPEN_BY_DESIGN]
