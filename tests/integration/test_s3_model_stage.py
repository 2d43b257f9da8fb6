"""s3_model_stage and the model_staging role against real MinIO servers.

The sandbox MinIO (buckets ``it-s3-*``, removed afterwards) covers push/re-run/change/check mode/
tamper/pull/errors/role; a throwaway MinIO on its own port covers what needs a server we may pause,
kill or put behind TLS.
"""

import hashlib
import json
import os
import sys
import time

import pytest

from tests.helpers.processes import kill_tree
from tests.helpers.sandbox import run_playbook, task_results, total_changed
from tests.integration.s3_helpers import (
    ThrowawayMinio,
    client_for,
    delete_bucket,
    run_stage,
    run_stage_full,
    sandbox_s3,
    snapshot,
    start_stage,
    unique_bucket,
)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures"))
from make_tiny_model import make_tiny_model, parameter_count  # noqa: E402 - importable only after the fixtures dir is on sys.path

pytestmark = pytest.mark.sandbox
MANIFEST = ".llmops-manifest.json"
MIB = 1024 * 1024


def sha256(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


@pytest.fixture(scope="module")
def conn(sandbox_env):
    return sandbox_s3(sandbox_env)


@pytest.fixture(scope="module")
def client(conn):
    return client_for(conn)


@pytest.fixture
def bucket(client):
    name = unique_bucket("t")
    client.create_bucket(Bucket=name)
    yield name
    delete_bucket(client, name)


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "tiny-llama"
    make_tiny_model(str(path), seed=11)
    return path


def opts(tmp_path, **extra):
    base = {"cache_dir": str(tmp_path / "cache"), "concurrency": 4, "part_size": "5MiB"}
    base.update(extra)
    return base


def test_push_rerun_and_single_file_change(conn, client, bucket, model, tmp_path):
    first = run_stage(conn, mode="push", src=str(model), bucket=bucket, prefix="models/tiny", **opts(tmp_path))
    assert first.get("failed") is not True, first.get("msg")
    assert first["changed"] is True
    files = sorted(p.name for p in model.iterdir())
    assert sorted(first["transferred"]) == files
    assert first["bytes_transferred"] == sum(p.stat().st_size for p in model.iterdir())
    assert first["checkpoint_path"] == "s3://%s/models/tiny/" % bucket
    assert first["summary"]["architecture"] == "LlamaForCausalLM"
    assert first["summary"]["parameters"] == parameter_count()
    assert first["summary"]["parameters_source"] == "safetensors_header"

    before = snapshot(client, bucket)
    assert sorted(before) == sorted(["models/tiny/" + f for f in files] + ["models/tiny/" + MANIFEST])
    manifest = json.loads(client.get_object(Bucket=bucket, Key="models/tiny/" + MANIFEST)["Body"].read())
    for name in files:
        assert manifest["files"][name]["sha256"] == sha256(model / name)
        assert manifest["files"][name]["size"] == (model / name).stat().st_size
    assert manifest["summary"]["dtype"] == "bfloat16"
    # The manifest is the last object written.
    last = max(before.items(), key=lambda kv: kv[1][2])[0]
    assert last.endswith(MANIFEST)

    second = run_stage(conn, mode="push", src=str(model), bucket=bucket, prefix="models/tiny", **opts(tmp_path))
    assert second["changed"] is False
    assert second["bytes_transferred"] == 0 and second["transferred"] == []
    assert second["files_skipped"] == len(files)
    assert snapshot(client, bucket) == before, "a no-op re-run wrote objects"

    # Change one file in place, same size: only it moves.
    shard = model / "model-00002-of-00002.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    third = run_stage(conn, mode="push", src=str(model), bucket=bucket, prefix="models/tiny", **opts(tmp_path))
    assert third["changed"] is True
    assert third["transferred"] == ["model-00002-of-00002.safetensors"]
    assert third["bytes_transferred"] == len(data)
    after = snapshot(client, bucket)
    changed_keys = sorted(k for k in after if after[k] != before.get(k))
    assert changed_keys == ["models/tiny/" + MANIFEST, "models/tiny/model-00002-of-00002.safetensors"]

    verify = run_stage(conn, mode="verify", bucket=bucket, prefix="models/tiny", verify_content=True, **opts(tmp_path))
    assert verify.get("failed") is not True, verify.get("msg")
    assert verify["changed"] is False and verify["bytes_read"] == sum(p.stat().st_size for p in model.iterdir())

    # A file removed from the source: kept in the bucket by default, deleted with delete_extra.
    (model / "special_tokens_map.json").unlink()
    kept = run_stage(conn, mode="push", src=str(model), bucket=bucket, prefix="models/tiny", **opts(tmp_path))
    assert kept["deleted"] == [] and "models/tiny/special_tokens_map.json" in snapshot(client, bucket)
    pruned = run_stage(
        conn, mode="push", src=str(model), bucket=bucket, prefix="models/tiny", delete_extra=True, **opts(tmp_path)
    )
    assert pruned["changed"] is True and pruned["deleted"] == ["special_tokens_map.json"]
    assert pruned["bytes_transferred"] == 0
    assert "models/tiny/special_tokens_map.json" not in snapshot(client, bucket)
    manifest = json.loads(client.get_object(Bucket=bucket, Key="models/tiny/" + MANIFEST)["Body"].read())
    assert "special_tokens_map.json" not in manifest["files"]


def test_check_mode_writes_nothing_and_reports_diff(conn, client, bucket, model, tmp_path):
    checked = run_stage(
        conn, check=True, diff=True, mode="push", src=str(model), bucket=bucket, prefix="cm", **opts(tmp_path)
    )
    assert checked["changed"] is True
    assert len(checked["transferred"]) == len(list(model.iterdir()))
    assert snapshot(client, bucket) == {}
    assert "config.json" in checked["diff"]["after"] and checked["diff"]["before"] == ""

    run_stage(conn, mode="push", src=str(model), bucket=bucket, prefix="cm", **opts(tmp_path))
    before = snapshot(client, bucket)
    (model / "tokenizer_config.json").write_text('{"changed": true}\n')
    (model / "extra.txt").write_text("x")
    checked = run_stage(
        conn, check=True, diff=True, mode="push", src=str(model), bucket=bucket, prefix="cm", **opts(tmp_path)
    )
    assert checked["changed"] is True
    assert sorted(checked["transferred"]) == ["extra.txt", "tokenizer_config.json"]
    assert snapshot(client, bucket) == before

    # Check mode of a missing bucket with create_bucket: reported, not created.
    missing = unique_bucket("missing")
    checked = run_stage(
        conn, check=True, mode="push", src=str(model), bucket=missing, prefix="cm", create_bucket=True, **opts(tmp_path)
    )
    assert checked["changed"] is True and checked["bucket_created"] is True
    assert missing not in [b["Name"] for b in client.list_buckets()["Buckets"]]


def test_tampered_object_fails_verify_and_pull_naming_the_file(conn, client, bucket, model, tmp_path):
    run_stage(conn, mode="push", src=str(model), bucket=bucket, prefix="tamper", **opts(tmp_path))
    key = "tamper/model-00001-of-00002.safetensors"
    body = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    body[100] ^= 0x01
    client.put_object(Bucket=bucket, Key=key, Body=bytes(body))

    verify = run_stage(conn, mode="verify", bucket=bucket, prefix="tamper", **opts(tmp_path))
    assert verify["failed"] is True
    assert "model-00001-of-00002.safetensors" in verify["msg"] and "manifest" in verify["msg"]

    dest = tmp_path / "cache-dir"
    pulled = run_stage(conn, mode="pull", bucket=bucket, prefix="tamper", dest=str(dest), **opts(tmp_path))
    assert pulled["failed"] is True
    assert "model-00001-of-00002.safetensors" in pulled["msg"]
    assert not dest.exists() or not any(dest.iterdir()), "pull wrote files from a prefix it refused"

    # A push from the source repairs it; then both pass.
    repaired = run_stage(conn, mode="push", src=str(model), bucket=bucket, prefix="tamper", **opts(tmp_path))
    assert repaired["transferred"] == ["model-00001-of-00002.safetensors"]
    verify = run_stage(conn, mode="verify", bucket=bucket, prefix="tamper", **opts(tmp_path))
    assert verify.get("failed") is not True, verify.get("msg")


def test_pull_and_verify_refuse_a_prefix_without_manifest(conn, client, bucket, model, tmp_path):
    run_stage(conn, mode="push", src=str(model), bucket=bucket, prefix="nomani", **opts(tmp_path))
    client.delete_object(Bucket=bucket, Key="nomani/" + MANIFEST)
    for mode, extra in (("verify", {}), ("pull", {"dest": str(tmp_path / "d")})):
        result = run_stage(conn, mode=mode, bucket=bucket, prefix="nomani", **opts(tmp_path, **extra))
        assert result["failed"] is True
        assert MANIFEST in result["msg"] and "never completely staged" in result["msg"]
    assert not (tmp_path / "d").exists()


def test_pull_into_cache_is_noop_when_intact(conn, client, bucket, model, tmp_path):
    run_stage(conn, mode="push", src=str(model), bucket=bucket, prefix="pull", **opts(tmp_path))
    dest = tmp_path / "node-cache"
    pulled = run_stage(
        conn,
        mode="pull",
        bucket=bucket,
        prefix="pull",
        dest=str(dest),
        **opts(tmp_path, cache_dir=str(tmp_path / "pull-cache")),
    )
    assert pulled.get("failed") is not True, pulled.get("msg")
    assert pulled["changed"] is True
    for item in model.iterdir():
        assert sha256(dest / item.name) == sha256(item)
    assert (dest / MANIFEST).is_file()
    assert not [p for p in dest.iterdir() if p.name.endswith(".llmops-partial")]

    again = run_stage(
        conn,
        mode="pull",
        bucket=bucket,
        prefix="pull",
        dest=str(dest),
        **opts(tmp_path, cache_dir=str(tmp_path / "pull-cache")),
    )
    assert again["changed"] is False and again["bytes_transferred"] == 0

    # Without the hash cache (fresh cache dir) the intact files are re-hashed, still nothing moves.
    fresh = run_stage(
        conn,
        mode="pull",
        bucket=bucket,
        prefix="pull",
        dest=str(dest),
        **opts(tmp_path, cache_dir=str(tmp_path / "other-cache")),
    )
    assert fresh["changed"] is False

    # A corrupted local file (same size) is found and replaced, alone.
    local = dest / "model-00002-of-00002.safetensors"
    data = bytearray(local.read_bytes())
    data[10] ^= 0x55
    local.write_bytes(bytes(data))
    fixed = run_stage(
        conn,
        mode="pull",
        bucket=bucket,
        prefix="pull",
        dest=str(dest),
        **opts(tmp_path, cache_dir=str(tmp_path / "pull-cache")),
    )
    assert fixed["transferred"] == ["model-00002-of-00002.safetensors"]
    assert sha256(local) == sha256(model / "model-00002-of-00002.safetensors")


def test_errors_before_any_write(conn, client, bucket, model, tmp_path, sandbox_env):
    os.unlink(model / "config.json")
    (model / "model-00002-of-00002.safetensors").unlink()
    result = run_stage(conn, mode="push", src=str(model), bucket=bucket, prefix="bad", **opts(tmp_path))
    assert result["failed"] is True
    assert "config.json is missing" in result["msg"]
    assert "model-00002-of-00002.safetensors listed in model.safetensors.index.json is missing" in result["msg"]
    assert snapshot(client, bucket) == {}

    good = tmp_path / "good"
    make_tiny_model(str(good), seed=1)
    bad_creds = dict(conn, secret_key="wrong-secret-key-value")
    result, run = run_stage_full(bad_creds, mode="push", src=str(good), bucket=bucket, prefix="x", **opts(tmp_path))
    assert result["failed"] is True
    assert "credentials were rejected" in result["msg"]
    assert conn["endpoint_url"] in result["msg"] and bucket in result["msg"]
    assert "wrong-secret-key-value" not in run["stdout"] + run["stderr"]

    missing = unique_bucket("nobucket")
    result = run_stage(conn, mode="push", src=str(good), bucket=missing, prefix="x", **opts(tmp_path))
    assert result["failed"] is True
    assert "does not exist" in result["msg"] and "create_bucket: true" in result["msg"]
    try:
        created = run_stage(
            conn, mode="push", src=str(good), bucket=missing, prefix="x", create_bucket=True, **opts(tmp_path)
        )
        assert created["bucket_created"] is True and created["changed"] is True
    finally:
        delete_bucket(client, missing)

    result = run_stage(
        conn, mode="push", src=str(good), bucket=bucket, prefix="x", **opts(tmp_path, part_size="1MiB", concurrency=0)
    )
    assert result["failed"] is True
    assert "part_size must be between 5MiB and 5GiB" in result["msg"] and "concurrency" in result["msg"]


@pytest.fixture
def throwaway(tmp_path_factory):
    servers = []

    def make(tls=False):
        server = ThrowawayMinio(str(tmp_path_factory.mktemp("minio")), tls=tls).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.destroy()


def test_tls_failure_is_explained_and_ca_bundle_fixes_it(throwaway, tmp_path):
    server = throwaway(tls=True)
    client_for(server.conn(ca_bundle=server.ca_cert)).create_bucket(Bucket="it-s3-tls")
    model = tmp_path / "m"
    make_tiny_model(str(model), seed=2)
    result = run_stage(server.conn(), mode="push", src=str(model), bucket="it-s3-tls", prefix="m", **opts(tmp_path))
    assert result["failed"] is True
    assert "TLS" in result["msg"] and "ca_bundle" in result["msg"] and server.endpoint in result["msg"]
    ok = run_stage(
        server.conn(ca_bundle=server.ca_cert),
        mode="push",
        src=str(model),
        bucket="it-s3-tls",
        prefix="m",
        **opts(tmp_path),
    )
    assert ok.get("failed") is not True, ok.get("msg")
    assert ok["changed"] is True


SHARDS = ["big/model-00001-of-00002.safetensors", "big/model-00002-of-00002.safetensors"]


def _uploads(client, bucket):
    """(key, upload id) in progress; MinIO lists uploads only for an exact key after a restart."""
    out = []
    for key in SHARDS:
        for up in client.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads", []) or []:
            if up["Key"] == key:
                out.append((key, up["UploadId"]))
    return out


def _finished_shards(client, bucket):
    objects = client.list_objects_v2(Bucket=bucket, Prefix="big/").get("Contents", []) or []
    return sorted(o["Key"] for o in objects if o["Key"] in SHARDS)


def _parts_uploaded(client, bucket, skip_keys=()):
    total = 0
    for key, upload_id in _uploads(client, bucket):
        if key in skip_keys:
            continue
        try:
            total += len(client.list_parts(Bucket=bucket, Key=key, UploadId=upload_id).get("Parts", []) or [])
        except client.exceptions.NoSuchUpload:
            continue  # completed since it was listed
    return total


def test_resume_after_server_killed_mid_push(throwaway, tmp_path):
    server = throwaway()
    admin = client_for(server.conn())
    admin.create_bucket(Bucket="it-s3-resume")
    model = tmp_path / "big"
    # 2 shards of ~70 MiB -> 14 parts of 5 MiB each: a wide window to stop the server in.
    make_tiny_model(str(model), seed=5, hidden=1024, vocab=32768)
    total = sum(p.stat().st_size for p in model.iterdir())
    args = dict(mode="push", src=str(model), bucket="it-s3-resume", prefix="big", **opts(tmp_path, concurrency=1))
    proc = start_stage(server.conn(), **args)
    # Largest files go first, one part at a time: wait until one shard is a finished object and the
    # other has parts, then pause and kill the server.
    seen, finished = 0, []
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        finished = _finished_shards(admin, "it-s3-resume")
        # Parts of a shard whose completion is in flight do not count: only the unfinished shard's.
        seen = _parts_uploaded(admin, "it-s3-resume", skip_keys=finished)
        if finished and seen >= 2:
            break
        time.sleep(0.02)
    assert finished and seen >= 2, "the push finished or stalled before a shard and 2 parts were uploaded"
    server.pause()
    time.sleep(0.5)
    server.kill()
    out, _err = proc.communicate(timeout=180)
    assert proc.returncode != 0, "the push survived the server being killed"
    assert "re-run to resume" in out

    server.proc = None
    server.start()
    assert _uploads(admin, "it-s3-resume"), "the killed push left no multipart upload to resume"
    parts_before = _parts_uploaded(admin, "it-s3-resume")
    assert parts_before >= 2
    finished = _finished_shards(admin, "it-s3-resume")
    assert not any(
        k["Key"].endswith(MANIFEST) for k in admin.list_objects_v2(Bucket="it-s3-resume").get("Contents", []) or []
    ), "manifest written by an interrupted push"

    resumed = run_stage(server.conn(), **args)
    assert resumed.get("failed") is not True, resumed.get("msg")
    assert resumed["parts_resumed"] >= parts_before - 1
    assert resumed["bytes_resumed"] >= (parts_before - 1) * 5 * MIB
    # The shard finished before the kill is not sent again: without a manifest, its sha256 metadata
    # (checked with one HEAD) vouches for it.
    assert resumed["files_skipped"] == len(finished) >= 1
    assert not set(key.split("/", 1)[1] for key in finished) & set(resumed["transferred"])
    # Finished parts and files were not sent again: sent + kept + skipped adds up to the model exactly.
    skipped = sum(p.stat().st_size for p in model.iterdir() if p.name not in resumed["transferred"])
    assert resumed["bytes_transferred"] + resumed["bytes_resumed"] + skipped == total
    assert _uploads(admin, "it-s3-resume") == []

    verify = run_stage(
        server.conn(), mode="verify", bucket="it-s3-resume", prefix="big", verify_content=True, **opts(tmp_path)
    )
    assert verify.get("failed") is not True, verify.get("msg")
    dest = tmp_path / "pulled"
    pulled = run_stage(
        server.conn(),
        mode="pull",
        bucket="it-s3-resume",
        prefix="big",
        dest=str(dest),
        **opts(tmp_path, cache_dir=str(tmp_path / "pc")),
    )
    assert pulled.get("failed") is not True, pulled.get("msg")
    for item in model.iterdir():
        assert sha256(dest / item.name) == sha256(item)


def test_role_publishes_checkpoints_and_hides_secrets(conn, client, bucket, model, tmp_path):
    # One model pushed from a directory, one already staged and only verified.
    run_stage(conn, mode="push", src=str(model), bucket=bucket, prefix="pre/staged", **opts(tmp_path))
    other = tmp_path / "other"
    make_tiny_model(str(other), seed=3)
    role_vars = {
        "model_staging_models": [
            {"name": "tiny-a", "src": str(other), "prefix": "role/a"},
            {"name": "tiny-b", "prefix": "pre/staged"},
        ],
        "model_staging_bucket": bucket,
        "model_staging_s3_endpoint_url": conn["endpoint_url"],
        "model_staging_s3_access_key": conn["access_key"],
        "model_staging_s3_secret_key": conn["secret_key"],
        "model_staging_concurrency": 4,
        "model_staging_part_size": "8MiB",
        "model_staging_cache_dir": str(tmp_path / "role-cache"),
    }
    play = [
        {
            "name": "stage",
            "hosts": "localhost",
            "gather_facts": False,
            "vars": role_vars,
            "roles": ["llmops.serving.model_staging"],
            "post_tasks": [{"name": "show", "ansible.builtin.debug": {"var": "model_staging_checkpoints"}}],
        }
    ]
    run = run_playbook(play)
    assert run["rc"] == 0, run["stdout"][-4000:]
    facts = task_results(run, "show")[0]["model_staging_checkpoints"]
    assert facts["tiny-a"]["checkpoint_path"] == "s3://%s/role/a/" % bucket
    assert facts["tiny-a"]["mode"] == "push" and facts["tiny-a"]["changed"] is True
    assert facts["tiny-b"]["checkpoint_path"] == "s3://%s/pre/staged/" % bucket
    assert facts["tiny-b"]["mode"] == "verify" and facts["tiny-b"]["changed"] is False
    assert facts["tiny-b"]["summary"]["architecture"] == "LlamaForCausalLM"
    assert facts["tiny-a"]["total_bytes"] == sum(p.stat().st_size for p in other.iterdir())
    assert facts["tiny-a"]["manifest_key"] == "role/a/" + MANIFEST
    assert conn["secret_key"] not in run["stdout"] + run["stderr"]

    rerun = run_playbook(play)
    assert rerun["rc"] == 0 and total_changed(rerun) == 0, rerun["stdout"][-3000:]

    # A broken entry fails with the model named and the module's reason, still without the secret.
    role_vars["model_staging_models"].append({"name": "ghost", "prefix": "never/staged"})
    failed = run_playbook(play)
    assert failed["rc"] != 0
    text = failed["stdout"]
    assert "model ghost:" in text and "never completely staged" in text
    assert conn["secret_key"] not in text + failed["stderr"]


def test_pull_of_multi_range_files_is_verified_and_leaves_no_partials(conn, client, bucket, model, tmp_path):
    """Files larger than part_size come down as parallel ranged GETs into one partial file each; the
    SHA-256 (hashed in order as contiguous parts land) must match before the rename, and a mismatch
    in the middle of a file fails the pull, names the file and leaves neither it nor its partial file."""
    big = model / "extra" / "big.bin"
    big.parent.mkdir()
    # 3 full 5 MiB ranges plus a 1-byte tail: the tail and the middle ranges are where ordering bugs show.
    big.write_bytes(os.urandom(15 * MIB + 1))
    run_stage(conn, mode="push", src=str(model), bucket=bucket, prefix="ranges", **opts(tmp_path, concurrency=8))
    dest = tmp_path / "ranged"
    pulled = run_stage(conn, mode="pull", bucket=bucket, prefix="ranges", dest=str(dest),
                       **opts(tmp_path, concurrency=8, cache_dir=str(tmp_path / "pc")))
    assert pulled.get("failed") is not True, pulled.get("msg")
    assert sha256(dest / "extra" / "big.bin") == sha256(big)
    for item in model.iterdir():
        if item.is_file():
            assert sha256(dest / item.name) == sha256(item)

    # Same size, ETag recorded in the manifest: only the content hash can tell the object is wrong.
    key = "ranges/extra/big.bin"
    data = bytearray(big.read_bytes())
    data[7 * MIB] ^= 0x01  # inside the second range
    new_etag = client.put_object(Bucket=bucket, Key=key, Body=bytes(data))["ETag"].strip('"')
    manifest = json.loads(client.get_object(Bucket=bucket, Key="ranges/" + MANIFEST)["Body"].read())
    manifest["files"]["extra/big.bin"]["etag"] = new_etag
    client.put_object(Bucket=bucket, Key="ranges/" + MANIFEST, Body=json.dumps(manifest).encode())
    dest2 = tmp_path / "ranged-bad"
    bad = run_stage(conn, mode="pull", bucket=bucket, prefix="ranges", dest=str(dest2),
                    **opts(tmp_path, concurrency=8, cache_dir=str(tmp_path / "pc2")))
    assert bad["failed"] is True
    assert "extra/big.bin" in bad["msg"] and "sha256" in bad["msg"]
    # The bad file's partial is gone (its bytes are wrong); the verified files' partials stay for a re-run.
    leftovers = [p for p in dest2.rglob("*") if p.is_file()]
    assert not [p for p in leftovers if p.name.startswith(".big.bin.")], leftovers
    assert not (dest2 / "extra" / "big.bin").exists()
    assert not [p for p in leftovers if not p.name.endswith(".llmops-partial")], "a file was published: %s" % leftovers


# ---- resumable pulls (issue 22) ------------------------------------------------------------------

# hidden=768, vocab=16384: two ~27 MiB shards, 58 MiB in all; with 5 MiB ranges, 12 ranged GETs.
BIG = {"hidden": 768, "vocab": 16384}
SHARD1 = "model-00001-of-00002.safetensors"
SHARD2 = "model-00002-of-00002.safetensors"


def partials(root):
    return sorted(p for p in root.rglob("*") if p.name.endswith(".llmops-partial"))


def partial_data_bytes(root):
    """Bytes written into the partial data files under ``root`` (created sparse at full size, so
    allocated blocks, not sizes, show the progress)."""
    total = 0
    for path in partials(root):
        if not path.name.endswith(".progress.llmops-partial"):
            try:
                total += path.stat().st_blocks * 512
            except FileNotFoundError:
                continue
    return total


def tree(root):
    return dict((str(p.relative_to(root)), sha256(p)) for p in root.rglob("*")
                if p.is_file() and p.name != MANIFEST and not p.name.endswith(".llmops-partial"))


def kill_pull_at(conn, args, dest, fraction, total):
    """Start a pull, SIGKILL it (module and Ansible) once ``fraction`` of ``total`` bytes are in its
    partial files; returns the bytes on disk after the kill."""
    proc = start_stage(conn, **args)
    deadline = time.time() + 300
    while partial_data_bytes(dest) < fraction * total:
        assert proc.poll() is None, "the pull ended before the kill: %s" % proc.communicate()[0][-2000:]
        assert time.time() < deadline, "the pull did not reach %d%% within 300 s" % (fraction * 100)
        time.sleep(0.002)
    kill_tree(proc)
    assert not (dest / SHARD1).exists() and not (dest / SHARD2).exists(), "the killed pull published a shard"
    return partial_data_bytes(dest)


def unmarked_bound(concurrency):
    """Bytes a killed pull may have written without recording them: per request in flight, what
    arrived since its last checkpoint (plus one read buffer)."""
    from ansible_collections.llmops.serving.plugins.module_utils import s3_transfer

    return concurrency * (s3_transfer.PULL_CHECKPOINT + s3_transfer.DOWNLOAD_CHUNK)


@pytest.mark.parametrize("fraction", [0.5])  # later kills: the puller drill (tests/drills/test_drill_s3_kill.py)
def test_pull_killed_resumes_fetching_only_what_is_missing(conn, client, bucket, tmp_path, fraction):
    """SIGKILL the module mid-pull: the re-run keeps what its partial files recorded, fetches the rest,
    verifies, and leaves no partial file; a partial file corrupted on disk between the runs is caught
    by the SHA-256 check and fetched again."""
    model = tmp_path / "model"
    make_tiny_model(str(model), seed=21, **BIG)
    want = tree(model)
    total = sum((model / rel).stat().st_size for rel in want)
    run_stage(conn, mode="push", src=str(model), bucket=bucket, prefix="resume", **opts(tmp_path))
    dest = tmp_path / "dest"
    args = dict(mode="pull", bucket=bucket, prefix="resume", dest=str(dest),
                **opts(tmp_path, concurrency=2, cache_dir=str(tmp_path / "pull-cache")))
    # under load the kill may land after the last byte (but before any rename): still a kill to resume from
    landed = kill_pull_at(conn, args, dest, fraction, total)

    check = run_stage(conn, check=True, **args)
    assert check["changed"] is True and check["bytes_resumed"] > 0
    assert check["bytes_resumed"] + check["bytes_transferred"] == total

    resumed = run_stage(conn, **args)
    assert resumed.get("failed") is not True, resumed.get("msg")
    assert tree(dest) == want
    assert partials(dest) == [], "partial files left after a successful re-run"
    assert resumed["bytes_resumed"] + resumed["bytes_transferred"] == total
    assert resumed["bytes_resumed"] == check["bytes_resumed"]
    # what was on disk at the kill is kept, except what no checkpoint recorded yet (and block rounding)
    assert resumed["bytes_transferred"] <= total - landed + unmarked_bound(2) + MIB, (landed, resumed)
    print("pull killed at %.1f %% of %.1f MiB: re-run fetched %.1f %%, resumed %.1f %%"
          % (100.0 * landed / total, total / MIB, 100.0 * resumed["bytes_transferred"] / total,
             100.0 * resumed["bytes_resumed"] / total))

    # Corrupt a byte the progress log says is on disk: the resumed file fails its SHA-256 and is
    # fetched again from zero in the same run; nothing mixed is published.
    (dest / SHARD1).unlink()
    (dest / SHARD2).unlink()
    landed = kill_pull_at(conn, args, dest, 0.5, total)
    victim = max((p for p in partials(dest) if not p.name.endswith(".progress.llmops-partial")),
                 key=lambda p: p.stat().st_blocks)
    victim_blocks = victim.stat().st_blocks * 512 - MIB  # recorded bytes of it, give or take a checkpoint
    with open(victim, "r+b") as handle:
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    size = victim.stat().st_size
    fixed = run_stage(conn, **args)
    assert fixed.get("failed") is not True, fixed.get("msg")
    assert tree(dest) == want and partials(dest) == []
    # the corrupted file counts as fetched whole, not as resumed
    assert fixed["bytes_transferred"] >= size and fixed["bytes_resumed"] <= landed - victim_blocks, fixed


def test_pull_resume_never_mixes_a_changed_object(conn, client, bucket, tmp_path):
    """Between a killed pull and its re-run the staged model changes. A shard rewritten under the same
    manifest SHA-256 (tampering that even fixed up the ETag) fails the re-run and publishes nothing;
    a proper re-push (new manifest) makes the re-run drop that shard's old partial file, fetch the
    new shard whole, resume the unchanged one, and leave no partial file of the dead run."""
    model = tmp_path / "model"
    make_tiny_model(str(model), seed=31, **BIG)
    total = sum(p.stat().st_size for p in model.iterdir())
    run_stage(conn, mode="push", src=str(model), bucket=bucket, prefix="mix", **opts(tmp_path))
    dest = tmp_path / "dest"
    args = dict(mode="pull", bucket=bucket, prefix="mix", dest=str(dest),
                **opts(tmp_path, concurrency=2, cache_dir=str(tmp_path / "pull-cache")))
    kill_pull_at(conn, args, dest, 0.6, total)

    # tampering: shard 1's bytes change, its manifest entry keeps the SHA-256 and gets the new ETag
    data = bytearray((model / SHARD1).read_bytes())
    data[len(data) // 2] ^= 0x01
    key = "mix/" + SHARD1
    etag = client.put_object(Bucket=bucket, Key=key, Body=bytes(data))["ETag"].strip('"')
    manifest = json.loads(client.get_object(Bucket=bucket, Key="mix/" + MANIFEST)["Body"].read())
    manifest["files"][SHARD1]["etag"] = etag
    client.put_object(Bucket=bucket, Key="mix/" + MANIFEST, Body=json.dumps(manifest).encode())
    refused = run_stage(conn, **args)
    assert refused.get("failed") is True and SHARD1 in refused["msg"] and "sha256" in refused["msg"], refused
    assert not (dest / SHARD1).exists() and not (dest / SHARD2).exists() and not (dest / MANIFEST).exists()
    # the partial file whose object changed was not kept: it was dropped once its bytes failed the check
    assert not [p for p in partials(dest) if p.name.startswith("." + SHARD1)], partials(dest)
    # a partial file of an older collection version (random name): debris the next run removes
    (dest / (".config.json.x7Gq2p." + "llmops-partial")).write_bytes(b"old")

    # a proper re-push of the changed source: shard 1 has a new SHA-256, shard 2 is the same
    (model / SHARD1).write_bytes(bytes(data))
    repushed = run_stage(conn, mode="push", src=str(model), bucket=bucket, prefix="mix", **opts(tmp_path))
    assert repushed.get("failed") is not True and repushed["transferred"] == [SHARD1], repushed
    pulled = run_stage(conn, **args)
    assert pulled.get("failed") is not True, pulled.get("msg")
    assert tree(dest) == tree(model)
    assert SHARD1 in pulled["transferred"]
    assert pulled["bytes_transferred"] >= (model / SHARD1).stat().st_size, "shard 1 was not fetched whole"
    assert pulled["bytes_resumed"] > 0, "nothing of the unchanged files was resumed"
    assert pulled["partials_removed"] == 1 and pulled["changed"] is True
    assert partials(dest) == []
