//! The `soak` workload of `taskq-bench` keeps compiling and running: the binary (debug, as
//! cargo builds it for this test) runs it at tiny sizes on memory, SQLite and PostgreSQL
//! (`TASKQ_TEST_POSTGRES_URL`, required: run through ./test.sh), and each store's JSON
//! line must account for every task. No timing is checked: the figures come from release
//! runs on a quiet machine (BENCHMARKS.md).

use std::process::Command;

use serde_json::Value;

/// Tasks of the retention part (20 rounds of 20) and finished tasks of the fill.
const TASKS: u64 = 400;
const FINISHED: u64 = 500;
const SAMPLES: u64 = 20;

fn postgres_url() -> String {
    match std::env::var("TASKQ_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => panic!(
            "TASKQ_TEST_POSTGRES_URL is not set: run the tests with ./test.sh (it starts PostgreSQL), \
             or `source .ci/postgres.sh` first"
        ),
    }
}

#[test]
fn soak_workload_runs_on_every_store_at_a_tiny_size() {
    let data = tempfile::tempdir().expect("a temporary directory");
    // A schema of this test's own, so a benchmark run on the same database is not touched.
    let url = postgres_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{sep}schema=taskq_soak_smoke_{}", std::process::id());
    let out = Command::new(env!("CARGO_BIN_EXE_taskq-bench"))
        .args(["--workloads", "soak"])
        .args(["--soak-tasks", &TASKS.to_string()])
        .args(["--soak-finished", &FINISHED.to_string()])
        .args(["--soak-samples", &SAMPLES.to_string()])
        .arg("--data")
        .arg(data.path())
        .args(["--postgres", &url])
        .output()
        .expect("taskq-bench runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "taskq-bench failed: {stderr}");
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    let stores: Vec<&str> = lines.iter().filter_map(|l| l["store"].as_str()).collect();
    assert_eq!(stores, ["memory", "sqlite", "postgres"], "{stderr}");
    for l in &lines {
        let store = &l["store"];
        assert_eq!(l["workload"], "soak");
        assert_eq!(l["finished_tasks"], FINISHED, "{store}");
        assert_eq!(l["scheduled_tasks"], FINISHED / 10, "{store}");
        // The scheduled tasks are still pending; nothing else is (the stream was claimed).
        assert_eq!(l["counts_full"]["pending"], FINISHED / 10, "{store}");
        assert!(l["counts_full"].get("running").is_none(), "{store}: {l}");
        assert_eq!(l["claim_calls"], SAMPLES, "{store}");
        for part in ["empty", "full"] {
            for f in ["claim_ms_p99", "queues_ms_p99", "heartbeat_ms_p99"] {
                assert!(l[part][f].as_f64().is_some(), "{store} {part}.{f}: {l}");
            }
            assert!(
                l[part]["queues_calls_during_heartbeats"].as_u64() >= Some(1),
                "{store} {part}: queues() was called during the heartbeats: {l}"
            );
        }
        // Retention: every task ran, every done one was pruned at the next round, the dead
        // ones are kept their seven days (six rounds of 25 hours), then pruned too.
        assert_eq!(l["retention_tasks"], TASKS, "{store}");
        let dead = l["retention_dead"].as_u64().expect("retention_dead");
        assert_eq!(
            l["retention_pruned_done"].as_u64(),
            Some(TASKS - dead),
            "{store}"
        );
        let kept = l["retention_kept_after_round"]
            .as_array()
            .expect("kept per round");
        assert_eq!(kept.len(), 20, "{store}");
        let pruned_dead = l["retention_pruned_dead"].as_u64().expect("pruned dead");
        let last_kept = kept[19].as_u64().expect("a count");
        assert_eq!(pruned_dead + last_kept, dead, "{store}: {l}");
        assert!(
            pruned_dead > 0,
            "{store}: dead tasks outlived seven days: {l}"
        );
        let footprint = l["retention_footprint_after_round"]
            .as_array()
            .expect("footprint per round");
        assert_eq!(footprint.len(), 20, "{store}");
        assert!(
            footprint.iter().all(|b| b.as_u64() > Some(0)),
            "{store}: {l}"
        );
    }
}
