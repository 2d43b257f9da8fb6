# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE)
"""Write docs/variables.md from every role's meta/argument_specs.yml and every plugin's documentation.

Usage: ``python docs/generate_reference.py`` (rewrites docs/variables.md) or ``--check`` (exit 1 when
the file is stale). tests/unit/test_docs_reference.py fails when the committed file is stale.

Sources, read as data (nothing is imported or executed):
- ``roles/<role>/meta/argument_specs.yml``: every entry point and its options;
- ``plugins/modules/*.py``: the ``DOCUMENTATION`` string, with the options of this collection's own
  doc fragments (``plugins/doc_fragments``) merged in and other collections' fragments named;
- ``plugins/filter/*.yml`` and ``*.py``: filter documentation, when present.
"""

from __future__ import absolute_import, division, print_function

import argparse
import ast
import glob
import json
import os
import re
import sys

import yaml

__metaclass__ = type

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUT = os.path.join(REPO_ROOT, "docs", "variables.md")
COLLECTION = "llmops.serving"

_MARKUP = re.compile(r"\b(RV|[COVEMPIBLU])\(")
_FORMAT = {"I": "*%s*", "B": "**%s**", "U": "<%s>"}


def _closing(text, start):
    """Index of the parenthesis closing the one opened just before ``start`` (nesting allowed)."""
    depth = 1
    for index in range(start, len(text)):
        if text[index] == "(":
            depth += 1
        elif text[index] == ")":
            depth -= 1
            if depth == 0:
                return index
    return -1


def markup(text):
    """Ansible documentation markup (C(), O(), V(), RV(), I(), B(), L(), U() ...) -> Markdown, on one line."""
    if isinstance(text, (list, tuple)):
        text = " ".join(str(part) for part in text)
    text = " ".join(str(text or "").split()).replace("HORIZONTALLINE", "")
    out, position = [], 0
    for match in _MARKUP.finditer(text):
        if match.start() < position:
            continue
        end = _closing(text, match.end())
        if end < 0:
            continue
        kind, inner = match.group(1), text[match.end():end]
        if kind == "L" and "," in inner:
            label, url = inner.rsplit(",", 1)
            rendered = "[%s](%s)" % (label.strip(), url.strip())
        else:
            rendered = _FORMAT.get(kind, "`%s`") % inner
        out.append(text[position:match.start()] + rendered)
        position = end + 1
    out.append(text[position:])
    return "".join(out)


def cell(text):
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|")


def default_text(option):
    if "default" not in option:
        return ""
    value = option["default"]
    if isinstance(value, str):
        return "`%s`" % value if value else '`""`'
    return "`%s`" % json.dumps(value, sort_keys=True)


def type_text(option):
    kind = option.get("type", "str")
    if kind == "list" and option.get("elements"):
        kind = "list of %s" % option["elements"]
    return kind


def describe(option):
    parts = [markup(option.get("description", ""))]
    if option.get("choices"):
        parts.append("Choices: %s." % ", ".join("`%s`" % choice for choice in option["choices"]))
    if option.get("aliases"):
        parts.append("Aliases: %s." % ", ".join("`%s`" % alias for alias in option["aliases"]))
    if option.get("no_log"):
        parts.append("Secret (never logged).")
    return " ".join(part for part in parts if part)


def options_table(options, show_required=True):
    lines = ["| name | type | default | required | description |" if show_required
             else "| name | type | default | description |",
             "|---|---|---|---|---|" if show_required else "|---|---|---|---|"]
    for name in sorted(options):
        option = options[name] or {}
        row = ["`%s`" % name, type_text(option), default_text(option)]
        if show_required:
            row.append("yes" if option.get("required") else "")
        row.append(describe(option))
        lines.append("| " + " | ".join(cell(value) for value in row) + " |")
        nested = option.get("suboptions") or option.get("options") or {}
        for sub_name in sorted(nested):
            sub = nested[sub_name] or {}
            row = ["`%s.%s`" % (name, sub_name), type_text(sub), default_text(sub)]
            if show_required:
                row.append("yes" if sub.get("required") else "")
            row.append(describe(sub))
            lines.append("| " + " | ".join(cell(value) for value in row) + " |")
    return lines


def _string_assignments(path):
    """Top-level (and class-level) ``NAME = "..."`` string assignments of a Python file, by name."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), filename=path)
    found = {}
    nodes = list(tree.body)
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            nodes.extend(node.body)
    for node in nodes:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node.value.value
    return found


def doc_fragments(root):
    """{"llmops.serving.<name>[.<VAR>]": options} of this collection's doc fragments."""
    fragments = {}
    for path in sorted(glob.glob(os.path.join(root, "plugins", "doc_fragments", "*.py"))):
        name = os.path.splitext(os.path.basename(path))[0]
        if name == "__init__":
            continue
        for var, text in _string_assignments(path).items():
            if not var.isupper():
                continue
            doc = yaml.safe_load(text) or {}
            key = "%s.%s" % (COLLECTION, name)
            if var != "DOCUMENTATION":
                key += "." + var.lower()
            fragments[key] = doc.get("options") or {}
    return fragments


def module_docs(root):
    fragments = doc_fragments(root)
    modules = []
    for path in sorted(glob.glob(os.path.join(root, "plugins", "modules", "*.py"))):
        if os.path.basename(path) == "__init__.py":
            continue
        doc = yaml.safe_load(_string_assignments(path).get("DOCUMENTATION", "")) or {}
        if not doc:
            continue
        options = dict(doc.get("options") or {})
        external = []
        extends = doc.get("extends_documentation_fragment") or []
        for fragment in [extends] if isinstance(extends, str) else extends:
            if fragment in fragments:
                for name, option in fragments[fragment].items():
                    options.setdefault(name, option)
            else:
                external.append(fragment)
        modules.append({"name": doc.get("module") or os.path.splitext(os.path.basename(path))[0],
                        "short_description": doc.get("short_description", ""),
                        "description": doc.get("description", ""), "options": options, "external": external})
    return modules


def filter_docs(root):
    filters = []
    for path in sorted(glob.glob(os.path.join(root, "plugins", "filter", "*.yml"))):
        with open(path, encoding="utf-8") as handle:
            doc = (yaml.safe_load(handle) or {}).get("DOCUMENTATION") or {}
        if doc:
            filters.append(doc)
    return filters


def role_specs(root):
    roles = []
    for path in sorted(glob.glob(os.path.join(root, "roles", "*", "meta", "argument_specs.yml"))):
        role = os.path.basename(os.path.dirname(os.path.dirname(path)))
        with open(path, encoding="utf-8") as handle:
            specs = (yaml.safe_load(handle) or {}).get("argument_specs") or {}
        roles.append((role, specs))
    return roles


def render(root=REPO_ROOT):
    """The whole reference as a string."""
    out = ["# Variable and option reference", "",
           "Generated by `docs/generate_reference.py` from every role's `meta/argument_specs.yml` and every",
           "plugin's documentation. Do not edit by hand: change the source and run",
           "`python docs/generate_reference.py` (a unit test fails when this file is stale).", "",
           "Inventory-wide settings read by the playbooks (not by the roles) are described in",
           "`docs/playbooks.md`.", "", "## Roles", ""]
    roles = role_specs(root)
    for role, _specs in roles:
        out.append("- [`%s.%s`](#role-%s)" % (COLLECTION, role, role.replace("_", "-")))
    out.append("")
    for role, specs in roles:
        out += ['<a id="role-%s"></a>' % role.replace("_", "-"), "", "### Role `%s.%s`" % (COLLECTION, role), ""]
        for entry in sorted(specs, key=lambda name: (name != "main", name)):
            spec = specs[entry] or {}
            out += ["#### Entry point `%s`: %s" % (entry, markup(spec.get("short_description", ""))), ""]
            if spec.get("description"):
                out += [markup(spec["description"]), ""]
            if entry != "main":
                out += ["`tasks_from: %s.yml`" % entry, ""]
            options = spec.get("options") or {}
            out += options_table(options) if options else ["No options."]
            out.append("")
    out += ["## Modules", ""]
    for module in module_docs(root):
        out += ["### Module `%s.%s`: %s" % (COLLECTION, module["name"], markup(module["short_description"])), ""]
        if module["description"]:
            out += [markup(module["description"]), ""]
        if module["external"]:
            out += ["Also takes the options of %s." % ", ".join("`%s`" % name for name in module["external"]), ""]
        out += options_table(module["options"]) + [""]
    filters = filter_docs(root)
    if filters:
        out += ["## Filters", ""]
        for doc in filters:
            name, summary = doc.get("name", "?"), markup(doc.get("short_description", ""))
            out += ["### Filter `%s.%s`: %s" % (COLLECTION, name, summary), ""]
            if doc.get("description"):
                out += [markup(doc["description"]), ""]
            out += options_table(doc.get("options") or {}) + [""]
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description="Write docs/variables.md from the argument specs and plugin docs.")
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/variables.md is stale, write nothing")
    parser.add_argument("--output", default=OUTPUT)
    args = parser.parse_args(argv)
    text = render()
    current = None
    if os.path.exists(args.output):
        with open(args.output, encoding="utf-8") as handle:
            current = handle.read()
    if args.check:
        if current != text:
            sys.stderr.write("%s is stale: run python docs/generate_reference.py\n" % args.output)
            return 1
        return 0
    if current != text:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
