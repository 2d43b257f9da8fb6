"""benchmarks/run_all.py: results.json validation and the one-table report (pure logic, temp dirs)."""

import json
import os
import textwrap
import time

import pytest

from benchmarks import run_all

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
TABLE_HEADER = "| benchmark | metric | ours | anchor | ratio | goal | met | machine | date |"


def fixture(name):
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as handle:
        return json.load(handle)


def bench_tree(tmp_path, results=None, scripts=("s3", "site"), results_md=("s3",)):
    """benchmarks-like dir: <name>/run.py for each script, <name>/results.json from fixtures."""
    for name in scripts:
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.py").write_text("import sys\nsys.exit(0)\n")
    for name in results_md:
        (tmp_path / name / "RESULTS.md").write_text("# %s\n" % name)
    for name, data in (results or {}).items():
        (tmp_path / name / "results.json").write_text(json.dumps(data))
    return tmp_path


def table_rows(text):
    lines = text.splitlines()
    start = lines.index(TABLE_HEADER) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("| "):
            break
        rows.append(line)
    return rows


def cells(line):
    # split on unescaped pipes only
    parts, current, prev = [], "", ""
    for char in line.strip()[1:-1]:
        if char == "|" and prev != "\\":
            parts.append(current.strip())
            current = ""
        else:
            current += char
        prev = char
    parts.append(current.strip())
    return parts


# ---- validation --------------------------------------------------------------------------------
def test_fixtures_are_valid():
    for name in ("results_s3.json", "results_site.json"):
        assert run_all.validate(fixture(name), name)["rows"]


@pytest.mark.parametrize("key", run_all.TOP_KEYS)
def test_missing_top_level_key_names_file_and_key(tmp_path, key):
    data = fixture("results_s3.json")
    del data[key]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    with pytest.raises(run_all.ResultsError) as err:
        run_all.load_results(str(path))
    assert str(path) in str(err.value)
    assert "missing key '%s'" % key in str(err.value)


@pytest.mark.parametrize("key", run_all.ROW_KEYS)
def test_missing_row_key_names_row_and_key(key):
    data = fixture("results_s3.json")
    del data["rows"][1][key]
    with pytest.raises(run_all.ResultsError, match=r"bench/s3/results\.json: rows\[1\] is missing key '%s'" % key):
        run_all.validate(data, "bench/s3/results.json")


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(date="2026-11-20 08:00"), "'date' must be ISO 8601 in UTC"),
    (lambda d: d.update(date="2026-11-20T08:00:00+02:00"), "'date' must be ISO 8601 in UTC"),
    (lambda d: d.update(rows=[]), "'rows' must be a non-empty list"),
    (lambda d: d.update(machine=""), "'machine' must be a non-empty string"),
    (lambda d: d["rows"][0].update(ratio="0.84"), r"rows\[0\].ratio must be a number or null"),
    (lambda d: d["rows"][0].update(ratio=True), r"rows\[0\].ratio must be a number or null"),
    (lambda d: d["rows"][0].update(ratio_means="faster"), r"rows\[0\].ratio_means must start with"),
    (lambda d: d["rows"][0].update(met="yes"), r"rows\[0\].met must be true, false or null"),
    (lambda d: d["rows"][0].update(goal=" "), r"rows\[0\].goal must not be empty"),
    (lambda d: d["rows"][0].update(notes=None), r"rows\[0\].notes must be a string"),
])
def test_wrong_values_are_named(mutate, message):
    data = fixture("results_s3.json")
    mutate(data)
    with pytest.raises(run_all.ResultsError, match=message):
        run_all.validate(data, "s3/results.json")


def test_not_json_names_the_file(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("{not json")
    with pytest.raises(run_all.ResultsError, match="results.json: not valid JSON"):
        run_all.load_results(str(path))


def test_write_results_round_trips(tmp_path):
    rows = [run_all.row("m", "1 s", "a: 2 s", 0.5, "ours/anchor", "<= 1", True)]
    path = run_all.write_results(str(tmp_path), rows, name="demo")
    data = run_all.load_results(path)
    assert data["benchmark"] == "demo" and data["rows"] == rows
    assert data["machine"].count(",") >= 3 and "load average" in data["machine"]
    with pytest.raises(run_all.ResultsError, match="missing key 'goal'"):
        run_all.write_results(str(tmp_path), [{k: v for k, v in rows[0].items() if k != "goal"}], name="demo")


# ---- the report ----------------------------------------------------------------------------------
def test_one_table_with_every_row_and_column(tmp_path):
    tree = bench_tree(tmp_path, {"s3": fixture("results_s3.json"), "site": fixture("results_site.json")})
    text, errors = run_all.build_report(str(tree), {}, generated="2026-11-22T00:00:00Z")
    assert errors == []
    assert text.count(TABLE_HEADER) == 1
    rows = [cells(line) for line in table_rows(text)]
    assert [r[:2] for r in rows] == [
        ["s3", "push 4 x 1 GiB"],
        ["s3", "no-op re-run; Ansible start-up \\| hash cache warm"],
        ["site", "site.yml no-op re-run; re-run changed=0"],
        ["site", "site.yml re-run, phase gpu"],
    ]
    assert rows[0][2:] == ["37.1 s", "s5cmd cp: 31.2 s", "0.84 (anchor/ours)", ">= 0.8x", "yes",
                           "AMD EPYC, 2 cores, 24 GiB RAM, load average 3.1 2.0 1.5", "2026-11-20T08:00:00Z"]
    assert rows[1][4:7] == ["0.10 (anchor/ours)", ">= 0.5x", "**no**"]
    assert rows[2][4] == "0.25 (ours/anchor)"
    assert rows[3][4] == "-" and rows[3][6] == "-"
    assert "- [s3](s3/RESULTS.md)" in text and "[site]" not in text
    assert "This run:" not in text


def test_failed_benchmark_keeps_last_results_marked(tmp_path):
    tree = bench_tree(tmp_path, {"s3": fixture("results_s3.json"), "site": fixture("results_site.json")})
    runs = {"site": {"rc": 2, "started": time.time() + 5, "seconds": 12.0}}
    text, _errors = run_all.build_report(str(tree), runs)
    site_rows = [cells(line) for line in table_rows(text) if line.startswith("| site")]
    assert len(site_rows) == 2
    assert all(r[0] == "site (FAILED in this run (exit 2), last results shown)" for r in site_rows)
    assert site_rows[0][1].startswith("site.yml no-op re-run")
    assert all(not r[0].startswith("s3 (") for r in map(cells, table_rows(text)) if r[0].startswith("s3"))
    assert "| site | 2 | 12 |" in text


def test_ran_without_rewriting_results_is_stale(tmp_path):
    tree = bench_tree(tmp_path, {"site": fixture("results_site.json")})
    path = tree / "site" / "results.json"
    os.utime(path, (time.time() - 3600, time.time() - 3600))
    runs = {"site": {"rc": 0, "started": time.time() - 60, "seconds": 60.0}}
    text, _errors = run_all.build_report(str(tree), runs)
    assert cells(table_rows(text)[1])[0].startswith("site (stale: ran without rewriting results.json")
    # rewritten after the start: fresh
    os.utime(path, None)
    text, _errors = run_all.build_report(str(tree), runs)
    assert cells(table_rows(text)[1])[0] == "site"


def test_missing_and_invalid_results_are_rows_not_gaps(tmp_path):
    broken = fixture("results_site.json")
    del broken["rows"][0]["met"]
    tree = bench_tree(tmp_path, {"site": broken}, scripts=("s3", "site", "zeta"))
    (tree / "zeta" / "results.json").write_text(json.dumps(dict(fixture("results_s3.json"), benchmark="s3")))
    text, errors = run_all.build_report(str(tree), {})
    rows = {cells(line)[0]: cells(line) for line in table_rows(text)}
    assert set(rows) == {"s3", "site", "zeta"}
    assert rows["s3"][1] == "no results.json yet: run `benchmarks/run_all.py s3`"
    assert "site/results.json: rows[0] is missing key 'met'" in rows["site"][1]
    assert "'benchmark' is 's3' but the directory is 'zeta'" in rows["zeta"][1]
    assert all(r[6] == "**no**" for r in rows.values())
    assert len(errors) == 2


# ---- main: runs real child processes of fake benchmarks --------------------------------------------
FAKE_OK = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, %r)
    from benchmarks.run_all import row, write_results
    write_results(os.path.dirname(os.path.abspath(__file__)),
                  [row("fake", "1.0 s", "anchor: 2.0 s", 0.5, "ours/anchor", "<= 1", True, "")], name="good")
""")


def test_main_runs_named_benchmarks_and_marks_failures(tmp_path, capsys):
    tree = bench_tree(tmp_path, {"bad": dict(fixture("results_s3.json"), benchmark="bad")},
                      scripts=("good", "bad", "other"), results_md=())
    repo = os.path.dirname(os.path.dirname(os.path.abspath(run_all.__file__)))
    (tree / "good" / "run.py").write_text(FAKE_OK % repo)
    (tree / "bad" / "run.py").write_text("import sys\nprint('boom')\nsys.exit(3)\n")
    (tree / "other" / "run.py").write_text("raise SystemExit('must not run')\n")
    assert run_all.main(["good", "bad"], bench_dir=str(tree)) == 1
    text = (tree / "README.md").read_text()
    rows = [cells(line) for line in table_rows(text)]
    assert rows[0][0] == "bad (FAILED in this run (exit 3), last results shown)"
    assert rows[-2][:3] == ["good", "fake", "1.0 s"]
    assert rows[-1][0] == "other" and rows[-1][1].startswith("no results.json yet")
    this_run = text.split("This run:")[1]
    assert "| bad | 3 |" in this_run and "| good | 0 |" in this_run and "| other |" not in this_run
    assert "failed: bad" in capsys.readouterr().err


def test_main_rejects_unknown_names_before_running(tmp_path, capsys):
    tree = bench_tree(tmp_path, {}, scripts=("good",), results_md=())
    (tree / "good" / "run.py").write_text("raise SystemExit('must not run')\n")
    with pytest.raises(SystemExit):
        run_all.main(["good", "nope"], bench_dir=str(tree))
    assert "unknown benchmark(s) nope: choose from good" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_all.main(["--args", "gpu_node_info --nodes 200"], bench_dir=str(tree))
    assert 'write it as NAME="ARGS"' in capsys.readouterr().err
    assert not (tree / "README.md").exists()


def test_args_reach_the_named_benchmark(tmp_path):
    tree = bench_tree(tmp_path, {}, scripts=("good",), results_md=())
    (tree / "good" / "run.py").write_text(
        "import sys\nopen(%r, 'w').write(repr(sys.argv[1:]))\n" % str(tmp_path / "argv"))
    run_all.main(["--args", 'good=--nodes 200 --label "a b"', "good"], bench_dir=str(tree))
    assert (tmp_path / "argv").read_text() == repr(["--nodes", "200", "--label", "a b"])


def test_report_only_runs_nothing(tmp_path):
    tree = bench_tree(tmp_path, {"s3": fixture("results_s3.json")}, scripts=("s3",))
    (tree / "s3" / "run.py").write_text("raise SystemExit('must not run')\n")
    assert run_all.main(["--report-only"], bench_dir=str(tree)) == 0
    assert "| s3 | push 4 x 1 GiB |" in (tree / "README.md").read_text()


def test_repository_results_follow_the_contract():
    """Every results.json committed under benchmarks/ passes validation (what `make bench` would show)."""
    bench_dir = os.path.dirname(os.path.abspath(run_all.__file__))
    for name in run_all.benchmark_names(bench_dir):
        path = os.path.join(bench_dir, name, "results.json")
        if os.path.exists(path):
            assert run_all.load_results(path)["benchmark"] == name
