//! Compile-time behaviour of `#[task]` and `#[iterative_task]`: every error a user can see
//! has a `.stderr` file under `tests/ui/fail`, and the `tests/ui/pass` files must compile.
//!
//! The `.stderr` files were made with rustc 1.95.0; other compilers word and place
//! diagnostics differently, so run this test with that toolchain. Regenerate them with
//! `TRYBUILD=overwrite cargo test -p taskq-tests --test ui` and read every diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/fail/*.rs");
    t.pass("ui/pass/*.rs");
}

/// Each mistake in a `ui/fail` file is marked on its line with `//~ mistake` (or
/// `//~ mistakes: N` for N on one line), and its `.stderr` holds exactly one error per
/// mistake, on that line: a misuse reported twice, or an error away from the mistake, fails
/// here. (`ui` above checks that the `.stderr` files are what rustc prints.)
#[test]
fn each_mistake_is_reported_once_at_the_mistake() {
    use std::collections::BTreeMap;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui/fail");
    let mut checked = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("ui/fail")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    entries.sort();
    for rs in entries {
        let name = rs.file_name().and_then(|n| n.to_str()).expect("a name");
        let source = std::fs::read_to_string(&rs).expect("source");
        let stderr = std::fs::read_to_string(rs.with_extension("stderr")).expect("stderr");
        let mut marked = BTreeMap::new();
        for (i, line) in source.lines().enumerate() {
            if let Some((_, mark)) = line.split_once("//~ ") {
                let n = match mark.trim().strip_prefix("mistakes: ") {
                    Some(n) => n.parse::<usize>().expect("a count after `mistakes: `"),
                    None if mark.trim() == "mistake" => 1,
                    None => panic!("{name}:{}: unknown marker `//~ {mark}`", i + 1),
                };
                marked.insert(i + 1, n);
            }
        }
        let mut reported = BTreeMap::new();
        let lines: Vec<&str> = stderr.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if !line.starts_with("error") {
                continue;
            }
            let at = lines[i + 1..]
                .iter()
                .take(3)
                .find_map(|l| l.trim_start().strip_prefix("--> "))
                .unwrap_or_else(|| panic!("{name}: an error without a location: {line}"));
            let (file, rest) = at.split_once(':').expect("file:line:col");
            assert!(
                file.ends_with(name),
                "{name}: an error outside the file, at {at}: {line}"
            );
            let ln: usize = rest
                .split(':')
                .next()
                .and_then(|l| l.parse().ok())
                .expect("a line number");
            *reported.entry(ln).or_insert(0) += 1;
        }
        assert!(!marked.is_empty(), "{name}: no mistake is marked");
        assert_eq!(
            reported, marked,
            "{name}: errors by line (left) against the marked mistakes (right)"
        );
        checked += 1;
    }
    assert!(checked >= 28, "only {checked} files checked");
}
