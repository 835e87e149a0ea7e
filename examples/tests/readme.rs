//! The README's code is part of the build: every ```rust block of README.md is either the
//! tour (`src/bin/tour.rs`, byte for byte) or appears, up to whitespace, in
//! `tests/readme_snippets.rs`, which compiles and runs with `cargo test`. And the tour runs
//! twice in a row in a fresh directory, as a reader would run it.

use std::path::Path;
use std::process::Command;

const README: &str = include_str!("../../README.md");
const TOUR: &str = include_str!("../src/bin/tour.rs");
const SNIPPETS: &str = include_str!("readme_snippets.rs");

/// The ```rust blocks of a Markdown text, with the line each starts on (1-based).
fn rust_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        match current.as_mut() {
            None if line.trim_start().starts_with("```rust") => {
                current = Some((i + 2, String::new()))
            }
            None => {}
            Some(_) if line.trim_start().starts_with("```") => blocks.extend(current.take()),
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    assert!(current.is_none(), "README.md ends inside a ```rust block");
    blocks
}

/// The text with every run of whitespace made one space, so that indentation and line
/// breaks do not matter.
fn normalise(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn every_rust_block_of_the_readme_is_compiled_code() {
    let blocks = rust_blocks(README);
    assert!(
        blocks.len() >= 8,
        "only {} rust blocks found in README.md",
        blocks.len()
    );
    let snippets = normalise(SNIPPETS);
    let mut missing = Vec::new();
    let mut tour_found = false;
    for (line, block) in &blocks {
        if block == TOUR {
            tour_found = true;
        } else if !snippets.contains(&normalise(block)) {
            missing.push(format!(
                "README.md line {line}: `{}`",
                block.lines().next().unwrap_or_default()
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "README blocks found neither in examples/src/bin/tour.rs (byte for byte) nor in \
         examples/tests/readme_snippets.rs (up to whitespace):\n{}",
        missing.join("\n")
    );
    assert!(
        tour_found,
        "no ```rust block of README.md is examples/src/bin/tour.rs byte for byte"
    );
}

#[test]
fn the_block_finder_sees_blocks_and_their_lines() {
    let md = "text\n```rust\nfn a() {}\n```\n```sh\nls\n```\n```rust\nlet x = 1;\n  y();\n```\n";
    assert_eq!(
        rust_blocks(md),
        vec![
            (3, "fn a() {}\n".to_string()),
            (9, "let x = 1;\n  y();\n".to_string())
        ]
    );
    assert_eq!(normalise(" let  x =\n\t 1; "), "let x = 1;");
}

/// Runs the tour in `dir`; returns its stdout, or fails with everything it printed.
fn run_tour(dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tour"))
        .current_dir(dir)
        // The tour's own default (`info`), whatever the environment of the test says.
        .env_remove("RUST_LOG")
        .output()
        .expect("run the tour binary");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the tour failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_tour_runs_twice_in_a_row() {
    let dir = tempfile::tempdir().expect("temp dir");

    let first = run_tour(dir.path());
    assert!(dir.path().join("taskq.db").exists(), "taskq.db not created");
    assert!(first.contains("as `welcome-ada`"), "{first}");
    // The worker's lines show without RUST_LOG.
    assert!(first.contains("taskq worker started"), "{first}");
    assert!(first.contains("all done"), "{first}");

    // The finished `welcome-ada` is inside its one-hour tombstone window: told, not failed.
    let second = run_tour(dir.path());
    assert!(
        second.contains("`welcome-ada` was already started"),
        "{second}"
    );
    assert!(second.contains("all done"), "{second}");
}
