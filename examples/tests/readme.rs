//! The documentation's code is part of the build: every Rust block of README.md and of
//! every `docs/*.md` is either the tour (`src/bin/tour.rs`, byte for byte) or appears, up
//! to whitespace and comments, in the code of `tests/readme_snippets.rs`, which compiles
//! (and, all but the PostgreSQL block, runs) with `cargo test`. A fenced block without a
//! language that looks like Rust is refused too: it would escape the check. And the tour
//! runs twice in a row in a fresh directory, as a reader would run it.

use std::path::{Path, PathBuf};
use std::process::Command;

const TOUR: &str = include_str!("../src/bin/tour.rs");
const SNIPPETS: &str = include_str!("readme_snippets.rs");

/// One fenced block of a Markdown text.
#[derive(Debug, PartialEq)]
struct Block {
    /// The line its text starts on (1-based).
    line: usize,
    /// The first word of its info string (`rust` in ```` ```rust,no_run ````), or "".
    lang: String,
    text: String,
}

impl Block {
    /// Whether the block is declared Rust.
    fn is_rust(&self) -> bool {
        matches!(self.lang.as_str(), "rust" | "rs")
    }
}

/// The fenced blocks (```` ``` ```` or longer) of a Markdown text.
fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    // The open block and the length of its fence.
    let mut current: Option<(Block, usize)> = None;
    for (i, line) in markdown.lines().enumerate() {
        let t = line.trim_start();
        let ticks = t.len() - t.trim_start_matches('`').len();
        match current.as_mut() {
            None if ticks >= 3 => {
                let lang = t[ticks..]
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .next()
                    .unwrap_or_default()
                    .to_string();
                current = Some((
                    Block {
                        line: i + 2,
                        lang,
                        text: String::new(),
                    },
                    ticks,
                ));
            }
            None => {}
            Some((_, fence)) if ticks >= *fence && t[ticks..].trim().is_empty() => {
                out.extend(current.take().map(|(b, _)| b));
            }
            Some((b, _)) => {
                b.text.push_str(line);
                b.text.push('\n');
            }
        }
    }
    assert!(current.is_none(), "the Markdown ends inside a fenced block");
    out
}

/// Whether an unlabelled block holds Rust code (so that it must be labelled and checked).
fn looks_like_rust(text: &str) -> bool {
    const STARTS: [&str; 12] = [
        "fn ",
        "async fn ",
        "pub fn ",
        "pub async fn ",
        "let ",
        "use ",
        "impl ",
        "struct ",
        "#[task",
        "#[iterative_task",
        "#[tokio::",
        "mod ",
    ];
    text.lines().any(|l| {
        let l = l.trim_start();
        STARTS.iter().any(|s| l.starts_with(s)) || l.contains(".await")
    })
}

/// The text without its `//` comments (a `//` outside a string literal, at the start of a
/// line or after a blank: not the `//` of `postgres://`), so that a block found in the
/// snippets is found in their code, not in a comment.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut in_string = false;
        let mut escaped = false;
        let mut cut = line.len();
        let bytes = line.as_bytes();
        for (i, &c) in bytes.iter().enumerate() {
            match c {
                _ if escaped => escaped = false,
                b'\\' if in_string => escaped = true,
                b'"' => in_string = !in_string,
                b'/' if !in_string
                    && bytes.get(i + 1) == Some(&b'/')
                    && (i == 0 || bytes[i - 1].is_ascii_whitespace()) =>
                {
                    cut = i;
                    break;
                }
                _ => {}
            }
        }
        out.push_str(&line[..cut]);
        out.push('\n');
    }
    out
}

/// The text with every run of whitespace made one space, so that indentation and line
/// breaks do not matter.
fn normalise(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// README.md and every `docs/*.md` of the repository, read when the test runs (a new
/// page is covered without touching this file).
fn documents() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut paths = vec![root.join("README.md")];
    let docs = std::fs::read_dir(root.join("docs")).expect("read docs/");
    let mut pages: Vec<PathBuf> = docs
        .map(|e| e.expect("a docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    paths.extend(pages);
    paths
        .into_iter()
        .map(|p| {
            let text =
                std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            (p, text)
        })
        .collect()
}

#[test]
fn every_rust_block_of_the_docs_is_compiled_code() {
    let code = code_only(SNIPPETS);
    // No snippet may be compiled out or hidden in a block comment.
    for hiding in ["#[cfg", "/*"] {
        assert!(
            !code.contains(hiding),
            "examples/tests/readme_snippets.rs holds `{hiding}`: a README block there might not be compiled"
        );
    }
    let snippets = normalise(&code);
    let mut missing = Vec::new();
    let mut tour_found = false;
    let mut rust_blocks = 0;
    for (path, text) in documents() {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        for b in blocks(&text) {
            if !b.is_rust() {
                if b.lang.is_empty() && looks_like_rust(&b.text) {
                    missing.push(format!(
                        "{name} line {}: a block without a language that looks like Rust: label it ```rust",
                        b.line
                    ));
                }
                continue;
            }
            rust_blocks += 1;
            if b.text == TOUR {
                tour_found = true;
            } else if !snippets.contains(&normalise(&code_only(&b.text))) {
                missing.push(format!(
                    "{name} line {}: `{}`",
                    b.line,
                    b.text.lines().next().unwrap_or_default()
                ));
            }
        }
    }
    assert!(
        rust_blocks >= 8,
        "only {rust_blocks} rust blocks found in README.md and docs/"
    );
    assert!(
        missing.is_empty(),
        "Rust blocks found neither in examples/src/bin/tour.rs (byte for byte) nor in the code \
         of examples/tests/readme_snippets.rs (up to whitespace and comments):\n{}",
        missing.join("\n")
    );
    assert!(
        tour_found,
        "no ```rust block of README.md is examples/src/bin/tour.rs byte for byte"
    );
}

#[test]
fn the_block_finder_sees_blocks_their_language_and_lines() {
    let md =
        "text\n```rust\nfn a() {}\n```\n```sh\nls\n```\n```rust,no_run\nlet x = 1;\n  y();\n```\n\
              ````rs\n```\ninner\n```\n````\n```\nplain\n```\n";
    let b = blocks(md);
    let seen: Vec<(usize, &str, &str)> = b
        .iter()
        .map(|b| (b.line, b.lang.as_str(), b.text.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (3, "rust", "fn a() {}\n"),
            (6, "sh", "ls\n"),
            (9, "rust", "let x = 1;\n  y();\n"),
            (13, "rs", "```\ninner\n```\n"),
            (18, "", "plain\n"),
        ]
    );
    assert!(b[0].is_rust() && b[2].is_rust() && b[3].is_rust() && !b[1].is_rust());
    assert_eq!(normalise(" let  x =\n\t 1; "), "let x = 1;");
    // Comments go, and so does code hidden in them; a URL in a string stays.
    assert_eq!(
        code_only("let u = \"postgres://a\"; // why\n// let hidden = 1;\nf(); //"),
        "let u = \"postgres://a\"; \n\nf(); \n"
    );
    assert!(looks_like_rust("    let x = f().await;\n"));
    assert!(!looks_like_rust(
        "def startTask(url, context=None, **kwargs)\n"
    ));
    assert!(!looks_like_rust(
        "taskq-macros/     #[task], #[iterative_task]\n"
    ));
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
