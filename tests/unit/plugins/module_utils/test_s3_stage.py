"""Unit tests for module_utils/s3_stage.py: planning, manifest, model checks, hashing (no network)."""

import hashlib
import json
import os
import struct
import sys

import pytest
from ansible_collections.llmops.serving.plugins.module_utils import s3_body, s3_manifest
from ansible_collections.llmops.serving.plugins.module_utils import s3_hash_cache as hash_cache
from ansible_collections.llmops.serving.plugins.module_utils import s3_model_files as model_files
from ansible_collections.llmops.serving.plugins.module_utils import s3_stage_common as common
from ansible_collections.llmops.serving.plugins.module_utils import s3_transfer as transfer

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "fixtures"))
from make_tiny_model import make_tiny_model, parameter_count  # noqa: E402 - importable only after the fixtures dir is on sys.path

MIB = 1024 * 1024


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "model"
    make_tiny_model(str(path), seed=7)
    return path


# ---- names and sizes -----------------------------------------------------------------------

@pytest.mark.parametrize("raw,want", [("models/llama", "models/llama/"), ("/a//b/", "a/b/"), ("", ""),
                                      (None, ""), ("x", "x/")])
def test_normalize_prefix(raw, want):
    assert common.normalize_prefix(raw) == want


def test_normalize_prefix_rejects_dot_segments():
    with pytest.raises(common.StageError, match=r"'\.\.'"):
        common.normalize_prefix("a/../b")


@pytest.mark.parametrize("raw,want", [("64MiB", 64 * MIB), ("64MB", 64 * MIB), ("64m", 64 * MIB),
                                      ("1GiB", 1024 * MIB), ("5 MiB", 5 * MIB), (8388608, 8 * MIB),
                                      ("8388608", 8 * MIB)])
def test_parse_size(raw, want):
    assert common.parse_size(raw) == want


@pytest.mark.parametrize("raw", ["lots", "64XB", "-5MiB", ""])
def test_parse_size_errors_name_the_option(raw):
    with pytest.raises(common.StageError, match="part_size"):
        common.parse_size(raw)


def test_part_ranges_cover_file_exactly():
    ranges = common.part_ranges(10 * MIB + 3, 4 * MIB)
    assert [r[0] for r in ranges] == [1, 2, 3]
    assert sum(r[2] for r in ranges) == 10 * MIB + 3
    assert ranges[-1] == (3, 8 * MIB, 2 * MIB + 3)
    assert common.part_ranges(0, 4 * MIB) == [(1, 0, 0)]


def test_part_size_grows_to_stay_under_10000_parts():
    size = 1024 * 1024 * MIB  # 1 TiB
    psize = common.part_size_for(size, 8 * MIB)
    assert psize % MIB == 0
    assert len(common.part_ranges(size, psize)) <= common.MAX_PARTS
    assert common.part_size_for(100 * MIB, 8 * MIB) == 8 * MIB


def test_path_filters():
    assert common.path_selected("model-00001-of-00002.safetensors", [], common.DEFAULT_EXCLUDE)
    assert not common.path_selected(".git/objects/ab", [], common.DEFAULT_EXCLUDE)
    assert not common.path_selected(".cache/huggingface/x.lock", [], common.DEFAULT_EXCLUDE)
    assert not common.path_selected(common.MANIFEST_NAME, [], [])
    assert not common.path_selected("original/consolidated.pth", [], ["original/*"])
    assert common.path_selected("sub/config.json", ["*.json"], [])
    assert not common.path_selected("weights.bin", ["*.json", "*.safetensors"], [])


def test_validate_stage_params_lists_every_problem():
    errors = common.validate_stage_params({"mode": "push", "src": None, "dest": "/x", "concurrency": 0,
                                          "part_size": MIB, "bucket": ""})
    text = " ".join(errors)
    assert "mode=push needs src" in text
    assert "dest is only used with mode=pull" in text
    assert "concurrency must be between 1 and 256" in text
    assert "part_size must be between 5MiB and 5GiB" in text
    assert "bucket" in text
    assert common.validate_stage_params({"mode": "verify", "concurrency": 4, "part_size": 8 * MIB, "bucket": "b"}) == []


# ---- model files ---------------------------------------------------------------------------

def test_tiny_model_headers_parse_and_count_parameters(tiny):
    total = 0
    for name in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        path = tiny / name
        blob = path.read_bytes()
        header, count = model_files.parse_safetensors_header(blob, len(blob), name)
        assert header["__metadata__"] == {"format": "pt"}
        total += count
    assert total == parameter_count()


def test_tiny_model_is_deterministic_by_seed(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    make_tiny_model(str(a), seed=3)
    make_tiny_model(str(b), seed=3)
    make_tiny_model(str(c), seed=4)
    shard = "model-00001-of-00002.safetensors"
    assert (a / shard).read_bytes() == (b / shard).read_bytes()
    assert (a / shard).read_bytes() != (c / shard).read_bytes()
    assert (a / "config.json").read_bytes() == (c / "config.json").read_bytes()


def test_truncated_safetensors_is_rejected(tiny):
    blob = (tiny / "model-00002-of-00002.safetensors").read_bytes()
    cut = blob[:-100]
    with pytest.raises(common.StageError, match="exceed"):
        model_files.parse_safetensors_header(cut, len(cut), "shard2")
    with pytest.raises(common.StageError, match="header length"):
        model_files.parse_safetensors_header(struct.pack("<Q", 10 ** 9) + b"{}", 100, "bad")
    with pytest.raises(common.StageError, match="not JSON"):
        model_files.parse_safetensors_header(struct.pack("<Q", 4) + b"nope", 12, "bad")


def test_check_model_files_default_rules():
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    complete = ["config.json", common.INDEX_NAME, "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors"]
    assert model_files.check_model_files(complete, None, index) == []
    errors = model_files.check_model_files(complete[:3], None, index)
    assert errors == ["shard model-00002-of-00002.safetensors listed in model.safetensors.index.json is missing"]
    errors = model_files.check_model_files(["tokenizer.json", "pytorch_model.bin"], None, None)
    assert any("config.json is missing" in e for e in errors)
    assert any("no *.safetensors" in e for e in errors)
    assert model_files.check_model_files(["a.txt"], ["a.txt"], None) == []
    assert model_files.check_model_files(["a.txt"], ["b.txt"], None) == ["required file b.txt is missing"]
    assert model_files.check_model_files([], [], None) == []


def test_estimate_matches_exact_count_for_llama_config(tiny):
    config = json.loads((tiny / "config.json").read_text())
    assert model_files.estimate_parameters(config) == parameter_count()
    assert model_files.estimate_parameters({"architectures": ["X"]}) is None


def test_summarize_model(tiny):
    config = json.loads((tiny / "config.json").read_text())
    files = {p.name: p.stat().st_size for p in tiny.iterdir()}
    summary = model_files.summarize_model(config, files, parameters=parameter_count())
    assert summary["architecture"] == "LlamaForCausalLM"
    assert summary["dtype"] == "bfloat16"
    assert summary["parameters"] == parameter_count()
    assert summary["parameters_source"] == "safetensors_header"
    assert summary["weight_files"] == 2
    assert summary["total_bytes"] == sum(files.values())
    assert summary["weights_bytes"] < summary["total_bytes"]
    estimated = model_files.summarize_model(config, files)
    assert estimated["parameters_source"] == "config_estimate"


def test_inspect_local_model_collects_all_problems(tiny, monkeypatch):
    stats = hash_cache.scan_local_dir(str(tiny), [], common.DEFAULT_EXCLUDE)
    config, params = model_files.inspect_local_model(str(tiny), stats, None)
    assert config["model_type"] == "llama" and params == parameter_count()

    os.unlink(tiny / "config.json")
    (tiny / "model-00002-of-00002.safetensors").write_bytes(b"\x01\x02")
    stats = hash_cache.scan_local_dir(str(tiny), [], common.DEFAULT_EXCLUDE)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if p.endswith("tokenizer.json") else real_access(p, m))
    with pytest.raises(common.StageError) as info:
        model_files.inspect_local_model(str(tiny), stats, None)
    msg = info.value.message
    assert "config.json is missing" in msg
    assert "model-00002-of-00002.safetensors is not a safetensors file" in msg
    assert "tokenizer.json is not readable" in msg


def test_scan_reports_dangling_symlink(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    os.symlink(tmp_path / "gone", tmp_path / "model.safetensors")
    with pytest.raises(common.StageError, match="cannot read .*model.safetensors"):
        hash_cache.scan_local_dir(str(tmp_path), [], [])


# ---- manifest ------------------------------------------------------------------------------

def sha(text):
    return hashlib.sha256(text.encode()).hexdigest()


def test_manifest_roundtrip_and_content_ignores_timestamp():
    files = {"config.json": {"size": 2, "sha256": sha("{}"), "etag": "e1"}}
    a = s3_manifest.build_manifest(files, {"architecture": "X"}, created="2026-01-01T00:00:00Z")
    b = s3_manifest.build_manifest(files, {"architecture": "X"}, created="2026-02-02T00:00:00Z")
    assert s3_manifest.manifest_content(a) == s3_manifest.manifest_content(b)
    parsed = s3_manifest.parse_manifest(json.dumps(a).encode(), "s3://b/p/.llmops-manifest.json")
    assert parsed["files"]["config.json"]["sha256"] == sha("{}")
    assert parsed["total_bytes"] == 2


@pytest.mark.parametrize("raw,match", [
    (b"not json", "not valid JSON"),
    (json.dumps({"format": "other"}).encode(), "not an llmops.serving model manifest"),
    (json.dumps({"format": s3_manifest.MANIFEST_FORMAT, "version": 99, "files": {}}).encode(), "version 99"),
    (json.dumps({"format": s3_manifest.MANIFEST_FORMAT, "version": 1, "files": {"a": {"size": 1}}}).encode(),
     "lacks size"),
    (json.dumps({"format": s3_manifest.MANIFEST_FORMAT, "version": 1,
                 "files": {"../x": {"size": 1, "sha256": "0" * 64}}}).encode(), "unsafe path"),
])
def test_parse_manifest_rejects_bad_manifests(raw, match):
    with pytest.raises(common.StageError, match=match):
        s3_manifest.parse_manifest(raw, "s3://b/p/m")


def test_listing_problems_names_each_file():
    manifest = {"files": {
        "a": {"size": 1, "sha256": "0" * 64, "etag": "ea"},
        "b": {"size": 2, "sha256": "0" * 64, "etag": "eb"},
        "c": {"size": 3, "sha256": "0" * 64, "etag": "ec"},
        "d": {"size": 4, "sha256": "0" * 64, "etag": "ed"},
        "e": {"size": 5, "sha256": "0" * 64, "etag": "ee"},
    }}
    remote = {"a": {"size": 1, "etag": "ea", "last_modified": 100},
              "b": {"size": 9, "etag": "eb", "last_modified": 100},
              "c": {"size": 3, "etag": "XX", "last_modified": 100},
              "e": {"size": 5, "etag": "ee", "last_modified": 500}}
    problems = dict(s3_manifest.listing_problems(manifest, remote, manifest_modified=200))
    assert set(problems) == {"b", "c", "d", "e"}
    assert "size 9" in problems["b"]
    assert "rewritten" in problems["c"]
    assert "missing" in problems["d"]
    assert "modified after" in problems["e"]


# ---- planning ------------------------------------------------------------------------------

def test_plan_push_first_run_uploads_everything():
    local = {"config.json": {"size": 2, "sha256": sha("a")}, "w.safetensors": {"size": 9, "sha256": sha("b")}}
    plan = s3_manifest.plan_push(local, {}, None)
    assert [r for r, _why in plan["upload"]] == ["config.json", "w.safetensors"]
    assert plan["skip"] == [] and plan["delete"] == []


def test_plan_push_skips_by_size_and_sha_never_by_etag():
    local = {"same": {"size": 5, "sha256": sha("s")}, "changed": {"size": 5, "sha256": sha("new")},
             "grown": {"size": 6, "sha256": sha("g")}, "rewritten": {"size": 5, "sha256": sha("r")}}
    manifest = {"files": {
        "same": {"size": 5, "sha256": sha("s"), "etag": "e-same"},
        "changed": {"size": 5, "sha256": sha("old"), "etag": "e-changed"},
        "grown": {"size": 5, "sha256": sha("g0"), "etag": "e-grown"},
        "rewritten": {"size": 5, "sha256": sha("r"), "etag": "e-old"},
    }}
    remote = {"same": {"size": 5, "etag": "e-same"}, "changed": {"size": 5, "etag": "e-changed"},
              "grown": {"size": 5, "etag": "e-grown"}, "rewritten": {"size": 5, "etag": "e-new"}}
    plan = s3_manifest.plan_push(local, remote, manifest)
    reasons = dict(plan["upload"])
    assert plan["skip"] == ["same"]
    assert plan["files"]["same"]["etag"] == "e-same"
    assert "sha256 differs" in reasons["changed"]
    assert "size changed" in reasons["grown"]
    # The manifest entry describes another object (ETag differs): its sha256 cannot be trusted.
    assert "content unknown" in reasons["rewritten"]


def test_push_reason():
    info = {"size": 5, "sha256": sha("a")}
    assert s3_manifest.push_reason(info, None, None) == "new"
    assert s3_manifest.push_reason(info, {"size": 4}, sha("a")).startswith("size changed")
    assert s3_manifest.push_reason(info, {"size": 5}, None).startswith("content unknown")
    assert s3_manifest.push_reason(info, {"size": 5}, sha("b")) == "content changed (sha256 differs)"
    assert s3_manifest.push_reason(info, {"size": 5}, sha("a")) is None


def test_hash_files_iter_yields_every_file_largest_first(tmp_path):
    stats = {}
    for i, size in enumerate((10, 5000, 300)):
        p = tmp_path / ("f%d" % i)
        p.write_bytes(os.urandom(size))
        stats["f%d" % i] = (str(p), os.stat(p))
    got = list(hash_cache.hash_files_iter(stats, hash_cache.HashCache(None), workers=1))
    assert [rel for rel, _sha in got] == ["f1", "f2", "f0"]
    for rel, digest in got:
        with open(stats[rel][0], "rb") as handle:
            assert digest == hashlib.sha256(handle.read()).hexdigest()


def test_plan_push_uses_object_metadata_when_no_manifest():
    local = {"a": {"size": 5, "sha256": sha("a")}, "b": {"size": 5, "sha256": sha("b")}}
    remote = {"a": {"size": 5, "etag": "x"}, "b": {"size": 5, "etag": "y"}}
    assert s3_manifest.needs_head("a", remote["a"], 5, None)
    assert not s3_manifest.needs_head("a", remote["a"], 6, None)
    plan = s3_manifest.plan_push(local, remote, None, head_shas={"a": sha("a"), "b": sha("other")})
    assert plan["skip"] == ["a"]
    assert dict(plan["upload"]) == {"b": "content changed (sha256 differs)"}


def test_plan_push_delete_extra_respects_filters():
    local = {"config.json": {"size": 1, "sha256": sha("c")}}
    remote = {"config.json": {"size": 1, "etag": "e"}, "old.safetensors": {"size": 1, "etag": "e"},
              "original/x.pth": {"size": 1, "etag": "e"}}
    plan = s3_manifest.plan_push(local, remote, None, delete_extra=True, exclude=["original/*"])
    assert plan["delete"] == ["old.safetensors"]
    assert s3_manifest.plan_push(local, remote, None, delete_extra=False)["delete"] == []


def test_plan_pull():
    manifest = {"a": {"size": 1, "sha256": sha("a")}, "b": {"size": 2, "sha256": sha("b")},
                "c": {"size": 3, "sha256": sha("c")}, "d": {"size": 4, "sha256": sha("d")}}
    local = {"a": 1, "b": 2, "c": 9, "extra": 5}
    plan = s3_manifest.plan_pull(manifest, local, {"a": sha("a"), "b": sha("tampered")}, delete_extra=True,
                                 local_extra=["extra"])
    assert plan["skip"] == ["a"]
    assert [r for r, _why in plan["download"]] == ["b", "c", "d"]
    assert plan["delete"] == ["extra"]


def test_resume_keeps_only_the_parts_the_server_accepted():
    expected = common.part_ranges(20 * MIB, 5 * MIB)
    listed = {1: {"size": 5 * MIB, "etag": '"aa"'}, 2: {"size": 5 * MIB, "etag": '"bb"'},
              3: {"size": 1 * MIB, "etag": '"cc"'}}
    kept, missing = s3_manifest.resume_parts(expected, listed, {1: '"AA"', 2: '"zz"', 3: '"cc"'})
    assert kept == {1: '"aa"'}
    assert [m[0] for m in missing] == [2, 3, 4]
    kept, missing = s3_manifest.resume_parts(expected, listed, {})
    assert kept == {} and len(missing) == 4


def test_interleave_spreads_parts_over_files():
    assert common.interleave([[1, 2, 3], ["a"], [10, 20]]) == [1, "a", 10, 2, 20, 3]
    assert common.interleave([]) == []


def test_render_diff():
    diff = s3_manifest.render_diff({"a": {"size": 1, "sha256": "x"}},
                                   {"a": {"size": 2, "sha256": "y"}, "b": {"size": 0}})
    assert diff["before"] == "a 1 x\n"
    assert diff["after"] == "a 2 y\nb 0 ?\n"


# ---- local hashing -------------------------------------------------------------------------

def test_hash_cache_reuses_until_file_changes(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"a" * 1000)
    cache = hash_cache.HashCache(str(tmp_path / "cache.json"))
    assert cache.lookup(str(path), os.stat(path)) is None
    s1 = cache.hash(str(path), os.stat(path))
    assert s1 == hashlib.sha256(b"a" * 1000).hexdigest()
    cache.save()

    cache = hash_cache.HashCache(str(tmp_path / "cache.json"))
    assert cache.lookup(str(path), os.stat(path)) == s1
    assert cache.hash(str(path), os.stat(path)) == s1

    # Same size, mtime restored: ctime still moves, so the change is seen.
    before = os.stat(path)
    path.write_bytes(b"b" * 1000)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert after.st_size == before.st_size and after.st_mtime_ns == before.st_mtime_ns
    assert cache.hash(str(path), after) == hashlib.sha256(b"b" * 1000).hexdigest()


def test_volatile_entries_hold_only_within_this_boot(tmp_path, monkeypatch):
    path = tmp_path / "downloaded"
    path.write_bytes(b"x" * 10)
    cache = hash_cache.HashCache(str(tmp_path / "c.json"))
    cache.store(str(path), os.stat(path), "f" * 64, volatile=True)
    assert cache.lookup(str(path), os.stat(path)) == "f" * 64
    monkeypatch.setattr(hash_cache, "current_boot_id", lambda: "another-boot")
    assert cache.lookup(str(path), os.stat(path)) is None
    assert cache.hash(str(path), os.stat(path)) == hashlib.sha256(b"x" * 10).hexdigest()


def test_hash_files_in_threads(tmp_path):
    stats = {}
    for i in range(5):
        p = tmp_path / ("f%d" % i)
        p.write_bytes(os.urandom(10000 + i))
        stats["f%d" % i] = (str(p), os.stat(p))
    shas = dict(hash_cache.hash_files_iter(stats, hash_cache.HashCache(None), workers=4))
    for rel, (path, _stat) in stats.items():
        with open(path, "rb") as handle:
            assert shas[rel] == hashlib.sha256(handle.read()).hexdigest()


def test_ordered_hasher_out_of_order_parts(tmp_path):
    data = os.urandom(3 * MIB + 17)
    path = tmp_path / "d"
    path.write_bytes(data)
    fd = os.open(str(path), os.O_RDONLY)
    try:
        ranges = common.part_ranges(len(data), MIB)
        hasher = s3_body.OrderedHasher(fd, ranges)
        for index in (2, 0, 3, 1):
            hasher.part_done(index)
        assert hasher.complete()
        assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()
    finally:
        os.close(fd)


def test_hash_range_feeds_exactly_the_range_through_a_small_buffer(tmp_path):
    data = os.urandom(1 * MIB + 4097)
    path = tmp_path / "d"
    path.write_bytes(data)
    fd = os.open(str(path), os.O_RDONLY)
    try:
        digest = hashlib.sha256()
        buf = bytearray(4096)  # smaller than the range and not a divisor of it
        s3_body._hash_range(fd, 5, len(data) - 9, digest, buf)
        assert digest.hexdigest() == hashlib.sha256(data[5:-4]).hexdigest()
        with pytest.raises(common.StageError, match="short read"):
            s3_body._hash_range(fd, len(data) - 3, 10, hashlib.sha256(), buf)
    finally:
        os.close(fd)


class _PlainBody(object):
    """A body without an http.client stream underneath (another botocore transport)."""

    def __init__(self, data):
        self.data = data
        self.closed = False

    def read(self, amt):
        out, self.data = self.data[:amt], self.data[amt:]
        return out

    def close(self):
        self.closed = True


def test_body_reader_falls_back_to_read_and_release_closes():
    data = os.urandom(300 * 1024)
    body = _PlainBody(data)
    readinto = s3_body.body_reader(body)
    buf = bytearray(128 * 1024)
    view = memoryview(buf)
    got = bytearray()
    while True:
        n = readinto(view)
        if not n:
            break
        got += view[:n]
    assert bytes(got) == data
    s3_body.release_body(body)
    assert body.closed


def test_upload_journal_roundtrip(tmp_path):
    journal = transfer.UploadJournal(str(tmp_path / "j"))
    assert journal.load("b", "k") is None
    journal.save({"bucket": "b", "key": "k", "upload_id": "u", "sha256": "s", "size": 1, "part_size": 5, "parts": {}})
    assert journal.load("b", "k")["upload_id"] == "u"
    assert journal.load("b", "other") is None
    journal.forget("b", "k")
    assert journal.load("b", "k") is None


def test_tiny_model_loads_with_reference_parsers(tiny):
    """The fixture is a real model directory: Hugging Face's own safetensors and tokenizers read it."""
    import safetensors
    import tokenizers

    index = json.loads((tiny / common.INDEX_NAME).read_text())
    seen = {}
    for shard in sorted(set(index["weight_map"].values())):
        for name, tensor in safetensors.deserialize((tiny / shard).read_bytes()):
            assert tensor["dtype"] in ("BF16", "bfloat16")
            seen[name] = shard
            count = 1
            for dim in tensor["shape"]:
                count *= dim
            assert len(tensor["data"]) == 2 * count
    assert seen == index["weight_map"]
    tok = tokenizers.Tokenizer.from_file(str(tiny / "tokenizer.json"))
    config = json.loads((tiny / "config.json").read_text())
    assert tok.get_vocab_size() == config["vocab_size"]
    assert tok.encode("tok7 tok8").ids == [7, 8]


def test_part_body_reads_slices_rewinds_and_sizes():
    data = os.urandom(2 * s3_body.SEND_CHUNK + 1000)
    body = s3_body.PartBody(memoryview(bytearray(data)))
    assert len(body) == len(data) and body.tell() == 0
    # urllib3 asks for 16 KiB blocks: a read hands out SEND_CHUNK bytes instead (fewer trips through Python)
    first = body.read(16384)
    assert bytes(first) == data[:s3_body.SEND_CHUNK] and body.tell() == s3_body.SEND_CHUNK
    bigger = body.read(s3_body.SEND_CHUNK + 10)
    assert bytes(bigger) == data[s3_body.SEND_CHUNK:2 * s3_body.SEND_CHUNK + 10]
    rest = body.read()
    assert bytes(rest) == data[2 * s3_body.SEND_CHUNK + 10:] and not body.read(10)
    assert body.seek(0) == 0 and bytes(body.read(5)) == data[:s3_body.SEND_CHUNK]
    assert body.seek(-3, 2) == len(data) - 3 and bytes(body.read(100)) == data[-3:]
    assert body.seek(10, 1) == len(data)  # clamped to the end
    # what botocore does for the SigV4 payload hash and urllib3 for the socket: read in chunks until
    # an empty chunk; every byte comes out exactly once, in order
    for size in (1024, 16384, 1024 * 1024):
        body.seek(0)
        digest = hashlib.sha256()
        for chunk in iter(lambda size=size: body.read(size), b""):
            digest.update(chunk)
        assert digest.hexdigest() == hashlib.sha256(data).hexdigest()


def test_read_part_fills_from_offset_and_reports_short_reads(tmp_path):
    path = tmp_path / "f"
    data = os.urandom(300 * 1024)
    path.write_bytes(data)
    fd = os.open(str(path), os.O_RDONLY)
    try:
        buf = memoryview(bytearray(128 * 1024))
        assert s3_body.read_part(fd, buf, 100) == len(buf) and bytes(buf) == data[100:100 + len(buf)]
        assert s3_body.read_part(fd, buf, len(data) - 10) == 10 and bytes(buf[:10]) == data[-10:]
    finally:
        os.close(fd)


def test_default_concurrency_is_16_on_small_machines_and_scales_with_cores_up_to_32():
    assert [common.default_concurrency(c) for c in (None, 1, 2, 8, 12, 16, 32, 128)] == [16, 16, 16, 16, 24, 32, 32, 32]
