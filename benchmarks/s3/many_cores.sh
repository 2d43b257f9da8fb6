#!/usr/bin/env bash
# The S3 benchmark on a lent many-core machine without network, in one go (issue 19):
#   1. benchmarks/s3/run.py as `make bench` runs it (ours with the module's defaults, s5cmd, aws s3
#      sync; 3 rounds), RESULTS.md and results.json into OUT;
#   2. then, while BUDGET_S seconds (from the start) last, ours alone in variants on the same data set
#      (RESULTS of each appended to OUT/sweep.md, rows to OUT/sweep.json): the module of BEFORE (an
#      older checkout) and this one at several concurrencies, the upload without hashing first
#      (push-warm), and the code paths issue 19 asks to justify, each switched off by a patch of a
#      copy of plugins/ (request body as bytes instead of PartBody; pull without splice(2); pull
#      reading through botocore instead of http.client's readinto).
# Usage: benchmarks/s3/many_cores.sh BUNDLE OUT [BEFORE]   (BUNDLE: `offline.py bundle`; run from the
# repository root)
set -u
BUNDLE=$(realpath "$1")
OUT=$(realpath "$2")
BEFORE=${3:+$(realpath "$3")}
BUDGET_S=${BUDGET_S:-540}
ROUNDS=${ROUNDS:-3}
SHAPE=${SHAPE:-}  # e.g. "--shards 2 --shard-mib 32 --small-files 10" for a dry run
START=$(date +%s)
W=${WORK:-/tmp/llmops-s3-many-cores}
mkdir -p "$OUT" "$W"
export PYTHONUNBUFFERED=1

{
  date -u
  echo "nproc: $(nproc)"
  lscpu 2>/dev/null | grep -E 'Model name|^CPU\(s\)|Thread|Socket|MHz|L3'
  grep -m1 -o -w 'sha_ni' /proc/cpuinfo || echo "no sha_ni flag"
  free -g
  df -h /tmp
  python3 --version
  uname -a
} >"$OUT/machine.txt" 2>&1

left() { echo $((BUDGET_S - ($(date +%s) - START))); }
wanted() { [ -z "${ONLY:-}" ] || [[ ",$ONLY," == *",$1,"* ]]; }  # ONLY=full,c16,...: a dry run of some steps

if wanted full; then
  # shellcheck disable=SC2086 # SHAPE is a list of options
  python3 benchmarks/s3/offline.py run "$BUNDLE" --work "$W" --data-dir "$W/data" --repeat "$ROUNDS" $SHAPE \
    --output "$OUT/RESULTS.md" >"$OUT/full.log" 2>&1
  echo "full benchmark: rc=$? after $(($(date +%s) - START)) s" | tee -a "$OUT/sweep.log"
fi

# A copy of this checkout's plugins/ with one substitution; fails when the text is not there.
patched() {
  local name=$1 file=$2 old=$3 new=$4
  rm -rf "$W/v/$name" && mkdir -p "$W/v/$name" && cp -r plugins meta galaxy.yml "$W/v/$name/" || return 1
  python3 - "$W/v/$name/$file" "$old" "$new" <<'EOF' || return 1
import sys
path, old, new = sys.argv[1:]
text = open(path).read()
if old not in text:
    sys.exit("%s: %r not found" % (path, old))
open(path, "w").write(text.replace(old, new))
EOF
  echo "$W/v/$name"
}

variant() {  # name, seconds it needs at least, run.py options...
  local name=$1 need=$2
  shift 2
  wanted "$name" || return
  if [ "$(left)" -lt "$need" ]; then
    echo "skipped $name: $(left) s left" | tee -a "$OUT/sweep.log"
    return
  fi
  local t0
  t0=$(date +%s)
  # shellcheck disable=SC2086
  python3 benchmarks/s3/offline.py run "$BUNDLE" --work "$W" --data-dir "$W/data" --tools ours $SHAPE \
    --output "$W/sweep-$name/RESULTS.md" "$@" >"$W/sweep-$name.log" 2>&1
  local rc=$?
  echo "$name: rc=$rc in $(($(date +%s) - t0)) s ($*)" | tee -a "$OUT/sweep.log"
  grep -E '^ours ' "$W/sweep-$name.log" | sed "s/^/$name: /" >>"$OUT/sweep.log"
  [ $rc -eq 0 ] || tail -20 "$W/sweep-$name.log" >>"$OUT/sweep.log"
  { echo; echo "## variant $name ($*)"; echo; cat "$W/sweep-$name/RESULTS.md" 2>/dev/null; } >>"$OUT/sweep.md"
  python3 - "$OUT/sweep.json" "$name" "$W/sweep-$name/results.json" "$*" <<'EOF'
import json, os, sys
out, name, path, opts = sys.argv[1:]
doc = json.load(open(out)) if os.path.exists(out) else {}
doc[name] = {"options": opts, "results": json.load(open(path)) if os.path.exists(path) else None}
json.dump(doc, open(out, "w"), indent=1)
EOF
}

P2="--phases push,pull"
if [ -n "$BEFORE" ]; then
  variant before-c16 60 --collection "$BEFORE" --concurrency 16 --part-mib 64 $P2 --repeat 2
fi
variant default-warm 50 --phases push,push-warm --repeat 2
variant c16 60 --concurrency 16 $P2 --repeat 2
variant c64 60 --concurrency 64 $P2 --repeat 2
variant default 60 $P2 --repeat 2  # the reference for the patched variants below, in the same run
if dir=$(patched bytes-body plugins/module_utils/s3_transfer.py "Body=PartBody(view))" "Body=view.tobytes())"); then
  variant bytes-body 35 --collection "$dir" --phases push --repeat 2
fi
if dir=$(patched no-splice plugins/module_utils/s3_transfer.py "self.splice = True" "self.splice = False"); then
  variant no-splice 45 --collection "$dir" $P2 --repeat 2
fi
if dir=$(patched plain-reads plugins/module_utils/s3_transfer.py "self.splice = True" "self.splice = False") &&
  python3 - "$dir/plugins/module_utils/s3_body.py" <<'EOF'; then
import sys
path = sys.argv[1]
text = open(path).read()
old = '    raw = getattr(body, "_raw_stream", None)\n    inner = getattr(raw, "_fp", None)\n    readinto = '
if old not in text:
    sys.exit("body_reader not found")
open(path, "w").write(text.replace(old, '    raw = None\n    inner = None\n    readinto = ', 1))
EOF
  variant plain-reads 45 --collection "$dir" $P2 --repeat 2
fi
variant c32-part32 35 --part-mib 32 --phases push --repeat 2
echo "done after $(($(date +%s) - START)) s" | tee -a "$OUT/sweep.log"
