"""docs/variables.md is generated from the argument specs and plugin docs; it must not be stale."""

import glob
import importlib.util
import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _generator():
    path = os.path.join(REPO_ROOT, "docs", "generate_reference.py")
    spec = importlib.util.spec_from_file_location("generate_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_variables_md_is_current():
    generator = _generator()
    with open(os.path.join(REPO_ROOT, "docs", "variables.md"), encoding="utf-8") as handle:
        committed = handle.read()
    assert committed == generator.render(), "docs/variables.md is stale: run `python docs/generate_reference.py`"


def test_every_role_entry_point_and_module_is_in_the_reference():
    text = _generator().render()
    for path in glob.glob(os.path.join(REPO_ROOT, "roles", "*", "meta", "argument_specs.yml")):
        role = path.split(os.sep)[-3]
        assert "### Role `llmops.serving.%s`" % role in text
    for path in glob.glob(os.path.join(REPO_ROOT, "plugins", "modules", "*.py")):
        name = os.path.splitext(os.path.basename(path))[0]
        if name != "__init__":
            assert "### Module `llmops.serving.%s`" % name in text
    # options of the collection's own doc fragments are merged into the modules that extend them
    module_section = text.split("### Module `llmops.serving.s3_model_stage`")[1].split("### ")[0]
    assert "`endpoint_url`" in module_section and "`secret_key`" in module_section


def test_markup_becomes_markdown():
    markup = _generator().markup
    assert markup("Use C(foo) with O(bar=1) or V(x), see L(the docs, https://example.com).") == (
        "Use `foo` with `bar=1` or `x`, see [the docs](https://example.com).")
    assert markup(["two", "lines"]) == "two lines"
    assert _generator().cell("a|b") == "a\\|b"


def test_a_changed_spec_makes_the_reference_stale(tmp_path):
    generator = _generator()
    role = tmp_path / "roles" / "demo" / "meta"
    role.mkdir(parents=True)
    (role / "argument_specs.yml").write_text(
        "argument_specs:\n  main:\n    short_description: Demo\n    options:\n"
        "      demo_size:\n        type: int\n        default: 1\n        description: How many.\n")
    before = generator.render(str(tmp_path))
    assert "| `demo_size` | int | `1` |  | How many. |" in before
    (role / "argument_specs.yml").write_text(
        "argument_specs:\n  main:\n    short_description: Demo\n    options:\n"
        "      demo_size:\n        type: int\n        default: 2\n        description: How many.\n")
    assert generator.render(str(tmp_path)) != before


def test_markup_keeps_nested_parentheses():
    markup = _generator().markup
    assert markup("by default C(min(max(a, 1), b)).") == "by default `min(max(a, 1), b)`."
    assert markup("I(x) B(y) U(https://a) RV(z)") == "*x* **y** <https://a> `z`"
