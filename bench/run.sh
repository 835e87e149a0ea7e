#!/usr/bin/env bash
# taskq beside its peers, in one sitting.
#
#   bench/run.sh
#
# Builds taskq-bench and the peers project (bench/peers, outside the workspace) in release,
# then runs taskq and the peers alternated (taskq, peers, taskq, peers: ROUNDS rounds), each
# run on a fresh SQLite directory and a fresh PostgreSQL database, and writes
#
#   bench/results/latest.jsonl  every JSON line, each tagged with its round and system
#                               (taskq's lines get "system": "taskq"), after one "meta" line
#   bench/results/latest.md     the goals table (ratios within each round) and every figure
#
# and, unless UPDATE_DOC=0, puts latest.md between the results markers of BENCHMARKS.md.
# A ratio always divides figures of the same round: taskq's run and the peers' run right
# after it.
#
# Settings (environment):
#   PG_URL       the PostgreSQL server, without a database
#                (default postgres://taskq-pg@127.0.0.1:54329)
#   PG_ADMIN_DB  the database to connect to for CREATE/DROP DATABASE (default postgres)
#   ROUNDS       rounds (default 2)
#   TASKS        N: each system starts N tasks one by one and N in bulk, then processes 2N
#                (default 20000); the queue libraries start 1,000 one by one and the rest
#                in bulk, the raw loops insert all 2N in bulk
#   ROWS         rows of taskq-bench's iteration table (default 1000000)
#   APALIS_SQLITE_TASKS  N for apalis on SQLite, which slows down with the table's size
#                (default 2000; see bench/peers/src/apalis_peers.rs)
#   DATA         scratch directory for the SQLite files (default: a fresh temporary one)
#   TASKQ_BENCH, PEERS  use these binaries instead of building (e.g. copies kept elsewhere)
#   OUT_DIR      where latest.jsonl and latest.md go (default bench/results)
#   UPDATE_DOC   0 to leave BENCHMARKS.md alone
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

PG_URL=${PG_URL:-postgres://taskq-pg@127.0.0.1:54329}
PG_ADMIN_DB=${PG_ADMIN_DB:-postgres}
ROUNDS=${ROUNDS:-2}
TASKS=${TASKS:-20000}
ROWS=${ROWS:-1000000}
APALIS_SQLITE_TASKS=${APALIS_SQLITE_TASKS:-2000}
UPDATE_DOC=${UPDATE_DOC:-1}
OUT=${OUT_DIR:-$ROOT/bench/results}
export PG_URL PG_ADMIN_DB

for tool in cargo psql python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "bench/run.sh: $tool is not on PATH" >&2
    exit 1
  fi
done

# psql on the admin database, without the notices of DROP ... IF EXISTS.
admin() {
  PGOPTIONS="-c client_min_messages=warning" psql "$PG_URL/$PG_ADMIN_DB" -qX "$@"
}

if ! admin -Atc 'SELECT 1' >/dev/null; then
  echo "bench/run.sh: cannot reach PostgreSQL at $PG_URL/$PG_ADMIN_DB (set PG_URL / PG_ADMIN_DB)" >&2
  exit 1
fi

began=$(date +%s)
if [ -z "${TASKQ_BENCH:-}" ]; then
  echo "== building taskq-bench (release)" >&2
  cargo build --release --quiet -p taskq-examples --bin taskq-bench
  TASKQ_BENCH=$ROOT/target/release/taskq-bench
fi
if [ -z "${PEERS:-}" ]; then
  echo "== building the peers (release)" >&2
  cargo build --release --quiet --manifest-path bench/peers/Cargo.toml
  PEERS=$ROOT/bench/peers/target/release/taskq-peers
fi
built=$(date +%s)

scratch=${DATA:-$(mktemp -d "${TMPDIR:-/tmp}/taskq-bench-run.XXXXXX")}
mkdir -p "$scratch" "$OUT"
jsonl=$OUT/latest.jsonl.new
: >"$jsonl"
logs=$scratch/logs
mkdir -p "$logs"
# On any exit, a failed run's database and the scratch directory go too.
current_db=
cleanup() {
  if [ -n "$current_db" ]; then
    admin -c "DROP DATABASE IF EXISTS $current_db" >/dev/null 2>&1 || true
  fi
  if [ -z "${DATA:-}" ]; then
    rm -rf "$scratch"
  fi
  rm -f "$jsonl"
}
trap cleanup EXIT

# Fsyncs per second of the disk under the scratch directory: 4 KiB appended and fsynced
# in a loop for 3 seconds (what a durable commit costs at the least).
fsync_rate=$(python3 - "$scratch" <<'EOF'
import os, sys, time
p = os.path.join(sys.argv[1], "fsync-probe")
fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
n, t = 0, time.monotonic()
while time.monotonic() - t < 3:
    os.write(fd, b"x" * 4096)
    os.fsync(fd)
    n += 1
print(round(n / (time.monotonic() - t)))
os.close(fd)
os.remove(p)
EOF
)

python3 - "$jsonl" "$fsync_rate" "$TASKS" "$ROWS" "$APALIS_SQLITE_TASKS" "$ROUNDS" <<'EOF'
import json, os, subprocess, sys, datetime
out, fsync, tasks, rows, apalis, rounds = sys.argv[1:]
CODE = ["taskq-runtime", "taskq-macros", "examples", "Cargo.lock", "rust-toolchain.toml"]
def sh(*c):
    try:
        return subprocess.run(c, capture_output=True, text=True, check=True).stdout.strip()
    except Exception:
        return None
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), None)
mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
meta = {
    "workload": "meta",
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "commit": sh("git", "rev-parse", "--short", "HEAD"),
    # The last commit that changed taskq's code (not the bench, its results or the docs).
    "taskq_commit": sh("git", "log", "-1", "--format=%h", "--", *CODE),
    "worktree_clean": sh("git", "status", "--porcelain", "--", *CODE) == "",
    "cores": os.cpu_count(),
    "cpu": cpu,
    "memory_gib": round(mem / 1024 / 1024, 1),
    "fsync_per_s": int(fsync),
    "postgres": sh("psql", os.environ.get("PG_URL", "postgres://taskq-pg@127.0.0.1:54329") + "/" + os.environ.get("PG_ADMIN_DB", "postgres"), "-qAtc", "SHOW server_version"),
    "tasks": int(tasks), "rows": int(rows), "apalis_sqlite_tasks": int(apalis), "rounds": int(rounds),
    "loadavg_start": open("/proc/loadavg").read().split()[:3],
}
with open(out, "a") as f:
    f.write(json.dumps(meta) + "\n")
EOF

# One run of one side on a fresh database and directory: its lines, tagged, into $jsonl.
run_one() {
  local side=$1 round=$2
  local db="bench_${side}_${round}" dir="$scratch/$side-$round"
  admin -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
  current_db=$db
  rm -rf "$dir"
  mkdir -p "$dir"
  local t0 rc=0
  t0=$(date +%s)
  echo "== round $round: $side" >&2
  if [ "$side" = taskq ]; then
    "$TASKQ_BENCH" --tasks "$TASKS" --rows "$ROWS" --data "$dir" --postgres "$PG_URL/$db" \
      >"$logs/$side-$round.out" 2>"$logs/$side-$round.err" || rc=$?
  else
    "$PEERS" --tasks "$TASKS" --apalis-sqlite-tasks "$APALIS_SQLITE_TASKS" --data "$dir" \
      --postgres "$PG_URL/$db" >"$logs/$side-$round.out" 2>"$logs/$side-$round.err" || rc=$?
  fi
  admin -c "DROP DATABASE IF EXISTS $db" >/dev/null || true
  current_db=
  rm -rf "$dir"
  if [ "$rc" != 0 ]; then
    echo "bench/run.sh: $side (round $round) failed with status $rc:" >&2
    cat "$logs/$side-$round.err" >&2
    exit 1
  fi
  python3 - "$logs/$side-$round.out" "$jsonl" "$side" "$round" "$(($(date +%s) - t0))" <<'EOF'
import json, sys
src, out, side, rnd, secs = sys.argv[1:]
with open(out, "a") as f:
    for line in open(src):
        line = line.strip()
        if not line.startswith("{"):
            continue
        o = json.loads(line)
        o.setdefault("system", "taskq")
        o["round"] = int(rnd)
        f.write(json.dumps(o, sort_keys=True) + "\n")
    f.write(json.dumps({"workload": "run", "side": side, "round": int(rnd), "seconds": int(secs),
                        "loadavg_end": open("/proc/loadavg").read().split()[:3]}) + "\n")
EOF
}

for round in $(seq 1 "$ROUNDS"); do
  run_one taskq "$round"
  run_one peers "$round"
done
mv "$jsonl" "$OUT/latest.jsonl"
python3 "$ROOT/bench/table.py" "$OUT/latest.jsonl" >"$OUT/latest.md"
if [ "$UPDATE_DOC" != 0 ] && [ -f "$ROOT/BENCHMARKS.md" ]; then
  python3 - "$ROOT/BENCHMARKS.md" "$OUT/latest.md" <<'EOF'
import sys
doc, table = sys.argv[1:]
text = open(doc).read()
start, end = "<!-- results:start -->", "<!-- results:end -->"
if start in text and end in text:
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    text = head + start + "\n" + open(table).read().rstrip() + "\n" + end + tail
    open(doc, "w").write(text)
else:
    print("bench/run.sh: BENCHMARKS.md has no results markers; left alone", file=sys.stderr)
EOF
fi
echo "== done in $(($(date +%s) - began)) s ($((built - began)) s building): $OUT/latest.md" >&2
cat "$OUT/latest.md"
