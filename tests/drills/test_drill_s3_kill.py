"""Drill: the S3 server is killed (SIGKILL) mid-push and mid-pull (issue 10).

What ``s3_model_stage`` promises, and what each test shows against a real MinIO that is really killed
while bytes flow (a throwaway server on its own port and data dir, restarted on the same data dir):

- the interrupted run fails with a message naming the endpoint and the bucket and saying what a
  re-run does; the re-run completes (a push resumes its multipart uploads) and leaves no temporary
  file, no journal entry and no unfinished multipart upload behind;
- at no moment is a model with a manifest incomplete or corrupt: a watcher thread reads the bucket
  (push) or the destination directory (pull) every 50 ms during the whole drill and, whenever a
  manifest is there, checks the size and SHA-256 of every file it lists (see s3_watch.py);
- re-publishing a model that already has a manifest: the push deletes the old manifest before it
  writes the first object under it, and writes the new one after the last, so readers see the old
  model (consistent), then no model (pull/verify refuse it), then the new model, never a mix;
- pull downloads into partial files and renames them only after all are verified, so a killed
  pull leaves the destination's files as they were; the partial files stay, and the re-run keeps
  the bytes they recorded (issue 22);
- the vllm role's puller init container (roles/vllm/files/vllm_s3_pull.py), SIGKILLed mid-download
  and started again, fetches only what was missing and leaves no partial file.

- a pull over an older copy removes the old local manifest after every new file is verified and
  before the first rename (found by this drill, fixed in s3_stage), and a pull stopped by a dead
  server says that no file in dest was replaced and that a re-run resumes.
"""

import json
import os
import sys
import time

import pytest

from tests.drills.s3_watch import (
    MANIFEST,
    BucketWatcher,
    DirWatcher,
    dir_digest,
    fast_client,
    multipart_progress,
    partial_bytes_written,
    partial_files,
    pending_uploads,
    published_digest,
)
from tests.integration.s3_helpers import THROWAWAY_PASSWORD, ThrowawayMinio, run_stage, start_stage

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures"))
from make_tiny_model import make_tiny_model  # noqa: E402 - importable only after the fixtures dir is on sys.path

MIB = 1024 * 1024
PREFIX = "models/drill"
SHARDS = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
# hidden=768, vocab=16384: two ~24 MiB shards = 5 parts of 5 MiB each, ~49 MiB in all.
BIG = {"hidden": 768, "vocab": 16384}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One throwaway MinIO for the drill; each test kills it and starts it again on the same data dir."""
    minio = ThrowawayMinio(str(tmp_path_factory.mktemp("drill-minio"))).start()
    yield minio
    minio.destroy()


@pytest.fixture
def live(server):
    if server.proc is None or server.proc.poll() is not None:
        restart(server)
    return server


def restart(server):
    server.proc = None
    server.start()


def wait_until(condition, what, proc=None, timeout=120, interval=0.005):
    """Poll ``condition()`` until it returns a true value; fail naming ``what`` when the module ended
    first (the kill would not land mid-transfer) or after ``timeout``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail("the module ended before %s (rc=%s):\n%s\n%s"
                        % (what, proc.returncode, out[-2000:], err[-2000:]))
        time.sleep(interval)
    pytest.fail("timed out waiting for %s" % what)


def finish(proc, timeout=300):
    """Wait for a start_stage() run; return (module result, stdout + stderr)."""
    out, err = proc.communicate(timeout=timeout)
    result = None
    try:
        for play in json.loads(out).get("plays", []):
            for task in play.get("tasks", []):
                if task["task"]["name"] == "stage":
                    result = task["hosts"]["localhost"]
    except ValueError:
        pass
    assert result is not None, "no module result: rc=%s\n%s\n%s" % (proc.returncode, out[-3000:], err[-3000:])
    return result, out + err


def new_bucket(server, bucket):
    """Create ``bucket``; return a fail-fast client for checking on the server (s3_watch.fast_client)."""
    admin = fast_client(server.conn())
    admin.create_bucket(Bucket=bucket)
    return admin


def big_model(path, seed):
    """Write the drill's ~49 MiB model to ``path``; return its dir_digest()."""
    make_tiny_model(str(path), seed=seed, **BIG)
    return dir_digest(str(path))


def stage_args(mode, bucket, cache, **extra):
    args = {"mode": mode, "bucket": bucket, "prefix": PREFIX, "cache_dir": str(cache), "concurrency": 2,
            "part_size": "5MiB"}
    args.update(extra)
    return args


def shard_keys():
    return ["%s/%s" % (PREFIX, name) for name in SHARDS]


def bucket_keys(client, bucket):
    listing = client.list_objects_v2(Bucket=bucket, Prefix=PREFIX + "/")
    return sorted(o["Key"] for o in listing.get("Contents", []) or [])


def manifest_id(client, bucket):
    import hashlib

    raw = client.get_object(Bucket=bucket, Key="%s/%s" % (PREFIX, MANIFEST))["Body"].read()
    return hashlib.sha256(raw).hexdigest()


def assert_clean_cache(cache):
    """Nothing transient left in the cache dir: no journal of an unfinished upload, no temp file."""
    leftovers = []
    for dirpath, _dirs, names in os.walk(cache):
        for name in names:
            rel = os.path.relpath(os.path.join(dirpath, name), cache)
            if rel != "sha256-cache.json":
                leftovers.append(rel)
    assert leftovers == [], "left in the cache dir after a successful run: %s" % leftovers


def assert_watch_ok(watcher, started, ended):
    assert watcher.violations == [], "a reader saw a manifest whose files did not match: %s" % watcher.violations[:3]
    polls = watcher.count(started, ended)
    assert polls > 0, "the watcher made no observation while the module ran"
    return polls


def kill_mid_transfer(server, args, watcher, progress, what, **wait):
    """Run the module with ``args`` while ``watcher`` reads, kill the server once ``progress()`` returns a
    true value (``wait_until(progress, what, proc, **wait)``: polled, never a sleep), and wait for the
    module. What every kill must show: the run failed with a message naming the endpoint and the bucket,
    printed no secret, and no reader saw a manifest whose files did not match.
    Returns {progress: what progress() returned, msg, started, killed, ended (time.time())}."""
    started = time.time()
    proc = start_stage(server.conn(), **args)
    reached = wait_until(progress, what, proc, **wait)
    server.kill()
    killed = time.time()
    result, text = finish(proc)
    ended = time.time()
    assert result.get("failed") is True, "the %s survived its server being killed: %s" % (args["mode"], result)
    msg = result["msg"]
    assert server.endpoint in msg and repr(args["bucket"]) in msg, msg
    assert THROWAWAY_PASSWORD not in text
    assert watcher.violations == [], "while the %s ran, a reader saw: %s" % (args["mode"], watcher.violations[:3])
    return {"progress": reached, "msg": msg, "started": started, "killed": killed, "ended": ended}


def rerun_after_kill(server, args, watcher, kill):
    """Run the module again on the restarted server and stop the watcher; returns (module result, seconds
    of the re-run, observations the watcher made while the two runs ran)."""
    started = time.time()
    result = run_stage(server.conn(), **args)
    ended = time.time()
    assert result.get("failed") is not True, result.get("msg")
    watcher.stop()
    polls = assert_watch_ok(watcher, kill["started"], kill["ended"]) + watcher.count(started, ended)
    return result, ended - started, polls


@pytest.mark.slow
def test_push_killed_mid_transfer_resumes_and_never_shows_a_partial_model(live, tmp_path):
    server = live
    bucket = "drill-push"
    admin = new_bucket(server, bucket)
    model = tmp_path / "model"
    expected = big_model(model, seed=5)
    cache = tmp_path / "cache"
    args = stage_args("push", bucket, cache, src=str(model), concurrency=1)

    watcher = BucketWatcher(server.conn(), bucket, PREFIX)
    watcher.start()
    # One part at a time: after 2 parts of the first shard, 8 of the 10 parts are still to go.
    kill = kill_mid_transfer(server, args, watcher,
                             lambda: sum(multipart_progress(admin, bucket, shard_keys()).values()) >= 2 and
                             sum(multipart_progress(admin, bucket, shard_keys()).values()),
                             "2 parts were uploaded")
    assert "re-run to resume" in kill["msg"], kill["msg"]

    restart(server)
    assert "%s/%s" % (PREFIX, MANIFEST) not in bucket_keys(admin, bucket), "an interrupted push wrote its manifest"
    assert pending_uploads(admin, bucket, shard_keys()), "the killed push left no multipart upload to resume"

    resumed, rerun_seconds, polls = rerun_after_kill(server, args, watcher, kill)
    assert resumed["changed"] is True and resumed["parts_resumed"] >= 2, resumed
    assert watcher.count(kill["started"], kill["ended"], kinds=("absent",)) > 0, \
        "the watcher never read the bucket mid-push"
    final = watcher.observe_once()
    assert final == ("manifest", (manifest_id(admin, bucket), [])), final
    print("push drill: killed after %d parts; push %.1fs (%.1fs after the kill), re-run %.1fs; %d observations "
          "while the module ran, %d consistent manifest reads, %.0f MiB read"
          % (kill["progress"], kill["ended"] - kill["started"], kill["ended"] - kill["killed"], rerun_seconds, polls,
             sum(watcher.checked.values()) + 1, watcher.bytes_read / MIB))

    assert pending_uploads(admin, bucket, shard_keys()) == []
    assert admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert_clean_cache(str(cache))
    dest = tmp_path / "pulled"
    pulled = run_stage(server.conn(), **stage_args("pull", bucket, tmp_path / "pcache", dest=str(dest)))
    assert pulled.get("failed") is not True, pulled.get("msg")
    got = dir_digest(str(dest))
    assert got.pop(MANIFEST)[0] > 0
    assert got == expected


@pytest.mark.slow
def test_pull_killed_mid_transfer_leaves_dest_untouched_and_rerun_completes(live, tmp_path):
    server = live
    bucket = "drill-pull"
    new_bucket(server, bucket)
    model = tmp_path / "model"
    expected = big_model(model, seed=7)
    total = sum(size for size, _sha in expected.values())
    pushed = run_stage(server.conn(), **stage_args("push", bucket, tmp_path / "push-cache", src=str(model)))
    assert pushed.get("failed") is not True, pushed.get("msg")

    dest = tmp_path / "dest"
    cache = tmp_path / "pull-cache"
    args = stage_args("pull", bucket, cache, dest=str(dest), concurrency=1)
    watcher = DirWatcher(str(dest))
    watcher.start()
    kill = kill_mid_transfer(server, args, watcher,
                             lambda: partial_bytes_written(str(dest)) >= 8 * MIB and partial_bytes_written(str(dest)),
                             "8 MiB were downloaded", interval=0.002)
    written, msg = kill["progress"], kill["msg"]
    assert written < total
    # Which download reports first depends on the interleaving: any file of the model.
    assert "downloading %s/" % PREFIX in msg and "server is running" in msg, msg
    # Nothing was renamed into place: dest holds only the partial files, for the re-run to resume.
    assert published_digest(str(dest)) == {}, "a killed pull left files in dest"
    kept = partial_bytes_written(str(dest))
    assert kept >= written

    restart(server)
    pulled, rerun_seconds, polls = rerun_after_kill(server, args, watcher, kill)
    assert pulled["changed"] is True and sorted(pulled["transferred"]) == sorted(expected)
    # the server died, the module did not: every byte that arrived was recorded and is kept
    assert pulled["bytes_resumed"] + pulled["bytes_transferred"] == total
    assert pulled["bytes_resumed"] >= written - 2 * MIB, (written, pulled)

    final = watcher.observe_once()
    assert final[0] == "manifest" and final[1][1] == [], final
    got = dir_digest(str(dest))
    assert got.pop(MANIFEST)[0] > 0
    assert got == expected
    assert partial_files(str(dest)) == []
    assert_clean_cache(str(cache))
    # Last, after every safety check above passed: what the message tells the operator.
    report = ("pull drill: killed after %.1f of %.1f MiB; pull %.1fs (%.1fs after the kill), re-run %.1fs "
              "fetched %.1f MiB, resumed %.1f MiB; %d observations while the module ran; message: %s"
              % (written / MIB, total / MIB, kill["ended"] - kill["started"], kill["ended"] - kill["killed"],
                 rerun_seconds, pulled["bytes_transferred"] / MIB, pulled["bytes_resumed"] / MIB, polls, msg))
    print(report)
    assert "re-run resumes" in msg, msg


def _shard_shas(client, bucket):
    """shard name -> sha256 metadata of its object in the bucket (None when absent)."""
    import botocore.exceptions

    out = {}
    for name in SHARDS:
        try:
            out[name] = client.head_object(Bucket=bucket, Key="%s/%s" % (PREFIX, name))["Metadata"].get("sha256")
        except botocore.exceptions.ClientError:
            out[name] = None
    return out


@pytest.mark.slow
def test_republish_killed_midway_never_mixes_old_and_new(live, tmp_path):
    """A published model re-pushed with new content (same file sizes), server killed when one shard is
    already new and the other still old. The module deletes the old manifest before its first write
    under the prefix and writes the new one after its last, so readers see old -> nothing -> new."""
    server = live
    bucket = "drill-republish"
    admin = new_bucket(server, bucket)
    model = tmp_path / "model"
    old = big_model(model, seed=5)
    cache = tmp_path / "cache"
    args = stage_args("push", bucket, cache, src=str(model), concurrency=1)
    first = run_stage(server.conn(), **args)
    assert first.get("failed") is not True, first.get("msg")
    v1 = manifest_id(admin, bucket)
    new = big_model(model, seed=6)
    assert all(new[s][0] == old[s][0] and new[s][1] != old[s][1] for s in SHARDS), "v2 shards must differ, same size"

    watcher = BucketWatcher(server.conn(), bucket, PREFIX)
    watcher.start()
    wait_until(lambda: watcher.checked.get(v1), "the watcher read the published model")

    done = []

    def mixed():
        shas = _shard_shas(admin, bucket)
        done[:] = [s for s in SHARDS if shas[s] == new[s][1]]
        if not done:
            return None
        rest = ["%s/%s" % (PREFIX, s) for s in SHARDS if s not in done]
        count = sum(multipart_progress(admin, bucket, rest).values())
        return count if count >= 2 else None

    kill = kill_mid_transfer(server, args, watcher, mixed, "one shard was replaced and the other had 2 new parts")
    parts = kill["progress"]
    assert "re-run to resume" in kill["msg"], kill["msg"]

    restart(server)
    shas = _shard_shas(admin, bucket)
    mixes = (sorted([new[SHARDS[0]][1], old[SHARDS[1]][1]]), sorted([old[SHARDS[0]][1], new[SHARDS[1]][1]]))
    assert sorted(shas.values()) in mixes, "the kill did not leave a mix of old and new shards: %s" % shas
    # The promise: the old manifest is gone before any object under it changed, so the mix is unreadable.
    assert "%s/%s" % (PREFIX, MANIFEST) not in bucket_keys(admin, bucket), "the old manifest vouches for a mix"
    refused = run_stage(server.conn(), **stage_args("pull", bucket, tmp_path / "pc", dest=str(tmp_path / "d")))
    assert refused.get("failed") is True and "never completely staged" in refused["msg"], refused
    assert not (tmp_path / "d").exists()

    resumed, _rerun_seconds, polls = rerun_after_kill(server, args, watcher, kill)
    # The new shard finished before the kill is not sent again (its sha256 metadata vouches for it); of
    # the other one's parts, the last may have been accepted after the journal was written.
    assert len(done) == 1 and done[0] not in resumed["transferred"], (done, resumed["transferred"])
    assert resumed["parts_resumed"] >= parts - 1, resumed
    v2 = manifest_id(admin, bucket)

    states = watcher.states()
    published = [s for s in states if s not in ("absent", "down", "torn")]
    assert published in ([v1, v2], [v1]), "readers saw the manifests in this order: %s" % states
    assert "absent" in states[states.index(v1):], states
    assert watcher.observe_once() == ("manifest", (v2, []))
    assert watcher.checked[v1] >= 1
    assert pending_uploads(admin, bucket, shard_keys()) == []
    assert_clean_cache(str(cache))
    print("republish drill: killed after 1 shard + %d parts; %d observations while the module ran; states %s"
          % (parts, polls, ["v1" if s == v1 else "v2" if s == v2 else s for s in states]))


def test_pull_over_an_older_copy_never_shows_the_old_manifest_with_new_files(live, tmp_path, monkeypatch):
    """The local manifest is the pull's "complete" marker: a pull that replaces files must drop the old
    marker before the first rename, or a reader (or a crash) in between sees the old manifest over new
    bytes. A spy on os.replace (the real call, then a look at dest) shows
    it at every rename without any timing luck."""
    from ansible_collections.llmops.serving.plugins.module_utils import s3_stage

    from tests.integration.s3_helpers import client_for

    server = live
    bucket = "drill-repull"
    new_bucket(server, bucket)
    model = tmp_path / "model"
    dest = tmp_path / "dest"
    params = {"mode": "pull", "bucket": bucket, "prefix": PREFIX, "dest": str(dest), "src": None, "include": [],
              "exclude": [], "required_files": None, "delete_extra": False, "concurrency": 2,
              "part_size": 5 * MIB, "resume": True}

    def ctx():
        return s3_stage.StageContext(client_for(server.conn(), 2), server.endpoint, str(tmp_path / "cache"))

    for seed in (1, 2):
        make_tiny_model(str(model), seed=seed)
        s3_stage.run_push(ctx(), dict(params, mode="push", src=str(model), dest=None))
        if seed == 1:
            s3_stage.run_pull(ctx(), params)
    assert dir_digest(str(dest)) != {}

    real_replace = os.replace
    seen = []

    def spy(src, dst, *args, **kwargs):
        real_replace(src, dst, *args, **kwargs)
        if os.path.dirname(os.path.abspath(dst)) == str(dest) and not dst.endswith(MANIFEST):
            seen.append(DirWatcher(str(dest)).observe_once())

    monkeypatch.setattr(os, "replace", spy)
    pulled = s3_stage.run_pull(ctx(), params)
    monkeypatch.undo()
    assert pulled["changed"] is True and len(seen) >= 2
    bad = [obs for obs in seen if obs[0] == "manifest" and obs[1][1]]
    assert bad == [], "after a rename, the local manifest vouched for files that do not match it: %s" % bad[0][1][1]


PULLER = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "roles", "vllm",
                      "files", "vllm_s3_pull.py")


def puller(server, bucket, dest, cache):
    """The vllm role's init container command line and environment for ``dest``."""
    from tests.helpers.sandbox import REPO_ROOT, process_env

    conn = server.conn()
    env = process_env({"S3_ENDPOINT_URL": conn["endpoint_url"], "AWS_ACCESS_KEY_ID": conn["access_key"],
                       "AWS_SECRET_ACCESS_KEY": conn["secret_key"],
                       "ANSIBLE_COLLECTIONS_PATH": os.path.join(REPO_ROOT, ".collections")})
    cmd = [sys.executable, PULLER, "--source", "s3://%s/%s/" % (bucket, PREFIX), "--dest", str(dest),
           "--cache-dir", str(cache), "--concurrency", "2"]
    return cmd, env


@pytest.mark.slow
@pytest.mark.parametrize("fraction", [0.5, 0.97])
def test_puller_killed_mid_download_resumes(live, tmp_path, fraction):
    """The init container's process is SIGKILLed (pod deleted, OOM, node drained) with ``fraction`` of the
    bytes in its partial files; started again, it fetches only what no checkpoint had recorded, the
    model verifies, and no partial file is left."""
    import signal
    import subprocess

    from ansible_collections.llmops.serving.plugins.module_utils import s3_transfer

    server = live
    bucket = "drill-puller-%d" % int(fraction * 100)
    new_bucket(server, bucket)
    model = tmp_path / "model"
    expected = big_model(model, seed=9)
    total = sum(size for size, _sha in expected.values())
    pushed = run_stage(server.conn(), **stage_args("push", bucket, tmp_path / "push-cache", src=str(model)))
    assert pushed.get("failed") is not True, pushed.get("msg")
    dest = tmp_path / "cache" / "s3" / bucket / PREFIX
    cmd, env = puller(server, bucket, dest, tmp_path / "cache" / ".llmops" / "hash-cache")

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    landed = wait_until(lambda: partial_bytes_written(str(dest)) >= fraction * total
                        and partial_bytes_written(str(dest)), "%d%% of the bytes were downloaded" % (fraction * 100),
                        proc, interval=0.002)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    landed = partial_bytes_written(str(dest))
    assert published_digest(str(dest)) == {}, "the killed puller published files"

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, timeout=300)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    got = dir_digest(str(dest))
    assert got.pop(MANIFEST)[0] > 0
    assert got == expected
    assert partial_files(str(dest)) == []
    refetched = summary["bytes_transferred"]
    assert summary["bytes_resumed"] + refetched == total
    # per request in flight (2), at most what arrived since its last checkpoint is fetched again
    bound = total - landed + 2 * (s3_transfer.PULL_CHECKPOINT + s3_transfer.DOWNLOAD_CHUNK) + MIB
    print("puller drill: killed at %.1f %% of %.1f MiB; restart fetched %.1f %% (bound %.1f %%), resumed %.1f %%"
          % (100.0 * landed / total, total / MIB, 100.0 * refetched / total, 100.0 * bound / total,
             100.0 * summary["bytes_resumed"] / total))
    assert refetched <= bound, (landed, summary)
