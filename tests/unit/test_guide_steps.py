"""The step markers of the guides (tests/helpers/guides.py): every shell block of docs/ is either a step
that tests/guides runs or skipped with its reason, and the parser refuses pages that break the rules."""

import glob
import os
import re

import pytest

from tests.helpers.guides import DOCS, REPO_ROOT, GuideError, guide_steps, parse_steps

GUIDE_TESTS = os.path.join(REPO_ROOT, "tests", "guides")


@pytest.mark.parametrize("page", sorted(glob.glob(os.path.join(DOCS, "*.md"))), ids=os.path.basename)
def test_every_shell_block_of_the_docs_is_a_step_or_skipped_with_a_reason(page):
    with open(page, encoding="utf-8") as handle:
        parse_steps(handle.read(), os.path.relpath(page, REPO_ROOT))


def test_each_guide_has_a_test_that_runs_all_its_steps():
    """A step a guide marks but no test in tests/guides runs would be a marker that tests nothing."""
    sources = {}
    for path in glob.glob(os.path.join(GUIDE_TESTS, "test_*.py")):
        with open(path, encoding="utf-8") as handle:
            sources[os.path.basename(path)] = handle.read()
    for guide in ("docs/k3s-single-node.md", "docs/cluster.md", "docs/eks.md", "docs/awx.md"):
        steps = guide_steps(guide)
        assert steps, "%s has no runnable step" % guide
        tests = [src for src in sources.values() if 'GUIDE = "%s"' % guide in src]
        assert tests, "no test in tests/guides declares GUIDE = %r" % guide
        for name in steps:
            assert any(re.search(r"""\[["']%s["']\]""" % re.escape(name), src) for src in tests), (
                "%s step %r is run by no test in tests/guides" % (guide, name))


PAGE = """# A guide

<!-- test: first -->
```bash
echo one \\
  two
```

Some text.

<!-- test: skip -- needs a real cloud -->

```bash
aws eks update-kubeconfig --name x
```

```yaml
not: a shell block
```
"""


def test_parse_steps_reads_names_text_lines_and_skip_reasons():
    first, skipped = parse_steps(PAGE, "docs/x.md")
    assert (first.name, first.line, first.text, first.skip) == ("first", 4, "echo one \\\n  two\n", "")
    assert (skipped.name, skipped.skip) == ("", "needs a real cloud")
    assert first.label() == "docs/x.md step 'first' (line 4)"


@pytest.mark.parametrize("page, error", [
    ("text\n```bash\nls\n```\n", "docs/x.md:2: a ```bash block without a marker"),
    ("<!-- test: skip -->\n```bash\nls\n```\n", "docs/x.md:1: a skipped block needs its reason"),
    ("<!-- test: Run It -->\n```bash\nls\n```\n", "docs/x.md:1: step name 'Run It'"),
    ("<!-- test: a -->\n```bash\nls\n```\n<!-- test: a -->\n```bash\nls\n```\n",
     "docs/x.md:5: step name 'a' is used twice"),
    ("<!-- test: a -->\ntext\n```bash\nls\n```\n",
     "docs/x.md:1: the marker '<!-- test: a -->' is not above a ```bash block"),
    ("<!-- test: a -->\n```bash\nls\n", "docs/x.md:2: the code block is not closed"),
])
def test_parse_steps_refuses_broken_markers_naming_the_line(page, error):
    with pytest.raises(GuideError) as err:
        parse_steps(page, "docs/x.md")
    assert str(err.value).startswith(error)
