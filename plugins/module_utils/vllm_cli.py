# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE)
"""What a vLLM release accepts on the ``vllm serve`` command line, and the decisions that use it.

The knowledge comes from the data files in ``vllm_releases/`` (``vllm-<version>.json``), written by
``tests/fixtures/vllm/generate.py`` from the release's own argument parser, quantization and
model-loader tables and API server (``make vllm-data VLLM_VERSION=...``). Nothing here is typed by
hand from vLLM's docs.

Token resolution follows what ``vllm serve`` does with its arguments: vLLM's FlexibleArgumentParser
(vllm/utils/__init__.py, 0.10.2: ``parse_args``) first turns ``_`` into ``-`` in ``--names``, folds
``--name.key value`` into ``--name {json}`` and ``-O3`` into ``-O.level=3``; Python's argparse then
takes an exact option string, ``NAME=VALUE``, a unique prefix of a ``--long`` name (allow_abbrev) or a
short option glued to its value (``-tp4`` is not one: ``-t`` is no option), and refuses an ambiguous
prefix (argparse.ArgumentParser._parse_optional / _get_option_tuples).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re

RELEASES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vllm_releases")
REGENERATE_HINT = "make vllm-data VLLM_VERSION=<version> (tests/fixtures/vllm/README.md)"
_FILE_RE = re.compile(r"^vllm-([0-9]+)\.([0-9]+)\.([0-9]+)\.json$")
# Image tags of vllm/vllm-openai releases: v0.10.2 (a suffix such as -cu128 names a build of that release).
_TAG_RE = re.compile(r"^v?([0-9]+\.[0-9]+\.[0-9]+)(?:[-+][0-9A-Za-z.]+)?$")
_NEGATIVE_NUMBER_RE = re.compile(r"^-[0-9]+$|^-[0-9]*\.[0-9]+$")
_CACHE = {}


def known_versions():
    """Versions that have a data file, oldest first."""
    found = []
    for name in os.listdir(RELEASES_DIR):
        match = _FILE_RE.match(name)
        if match:
            found.append(tuple(int(part) for part in match.groups()))
    return [".".join(str(part) for part in version) for version in sorted(found)]


def tag_version(tag):
    """Image tag -> vLLM version (``v0.10.2`` -> ``0.10.2``), or None for tags that name no release."""
    match = _TAG_RE.match(str(tag or "").strip())
    return match.group(1) if match else None


def load_release(version):
    if version not in _CACHE:
        path = os.path.join(RELEASES_DIR, "vllm-%s.json" % version)
        with open(path, encoding="utf-8") as handle:
            _CACHE[version] = Release(json.load(handle))
    return _CACHE[version]


def release_for_tag(tag):
    """(Release, exact): the data of the tag's vLLM version, else the newest known one with exact False."""
    versions = known_versions()
    version = tag_version(tag)
    if version in versions:
        return load_release(version), True
    return load_release(versions[-1]), False


class Release(object):
    """Indexes over one data file."""

    def __init__(self, data):
        self.data = data
        self.version = data["vllm_version"]
        parser = data["parser"]
        self.prefix_chars = parser["prefix_chars"]
        self.allow_abbrev = parser["allow_abbrev"]
        self.options = data["options"]
        self.by_string = {}
        self.by_dest = {}
        for option in self.options:
            self.by_dest.setdefault(option["dest"], option)
            for text in option["option_strings"]:
                self.by_string[text] = option
        self.values_after_parsing = dict(
            (dest, item["values"]) for dest, item in data.get("values_checked_after_parsing", {}).items()
        )
        self.quantization_methods = list(data["quantization_methods"])

    def choices(self, dest):
        """Values an option accepts (argparse choices or the table vLLM checks after parsing), or None."""
        option = self.by_dest.get(dest)
        if option is not None and option.get("choices") is not None:
            return list(option["choices"])
        return self.values_after_parsing.get(dest)

    def flag(self, dest):
        """The long option string of ``dest`` (--tensor-parallel-size)."""
        option = self.by_dest[dest]
        return [text for text in option["option_strings"] if text.startswith("--")][0]

    def negation(self, option):
        """The ``--no-...`` string of a BooleanOptionalAction, or None."""
        for text in option["option_strings"]:
            if text.startswith("--no-"):
                return text
        return None


# --------------------------------------------------------------------------- token resolution


def _preprocess(arg):
    """FlexibleArgumentParser's rewriting of one arg -> (arg argparse sees, dotted)."""
    if arg.startswith("-O") and arg != "-O" and arg[2] != ".":
        # -O3 / -O=3 become -O.level=3
        return "-O=" + (arg[3:] if arg[2] == "=" else arg[2:]), True
    key, equals, value = arg.partition("=")
    if arg.startswith("--"):
        name, dot, rest = key[2:].partition(".")
        key = "--" + name.replace("_", "-") + dot + rest
    head, dot, _rest = key.partition(".")
    if dot:
        # --name.key value / --name.key=value become --name '{"key": value}' (any dash arg with a dot)
        return head + ("=" + value if equals else ""), True
    return head + (equals + value if equals else ""), False


def looks_like_option(token, release):
    return (
        isinstance(token, str)
        and len(token) > 1
        and token[0] in release.prefix_chars
        and not _NEGATIVE_NUMBER_RE.match(token)
        and " " not in token
    )


def resolve(token, release):
    """What argparse does with one option token.

    Returns ``{"status": "ok"|"unknown"|"ambiguous", "option": record or None, "text": the option string,
    "explicit": value given in the token or None, "dotted": bool, "matches": [option strings]}``.
    """
    seen, dotted = _preprocess(token)
    out = {"status": "unknown", "option": None, "text": seen, "explicit": None, "dotted": dotted, "matches": []}
    strings = release.by_string
    if seen in strings:
        out.update(status="ok", option=strings[seen])
        return out
    if "=" in seen:
        name, value = seen.split("=", 1)
        if name in strings:
            out.update(status="ok", option=strings[name], text=name, explicit=value)
            return out
    chars = release.prefix_chars
    tuples = []
    if seen[0] in chars and seen[1] in chars:
        if release.allow_abbrev:
            prefix, _eq, value = seen.partition("=")
            explicit = value if _eq else None
            tuples = [(text, explicit) for text in strings if text.startswith(prefix)]
    else:
        short, glued = seen[:2], seen[2:]
        for text in strings:
            if text == short:
                tuples.append((text, glued))
            elif text.startswith(seen):
                tuples.append((text, None))
    if len(tuples) > 1:
        out.update(status="ambiguous", matches=sorted(text for text, _explicit in tuples))
    elif len(tuples) == 1:
        text, explicit = tuples[0]
        out.update(status="ok", option=strings[text], text=text, explicit=explicit or None)
    return out


VALUELESS_KINDS = ("store_true", "store_false", "store_const", "count", "help", "version", "append_const")


def takes_value(option):
    return option["nargs"] != 0 and option["kind"] not in VALUELESS_KINDS


def walk(tokens, release):
    """Split an argument list into options with their values -> (items, stray tokens).

    Each item: the resolution of one option token plus ``token`` (as written) and ``values``. Tokens that
    are neither an option nor one's value are returned as strays (``vllm serve`` takes one positional,
    the model, which the role renders itself).
    """
    items, strays = [], []
    index = 0
    while index < len(tokens):
        token = str(tokens[index])
        index += 1
        if not looks_like_option(token, release):
            strays.append(token)
            continue
        item = resolve(token, release)
        item["token"] = token
        item["values"] = []
        option = item["option"]
        if item["explicit"] is not None:
            item["values"].append(item["explicit"])
        elif item["dotted"] or (option is not None and takes_value(option)):
            nargs = None if item["dotted"] or option is None else option["nargs"]
            if nargs in ("+", "*"):
                while index < len(tokens) and not looks_like_option(str(tokens[index]), release):
                    item["values"].append(str(tokens[index]))
                    index += 1
            elif nargs == "?":
                if index < len(tokens) and not looks_like_option(str(tokens[index]), release):
                    item["values"].append(str(tokens[index]))
                    index += 1
            else:
                count = nargs if isinstance(nargs, int) else 1
                for _n in range(count):
                    if index < len(tokens) and not looks_like_option(str(tokens[index]), release):
                        item["values"].append(str(tokens[index]))
                        index += 1
                item["missing_values"] = count - len(item["values"])
        elif option is None:
            # Unknown option: its value, if any, cannot be told from a stray; take a following plain token.
            if index < len(tokens) and not looks_like_option(str(tokens[index]), release):
                item["values"].append(str(tokens[index]))
                index += 1
        items.append(item)
    return items, strays


def problems(tokens, release):
    """What ``vllm serve`` of this release would refuse or warn about in an argument list.

    Returns ``(refused, deprecated)`` lists of messages (without the input's name).
    """
    refused, deprecated = [], []
    items, strays = walk(tokens, release)
    for item in items:
        option = item["option"]
        if item["status"] == "unknown":
            refused.append("%s is not an option of vLLM %s" % (item["token"], release.version))
            continue
        if item["status"] == "ambiguous":
            refused.append(
                "%s is an ambiguous abbreviation in vLLM %s (it could be %s); write the option in full"
                % (item["token"], release.version, ", ".join(item["matches"]))
            )
            continue
        if option.get("deprecated"):
            deprecated.append("%s is deprecated in vLLM %s" % (item["token"], release.version))
        if item.get("missing_values"):
            refused.append("%s needs a value" % item["token"])
            continue
        choices = release.choices(option["dest"])
        if choices is not None and not item["dotted"]:
            for value in item["values"]:
                if value not in choices:
                    refused.append(
                        "%s %s is not accepted by vLLM %s (%s)"
                        % (item["token"], value, release.version, ", ".join(choices))
                    )
    for stray in strays:
        refused.append(
            "%r is not an option or an option's value; vllm serve takes one positional argument, the model, "
            "which the role renders" % stray
        )
    return refused, deprecated


# --------------------------------------------------------------------------- extra_args as a dict


def render_dict_entry(key, value, release):
    """One ``flag: value`` entry of extra_args -> (CLI strings, problem or None).

    ``true`` writes the flag, ``false`` the ``--no-`` form of a BooleanOptionalAction flag (vLLM's
    boolean engine options; argparse.BooleanOptionalAction), ``null`` nothing, dicts and lists JSON.
    """
    flag = "--" + str(key).lstrip("-")
    if value is None:
        return [], None
    item = resolve(flag, release)
    option = item["option"] if item["status"] == "ok" else None
    if isinstance(value, bool):
        if option is None:
            # Unknown or ambiguous: the argument check reports it; write what a boolean flag would be.
            return ([flag] if value else []), None
        if option["kind"] == "boolean_optional":
            negation = release.negation(option)
            positive = [text for text in option["option_strings"] if text != negation][0]
            if item["text"] == negation:
                return [positive if not value else negation], None
            return [positive if value else negation], None
        if not takes_value(option):
            if value:
                return [flag], None
            return [], (
                "%s: false cannot be written: in vLLM %s %s is an on-only flag (%s) without a --no- form, so "
                "false is its default; remove the entry" % (key, release.version, item["text"], option["kind"])
            )
        return [], (
            "%s: %s takes a value in vLLM %s, not true/false; give the value as a string"
            % (key, item["text"], release.version)
        )
    if isinstance(value, (dict, list)):
        return [flag, json.dumps(value, sort_keys=True, separators=(",", ":"))], None
    return [flag, str(value)], None
