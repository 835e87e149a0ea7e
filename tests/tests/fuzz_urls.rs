//! Fuzzing store URLs (issue 9, the fault campaign): any string given to
//! [`StoreUrl::parse`] (what [`store::open`] and `Queue::open` read first) either names a
//! store or fails with [`StoreError::BadUrl`] saying what is wrong with it; it never
//! panics, never connects anywhere, and never repeats a password. SQLite paths of any
//! characters open a file where they say, or fail naming the path.
//!
//! Bounded for CI (512 strings, 256 PostgreSQL URLs, 32 SQLite opens);
//! `TASKQ_PROPTEST_CASES=N` runs N of each.
//!
//! [`StoreUrl::parse`]: taskq_runtime::store::StoreUrl::parse
//! [`store::open`]: taskq_runtime::store::open
//! [`StoreError::BadUrl`]: taskq_runtime::StoreError::BadUrl

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use taskq_runtime::store::StoreUrl;
use taskq_runtime::StoreError;

fn cases(ci: u32) -> u32 {
    match std::env::var("TASKQ_PROPTEST_CASES") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("TASKQ_PROPTEST_CASES={v:?} is not a number of cases")),
        Err(_) => ci,
    }
}

fn runner(ci: u32) -> TestRunner {
    TestRunner::new(Config {
        cases: cases(ci),
        failure_persistence: None,
        ..Config::default()
    })
}

/// The schemes a store URL may start with, and near misses.
const SCHEMES: [&str; 14] = [
    "memory://",
    "memory:",
    "sqlite://",
    "sqlite:",
    "sqlite:/",
    "postgres://",
    "postgresql://",
    "postgres:",
    "SQLITE://",
    "Postgres://",
    "mysql://",
    "file:",
    " sqlite://",
    "",
];

/// A string that often starts like a store URL.
fn url_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        (proptest::sample::select(SCHEMES.to_vec()), any::<String>())
            .prop_map(|(s, rest)| format!("{s}{rest}")),
        (
            proptest::sample::select(SCHEMES.to_vec()),
            vec(
                proptest::sample::select(vec![
                    "/", "?", "&", "=", "@", ":", "%", "#", "[", "]", "\0", "x", "é", ":memory:",
                    "file:"
                ]),
                0..8
            ),
        )
            .prop_map(|(s, parts)| format!("{s}{}", parts.concat())),
    ]
}

/// Checks what any parse must give: a store of the scheme the text starts with, or a
/// `BadUrl` whose reason says something.
fn check_parse(url: &str) -> Result<(), String> {
    match StoreUrl::parse(url) {
        Ok(parsed) => {
            let scheme_ok = match &parsed {
                StoreUrl::Memory => url == "memory://" || url == "memory:",
                StoreUrl::Sqlite { path } => url.strip_prefix("sqlite://") == Some(path.as_str()),
                StoreUrl::Postgres { url: u } => {
                    u == url && (url.starts_with("postgres://") || url.starts_with("postgresql://"))
                }
                other => return Err(format!("{url:?} parsed to an unknown kind: {other:?}")),
            };
            if !scheme_ok {
                return Err(format!("{url:?} parsed to {parsed:?}"));
            }
            Ok(())
        }
        Err(StoreError::BadUrl { reason, .. }) => {
            let text = StoreError::BadUrl {
                url: String::new(),
                reason: reason.clone(),
            }
            .to_string();
            if reason.trim().is_empty() || reason == "invalid connection string" {
                return Err(format!("{url:?}: the reason says nothing: {text}"));
            }
            Ok(())
        }
        Err(other) => Err(format!(
            "{url:?} failed with something else than BadUrl: {other}"
        )),
    }
}

#[test]
fn any_string_names_a_store_or_the_url_problem() {
    runner(512)
        .run(&url_like(), |url| {
            check_parse(&url).map_err(TestCaseError::fail)
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

/// A password no other part of a generated URL can contain by chance.
fn password() -> impl Strategy<Value = String> {
    "[A-Za-z0-9]{10,16}".prop_map(|p| format!("PW{p}"))
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z0-9_]{0,12}", any::<String>(), "[ -~]{0,12}",]
}

/// A PostgreSQL URL of fuzzed parts, with a password in the user info or the query.
fn postgres_url() -> impl Strategy<Value = (String, String)> {
    let host = prop_oneof![
        Just("127.0.0.1".to_string()),
        Just("localhost".to_string()),
        Just("[::1]".to_string()),
        Just("%2Ftmp".to_string()),
        Just(String::new()),
        Just("[::1".to_string()),
        "[a-z0-9.-]{0,20}",
    ];
    let port = proptest::option::of(prop_oneof![
        any::<u16>().prop_map(|p| p.to_string()),
        any::<u64>().prop_map(|p| p.to_string()),
        text(),
    ]);
    let key = proptest::sample::select(vec![
        "schema",
        "taskq_schema",
        "pool_size",
        "sslmode",
        "connect_timeout",
        "application_name",
        "keepalives_idle",
        "target_session_attrs",
        "user",
        "dbname",
        "options",
        "unknown_option",
    ]);
    (
        proptest::sample::select(vec!["postgres://", "postgresql://"]),
        proptest::option::of(text()),
        password(),
        any::<bool>(),
        host,
        port,
        proptest::option::of(text()),
        vec((key, text()), 0..4),
    )
        .prop_map(|(scheme, user, pw, in_query, host, port, db, query)| {
            let mut url = scheme.to_string();
            if !in_query {
                url.push_str(&format!("{}:{pw}@", user.clone().unwrap_or_default()));
            } else if let Some(u) = &user {
                url.push_str(&format!("{u}@"));
            }
            url.push_str(&host);
            if let Some(p) = port {
                url.push_str(&format!(":{p}"));
            }
            if let Some(d) = db {
                url.push_str(&format!("/{d}"));
            }
            let mut pairs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            if in_query {
                pairs.insert(pairs.len() / 2, format!("password={pw}"));
            }
            if !pairs.is_empty() {
                url.push_str(&format!("?{}", pairs.join("&")));
            }
            (url, pw)
        })
}

#[test]
fn postgres_urls_never_connect_panic_or_show_their_password() {
    runner(256)
        .run(&postgres_url(), |(url, pw)| {
            check_parse(&url).map_err(TestCaseError::fail)?;
            let shown = match StoreUrl::parse(&url) {
                Ok(u) => format!("{u:?}"),
                Err(e) => format!("{e} {e:?}"),
            };
            prop_assert!(!shown.contains(&pw), "{url:?} shows its password: {shown}");
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

/// A file name of any characters but `/` (so that it stays in the test's directory).
fn file_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9._-]{1,12}",
        any::<String>().prop_map(|s| s.replace('/', "_")),
        proptest::sample::select(vec![
            ":memory:".to_string(),
            "file:x.db?mode=memory".to_string(),
            "x?mode=memory".to_string(),
            "a\0b".to_string(),
            "é😀 x.db".to_string(),
            "x".repeat(300),
            ".".to_string(),
            "..".to_string(),
        ]),
    ]
}

#[test]
fn sqlite_paths_open_where_they_say_or_name_the_problem() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let cwd_before: Vec<_> = std::fs::read_dir(".")
        .expect("read the working directory")
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    runner(32)
        .run(&file_name(), |name| {
            let path = dir.path().join(&name);
            let url = format!("sqlite://{}", path.display());
            check_parse(&url).map_err(TestCaseError::fail)?;
            match rt.block_on(taskq_runtime::store::open(&url)) {
                Ok(store) => {
                    prop_assert_eq!(store.backend(), "sqlite");
                    prop_assert!(path.is_file(), "{url:?} opened, but {path:?} is no file");
                }
                Err(StoreError::BadUrl { reason, .. }) => {
                    prop_assert!(!reason.trim().is_empty());
                }
                Err(e) => {
                    let text = e.to_string();
                    prop_assert!(
                        text.contains(&path.display().to_string()) || text.contains("path"),
                        "{url:?}: the error names neither the path nor the URL: {text}"
                    );
                }
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let cwd_after: Vec<_> = std::fs::read_dir(".")
        .expect("read the working directory")
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    assert_eq!(
        cwd_before, cwd_after,
        "nothing was created outside the test's directory"
    );
}

/// The reasons people meet most, in words that say what to write instead.
#[test]
fn common_mistakes_are_named() {
    for (url, says) in [
        ("", "empty"),
        ("memory://x", "`memory://` takes nothing after it"),
        ("sqlite:", "`sqlite://PATH`"),
        ("sqlite::memory:", "`memory://`"),
        ("sqlite://:memory:", "`memory://`"),
        ("sqlite://file:x.db?mode=ro", "`file:`"),
        ("sqlite://", "no file path"),
        ("sqlite://a\0b", "NUL"),
        ("sqlite://dir/", "directory"),
        ("SQLITE://x", "lowercase"),
        (" sqlite://x", "whitespace"),
        ("mysql://x", "unknown scheme `mysql`"),
        ("postgres://u@h:99999/db", "port"),
        ("postgres://u@h/db?sslmode=bogus", "sslmode"),
        ("postgres://u@h/db?pool_size=0", "pool_size"),
        ("postgres://u@h/db?schema=1x", "schema name"),
    ] {
        match StoreUrl::parse(url) {
            Err(e @ StoreError::BadUrl { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains(says),
                    "{url:?}: the error should say {says:?}: {text}"
                );
            }
            other => panic!("{url:?}: expected a BadUrl, got {other:?}"),
        }
    }
    for (url, pw) in [
        ("postgres://u:Secret1@h/db?pool_size=x", "Secret1"),
        (
            "postgres://u@h/db?password=Secret2&sslmode=bogus",
            "Secret2",
        ),
        ("postgres://u:Secret3@h:99999/db", "Secret3"),
    ] {
        let text = format!("{:?}", StoreUrl::parse(url));
        assert!(!text.contains(pw), "{url:?} shows its password: {text}");
        assert!(
            text.contains("***"),
            "the password's place is marked: {text}"
        );
    }
}
