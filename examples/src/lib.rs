//! Shared pieces of the taskq examples: the Melange demo app's data (programs, students,
//! an outbox the stand-in mailer writes to) and small helpers for the binaries.

pub mod melange;

use std::time::{Duration, Instant};

use taskq_runtime::store::TaskDetail;
use taskq_runtime::{Queue, TaskId};

/// Waits until task `id` is no longer pending or running (done, failed, dead, cancelled),
/// polling its detail; gives up after `timeout`.
pub async fn wait_finished(
    queue: &Queue,
    id: TaskId,
    timeout: Duration,
) -> Result<TaskDetail, String> {
    let start = Instant::now();
    loop {
        match queue.task(id).await {
            Ok(Some(t)) if !t.info.state.is_live() => return Ok(t),
            Ok(Some(_)) => {}
            Ok(None) => return Err(format!("task {id} does not exist")),
            Err(e) => return Err(format!("reading task {id}: {e}")),
        }
        if start.elapsed() > timeout {
            return Err(format!("task {id} did not finish within {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Prints a task's attempt history, one line per attempt.
pub fn print_attempts(t: &TaskDetail) {
    println!("  task {} `{}`: {}", t.info.id, t.info.task, t.info.state);
    for a in &t.attempts {
        println!(
            "    attempt {} on {}: {}{} ({} ms)",
            a.attempt,
            a.worker,
            a.outcome,
            a.error
                .as_deref()
                .map(|e| format!(" — {e}"))
                .unwrap_or_default(),
            a.finished_at.0 - a.started_at.0
        );
    }
}

/// Formats a count with thousands separators: `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn escapes_html() {
        assert_eq!(
            html_escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
