#!/usr/bin/env python3
"""The Markdown table of a bench/run.sh sitting: python3 bench/table.py latest.jsonl > latest.md

Reads the tagged JSON lines (taskq-bench's with "system": "taskq", the peers' with their
own system) and prints the goals of issue 11 with each round's ratio (taskq's figure over
the reference's figure from the same round), then every figure.
"""
import json
import sys


def load(path):
    meta, runs, lines = {}, [], []
    for raw in open(path):
        raw = raw.strip()
        if not raw:
            continue
        o = json.loads(raw)
        if o.get("workload") == "meta":
            meta = o
        elif o.get("workload") == "run":
            runs.append(o)
        else:
            lines.append(o)
    return meta, runs, lines


def find(lines, rnd, **want):
    """The line of round `rnd` whose fields equal `want`, or None."""
    for o in lines:
        if o.get("round") == rnd and all(o.get(k) == v for k, v in want.items()):
            return o
    return None


def num(x):
    if x is None:
        return "–"
    if isinstance(x, float) and not x.is_integer():
        return f"{x:,.2f}"
    return f"{int(x):,}"


def ratio_txt(r):
    if r is None:
        return "–"
    return f"{r:.2f}" if r < 10 else f"{r:.0f}"


# (label, taskq selector, taskq field, reference label, reference selector, reference
# field, goal op, goal value). A selector is the fields a line must have.
TQ = {"system": "taskq"}
GOALS = [
    ("memory: no-op tasks processed /s",
     dict(TQ, workload="throughput", store="memory"), "processed_per_s",
     "tokio mpsc, 8 consumers", dict(workload="throughput", system="tokio-mpsc"), "processed_per_s",
     ">=", 0.3),
    ("SQLite: processed /s",
     dict(TQ, workload="throughput", store="sqlite"), "processed_per_s",
     "plain rusqlite, claim 100 per txn then mark done",
     dict(workload="throughput", system="rusqlite-claim100"), "processed_per_s",
     ">=", 0.25),
    ("SQLite: processed /s",
     dict(TQ, workload="throughput", store="sqlite"), "processed_per_s",
     "plain rusqlite, claim 1 per txn then mark done",
     dict(workload="throughput", system="rusqlite-claim1"), "processed_per_s",
     ">=", 3.0),
    ("SQLite: store claims, 100 per call, rows /s",
     dict(TQ, workload="claim", store="sqlite"), "claim_rows_per_s",
     "plain rusqlite claim loop, 100 per txn",
     dict(workload="claim", system="rusqlite", store="sqlite"), "claim_rows_per_s",
     ">=", 0.5),
    ("SQLite: bulk start /s",
     dict(TQ, workload="throughput", store="sqlite"), "started_bulk_per_s",
     "plain batched INSERT, 1,000 rows per txn",
     dict(workload="throughput", system="rusqlite-claim100"), "started_bulk_per_s",
     ">=", 0.5),
    ("PostgreSQL: processed /s",
     dict(TQ, workload="throughput", store="postgres"), "processed_per_s",
     "plain SKIP LOCKED claim 100 + mark done",
     dict(workload="throughput", system="tokio-postgres"), "processed_per_s",
     ">=", 0.8),
    ("PostgreSQL: processed /s",
     dict(TQ, workload="throughput", store="postgres"), "processed_per_s",
     "apalis 1.0 (apalis-postgres, batch 100)",
     dict(workload="throughput", system="apalis", store="postgres"), "processed_per_s",
     ">=", 5.0),
    ("PostgreSQL: bulk start /s",
     dict(TQ, workload="throughput", store="postgres"), "started_bulk_per_s",
     "plain INSERT of 1,000 rows per txn",
     dict(workload="throughput", system="tokio-postgres"), "started_bulk_per_s",
     ">=", 0.8),
    ("PostgreSQL: start-to-run p50, ms",
     dict(TQ, workload="throughput", store="postgres"), "start_to_run_ms_p50",
     None, None, None, "<", 2),
    ("PostgreSQL: start-to-run p99, ms",
     dict(TQ, workload="throughput", store="postgres"), "start_to_run_ms_p99",
     None, None, None, "<", 10),
    ("iteration over the rows, SQLite, entities /s",
     dict(TQ, workload="iteration", table="sqlite"), "entities_per_s",
     "plain keyset scan (same process)", dict(TQ, workload="iteration", table="sqlite"),
     "scan_entities_per_s", ">=", 0.9),
    ("iteration over the rows, PostgreSQL, entities /s",
     dict(TQ, workload="iteration", table="postgres"), "entities_per_s",
     "plain keyset scan (same process)", dict(TQ, workload="iteration", table="postgres"),
     "scan_entities_per_s", ">=", 0.9),
]

# Beside the goals: the other peers and figures without a goal.
MORE = [
    ("memory: no-op tasks processed /s",
     dict(TQ, workload="throughput", store="memory"), "processed_per_s",
     "tokio mpsc, 8 consumers, each message run as a spawned task",
     dict(workload="throughput", system="tokio-mpsc-spawn"), "processed_per_s"),
    ("SQLite: processed /s",
     dict(TQ, workload="throughput", store="sqlite"), "processed_per_s",
     "apalis 1.0 (apalis-sqlite, batch 100; fewer tasks, see below)",
     dict(workload="throughput", system="apalis", store="sqlite"), "processed_per_s"),
    ("PostgreSQL: processed /s",
     dict(TQ, workload="throughput", store="postgres"), "processed_per_s",
     "sqlxmq 0.6", dict(workload="throughput", system="sqlxmq"), "processed_per_s"),
    ("PostgreSQL: store claims, 100 per call, rows /s",
     dict(TQ, workload="claim", store="postgres"), "claim_rows_per_s",
     "plain SKIP LOCKED claim loop, 100 per txn",
     dict(workload="claim", system="tokio-postgres"), "claim_rows_per_s"),
    ("SQLite: bulk start /s",
     dict(TQ, workload="throughput", store="sqlite"), "started_bulk_per_s",
     "apalis 1.0 (apalis-sqlite, 1,000 per call)",
     dict(workload="throughput", system="apalis", store="sqlite"), "started_bulk_per_s"),
    ("PostgreSQL: bulk start /s",
     dict(TQ, workload="throughput", store="postgres"), "started_bulk_per_s",
     "apalis 1.0 (apalis-postgres, 1,000 per call)",
     dict(workload="throughput", system="apalis", store="postgres"), "started_bulk_per_s"),
    ("PostgreSQL: bulk start /s",
     dict(TQ, workload="throughput", store="postgres"), "started_bulk_per_s",
     "sqlxmq 0.6 (1,000 spawns per txn)",
     dict(workload="throughput", system="sqlxmq"), "started_bulk_per_s"),
    ("memory: start-to-run p50 / p99, ms",
     dict(TQ, workload="throughput", store="memory"), ("start_to_run_ms_p50", "start_to_run_ms_p99"),
     None, None, None),
    ("SQLite: start-to-run p50 / p99, ms",
     dict(TQ, workload="throughput", store="sqlite"), ("start_to_run_ms_p50", "start_to_run_ms_p99"),
     None, None, None),
]


def field(o, f):
    if o is None:
        return None
    return o.get(f)


def joined(vals, fmt=num):
    return " / ".join(fmt(v) for v in vals)


def main():
    meta, runs, lines = load(sys.argv[1])
    rounds = sorted({o["round"] for o in lines})
    out = []
    w = out.append
    code = f"taskq at commit `{meta.get('taskq_commit', '?')}`"
    if meta.get("worktree_clean") is False:
        code += " plus uncommitted changes"
    w(f"Sitting of {meta.get('date', '?')}, {code}: "
      f"{len(rounds)} round{'' if len(rounds) == 1 else 's'} of taskq then its peers, each on a fresh database; "
      f"N = {num(meta.get('tasks'))} tasks per start mode (2N processed), "
      f"{num(meta.get('rows'))} rows iterated, apalis on SQLite with N = "
      f"{num(meta.get('apalis_sqlite_tasks'))}. Machine: {meta.get('cores', '?')} cores "
      f"({meta.get('cpu', '?')}), {meta.get('memory_gib', '?')} GiB, "
      f"{num(meta.get('fsync_per_s'))} fsyncs/s on the bench disk, PostgreSQL "
      f"{meta.get('postgres', '?')}; load average at the start "
      f"{' '.join(meta.get('loadavg_start', []))}.")
    w("")
    w("Each cell holds round 1 / round 2 / ...; a ratio is taskq's figure over the "
      "reference's figure of the same round.")
    w("")
    w("| goal | taskq | same-round reference | reference | ratio | goal | met |")
    w("|---|---|---|---|---|---|---|")
    for label, tsel, tf, rlabel, rsel, rf, op, goal in GOALS:
        tv = [field(find(lines, r, **tsel), tf) for r in rounds]
        if rsel is None:
            checks = [None if v is None else (v < goal if op == "<" else v >= goal) for v in tv]
            ratio, ref, rl = "", "", ""
        else:
            rv = [field(find(lines, r, **rsel), rf) for r in rounds]
            rs = [t / rv_ if t is not None and rv_ else None for t, rv_ in zip(tv, rv)]
            checks = [None if x is None else x >= goal for x in rs]
            ratio, ref, rl = joined(rs, ratio_txt), joined(rv), rlabel
        known = [c for c in checks if c is not None]
        met = ("–" if not known else "met" if all(known) else "not met" if not any(known)
               else f"met in {sum(known)} of {len(known)}")
        goal_txt = f"{'≥' if op == '>=' else '<'} {goal:g}" + ("" if rsel is None else "×")
        w(f"| {label} | {joined(tv)} | {rl} | {ref} | {ratio} | {goal_txt} | {met} |")
    w("")
    w("Beside the goals:")
    w("")
    w("| figure | taskq | same-round reference | reference | ratio |")
    w("|---|---|---|---|---|")
    for label, tsel, tf, rlabel, rsel, rf in MORE:
        if isinstance(tf, tuple):
            vals = [" / ".join(num(field(find(lines, r, **tsel), f)) for f in tf) for r in rounds]
            w(f"| {label} | {' ; '.join(vals)} | | | |")
            continue
        tv = [field(find(lines, r, **tsel), tf) for r in rounds]
        rv = [field(find(lines, r, **rsel), rf) for r in rounds]
        rs = [t / x if t is not None and x else None for t, x in zip(tv, rv)]
        w(f"| {label} | {joined(tv)} | {rlabel} | {joined(rv)} | {joined(rs, ratio_txt)} |")
    w("")
    w("Every throughput line (tasks/s; latency in ms):")
    w("")
    w("| round | system | store | tasks (N) | started one by one /s | started in bulk /s | processed /s | p50 / p99 |")
    w("|---|---|---|---|---|---|---|---|")
    for o in lines:
        if o.get("workload") != "throughput":
            continue
        lat = ""
        if "start_to_run_ms_p50" in o:
            lat = f"{o['start_to_run_ms_p50']} / {o['start_to_run_ms_p99']}"
        w(f"| {o['round']} | {o['system']} | {o['store']} | {num(o.get('tasks'))} | "
          f"{num(o.get('started_one_by_one_per_s'))} | {num(o.get('started_bulk_per_s'))} | "
          f"{num(o.get('processed_per_s'))} | {lat} |")
    w("")
    w("Every claim line (rows/s; 50,000 rows, 1,000 per insert call, 100 per claim and per finish):")
    w("")
    w("| round | system | store | enqueue in bulk | claim | finish |")
    w("|---|---|---|---|---|---|")
    for o in lines:
        if o.get("workload") != "claim":
            continue
        w(f"| {o['round']} | {o['system']} | {o['store']} | {num(o.get('enqueue_bulk_rows_per_s'))} | "
          f"{num(o.get('claim_rows_per_s'))} | {num(o.get('finish_rows_per_s'))} |")
    it = [o for o in lines if o.get("workload") == "iteration"]
    if it:
        w("")
        w("Iteration (entities/s over the whole table; the scan is the mean of one scan before "
          "and one after the task, same process):")
        w("")
        w("| round | table | rows | iterative task | plain keyset scan | ratio |")
        w("|---|---|---|---|---|---|")
        for o in it:
            w(f"| {o['round']} | {o['table']} | {num(o.get('rows'))} | {num(o.get('entities_per_s'))} | "
              f"{num(o.get('scan_entities_per_s'))} | {o.get('ratio')} |")
    mem = [o for o in lines if o.get("workload") == "memory"]
    if mem:
        w("")
        w("Memory store: " + " / ".join(f"{num(o.get('rss_bytes_per_task'))}" for o in mem)
          + " bytes of resident memory per queued task.")
    if runs:
        w("")
        w("Run times: " + ", ".join(
            f"{r['side']} round {r['round']} {r['seconds']} s (load {' '.join(r.get('loadavg_end', []))})"
            for r in runs) + ".")
    print("\n".join(out))


if __name__ == "__main__":
    main()
