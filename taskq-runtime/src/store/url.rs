//! Store URLs: what [`open`](super::open) accepts, read and checked without opening
//! anything, and the one way every [`StoreError::BadUrl`] is made (with the password
//! hidden).

use super::StoreError;

/// What a store URL names, read without opening or connecting to anything
/// ([`StoreUrl::parse`]); [`open`](super::open) reads its URL with it first.
///
/// Its `Debug` form hides a PostgreSQL password (`postgres://user:***@host/db`).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreUrl {
    /// `memory://` (or `memory:`): a new, empty store living in this process only.
    Memory,
    /// `sqlite://PATH`: the SQLite file at `path` (created if missing; its directory must
    /// exist, which only opening checks).
    Sqlite {
        /// The file path, as written after `sqlite://`.
        path: String,
    },
    /// `postgres://...` or `postgresql://...`: the URL as given, its options checked
    /// (`schema`, `pool_size` and the driver's own; see
    /// `taskq_runtime::store::postgres`).
    Postgres {
        /// The whole URL.
        url: String,
    },
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Memory => f.write_str("Memory"),
            StoreUrl::Sqlite { path } => f.debug_struct("Sqlite").field("path", path).finish(),
            StoreUrl::Postgres { url } => f
                .debug_struct("Postgres")
                .field("url", &redact(url))
                .finish(),
        }
    }
}

/// The forms a store URL takes, for error messages.
const FORMS: &str = "use `memory://`, `sqlite://PATH` or `postgres://USER@HOST/DB`";

impl StoreUrl {
    /// Reads a store URL: `memory://`, `sqlite://PATH` or `postgres://USER@HOST/DB` (also
    /// `postgresql://`), schemes in lowercase. Nothing is opened, created or connected to.
    ///
    /// Fails with [`StoreError::BadUrl`] saying what is wrong: an empty URL, whitespace
    /// around it, an unknown scheme (named), `memory://` followed by anything, an SQLite
    /// path that is empty, holds a NUL byte, names a directory, or is SQLite's
    /// `:memory:` or a `file:` URI (not supported: use `memory://`, or a path), a
    /// PostgreSQL URL the driver cannot read (with the driver's reason) or a bad taskq
    /// option (`schema`, `pool_size`), and a URL whose backend's Cargo feature is off.
    /// The URL in the error has its password replaced by `***`.
    pub fn parse(url: &str) -> Result<StoreUrl, StoreError> {
        let bad = |reason: String| bad_url(url, reason);
        if url.is_empty() {
            return Err(bad(format!("the URL is empty; {FORMS}")));
        }
        if url.trim() != url {
            return Err(bad(format!(
                "the URL starts or ends with whitespace; {FORMS}"
            )));
        }
        if url == "memory://" || url == "memory:" {
            return Ok(StoreUrl::Memory);
        }
        if url.starts_with("memory:") {
            return Err(bad(
                "`memory://` takes nothing after it: each open is a new, empty store of this process"
                    .into(),
            ));
        }
        if let Some(path) = url.strip_prefix("sqlite://") {
            check_sqlite_path(path).map_err(bad)?;
            if !cfg!(feature = "sqlite") {
                return Err(bad(
                    "taskq-runtime was built without its `sqlite` feature".into()
                ));
            }
            return Ok(StoreUrl::Sqlite {
                path: path.to_string(),
            });
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            #[cfg(feature = "postgres")]
            {
                super::postgres::check_url(url)?;
                return Ok(StoreUrl::Postgres {
                    url: url.to_string(),
                });
            }
            #[cfg(not(feature = "postgres"))]
            {
                return Err(bad(
                    "taskq-runtime was built without its `postgres` feature".into(),
                ));
            }
        }
        let scheme = url.split(':').next().unwrap_or_default();
        let lower = scheme.to_ascii_lowercase();
        if matches!(
            lower.as_str(),
            "memory" | "sqlite" | "postgres" | "postgresql"
        ) {
            return Err(bad(if scheme != lower {
                format!("write the scheme in lowercase, `{lower}://`; {FORMS}")
            } else if lower == "sqlite" {
                "write `sqlite://PATH` (two slashes, then the file's path); for a store in memory, `memory://`".to_string()
            } else {
                format!("write `{lower}://` (two slashes); {FORMS}")
            }));
        }
        let shown: String = scheme.chars().take(32).collect();
        if url.contains(':') && !shown.is_empty() {
            Err(bad(format!("unknown scheme `{shown}`; {FORMS}")))
        } else {
            Err(bad(format!("no scheme; {FORMS}")))
        }
    }
}

/// Why an SQLite path cannot name a store file, if it cannot.
fn check_sqlite_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("no file path after `sqlite://`; write `sqlite://taskq.db`".into());
    }
    if path.contains('\0') {
        return Err("the SQLite path contains a NUL byte, which no file name can".into());
    }
    if path == ":memory:" || path.starts_with("file:") {
        return Err(
            "SQLite's `:memory:` and `file:` URI names are not supported (an in-memory SQLite database would live in one connection and vanish at exit); write a file path, or use `memory://` for a store in memory"
                .into(),
        );
    }
    let last = path.rsplit('/').next().unwrap_or_default();
    if matches!(last, "" | "." | "..") {
        return Err(format!(
            "the SQLite path `{path}` names a directory; name a file, as in `sqlite://DIR/taskq.db`"
        ));
    }
    Ok(())
}

/// A [`StoreError::BadUrl`] for `url`, its password hidden, in the URL and in the reason
/// (the driver's messages quote parts of the URL).
pub(crate) fn bad_url(url: &str, reason: impl Into<String>) -> StoreError {
    let (shown, secrets) = redacted(url);
    let mut reason = reason.into();
    for s in secrets {
        reason = reason.replace(&s, "***");
    }
    StoreError::BadUrl { url: shown, reason }
}

/// `url` with the password of its user info (`user:PASSWORD@`) and of a `password=` query
/// option replaced by `***`, so that an error message or a log line never shows it. An
/// SQLite URL is a path, kept as it is.
pub(crate) fn redact(url: &str) -> String {
    redacted(url).0
}

/// [`redact`]'s text, and the parts of `url` it hid (longest first, each `@`-separated
/// piece of the user info's too), to hide them in other texts.
fn redacted(url: &str) -> (String, Vec<String>) {
    let mut secrets = Vec::new();
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return redacted_without_scheme(url);
    };
    if url.starts_with("sqlite://") {
        return (url.to_string(), secrets);
    }
    // Every option of the query that mentions a password (the query starts at the first
    // `?`, even one a user name holds: hiding too much is the safe side).
    let url = match url[start..].find('?').map(|i| start + i) {
        Some(q) => {
            let pairs: Vec<String> = url[q + 1..]
                .split('&')
                .map(|pair| {
                    // The driver decodes percent-escapes in option names; a pair that
                    // mentions a password anywhere is hidden, its name kept when plain.
                    let says = |t: &str| unescape(t).to_ascii_lowercase().contains("password");
                    match pair.split_once('=') {
                        Some((k, v)) if says(k) => {
                            secrets.push(v.to_string());
                            format!("{k}=***")
                        }
                        _ if says(pair) => {
                            secrets.push(pair.to_string());
                            "***".to_string()
                        }
                        _ => pair.to_string(),
                    }
                })
                .collect();
            format!("{}?{}", &url[..q], pairs.join("&"))
        }
        None => url.to_string(),
    };
    // Then the user info's. Where it ends is ambiguous when a password holds `@`, `/` or
    // `?` unencoded (the driver stops at the first `@`): hide everything from the first
    // `:` after the scheme to the last `@`, which may hide more than the password, never
    // less.
    let shown = match url.rfind('@').filter(|at| *at >= start) {
        Some(at) => match url[start..at].find(':').map(|i| start + i) {
            Some(colon) => {
                let hidden = &url[colon + 1..at];
                secrets.push(hidden.to_string());
                // The driver may read the hidden part differently (it stops at the first
                // `@`; a user name holding `?` starts its query early) and quote a piece of
                // it, so each piece between delimiters is hidden too.
                secrets.extend(pieces(hidden));
                format!("{}***{}", &url[..=colon], &url[at..])
            }
            None => url,
        },
        None => url,
    };
    secrets.retain(|s| !s.is_empty());
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    (shown, secrets)
}

/// The pieces of `hidden` between URL delimiters, to hide wherever a message quotes one:
/// those of four characters or more (hiding shorter ones, a `p`, would garble every word
/// of the message that holds that letter and point at the password besides).
fn pieces(hidden: &str) -> impl Iterator<Item = String> + '_ {
    hidden
        .split(|c| "@:?/&=# ".contains(c))
        .filter(|p| p.chars().count() >= 4)
        .map(str::to_string)
}

/// [`redacted`] of a text with no `://`: not a URL the driver reads, but it may still hold
/// a password (a slash left out, `postgres:user:pw@host/db`; a libpq `key=value` string).
/// The value of every `key=value` word whose key names a password is hidden, and
/// everything after the first `:`, except in the `sqlite:` and `memory:` forms (a path, or
/// nothing).
fn redacted_without_scheme(text: &str) -> (String, Vec<String>) {
    let lower = text.to_ascii_lowercase();
    if lower.starts_with("sqlite:") || lower.starts_with("memory:") {
        return (text.to_string(), Vec::new());
    }
    let mut secrets = Vec::new();
    let words: Vec<String> = text
        .split(' ')
        .map(|w| match w.split_once('=') {
            Some((k, v)) if unescape(k).to_ascii_lowercase().contains("password") => {
                secrets.push(v.to_string());
                format!("{k}=***")
            }
            _ => w.to_string(),
        })
        .collect();
    let mut shown = words.join(" ");
    if let Some(colon) = text.find(':') {
        let hidden = &text[colon + 1..];
        secrets.push(hidden.to_string());
        secrets.extend(pieces(hidden));
        shown = format!("{}:***", &text[..colon]);
    }
    secrets.retain(|s| !s.is_empty());
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    (shown, secrets)
}

/// `s` with its `%XX` escapes decoded (invalid ones kept as they are).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).and_then(|c| hex(*c)),
            b.get(i + 2).and_then(|c| hex(*c)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn a_password_after_a_user_name_holding_a_query_mark_is_hidden() {
        // Found by tests/fuzz_urls.rs: the driver reads the query from the user name's
        // `?` and quotes an option name holding the password.
        let url = "postgres://:@?:PWaAAA0AaAA0@127.0.0.1?schema=";
        let shown = match super::StoreUrl::parse(url) {
            Ok(u) => format!("{u:?}"),
            Err(e) => format!("{e} {e:?}"),
        };
        assert!(!shown.contains("PWaAAA0AaAA0"), "{shown}");
    }

    #[test]
    fn passwords_in_texts_that_are_not_urls_are_hidden() {
        // Found by trying the CLI: a slash left out, a libpq string, an `@` in a password.
        for (text, pw) in [
            ("postgres:bob:s3cretPW@host/db", "s3cretPW"),
            ("host=h port=99999 password=s3cretPW", "s3cretPW"),
            ("postgres://bob:p@ss@wordX@host:99999/db", "wordX"),
        ] {
            let shown = match super::StoreUrl::parse(text) {
                Ok(u) => format!("{u:?}"),
                Err(e) => format!("{e} {e:?}"),
            };
            assert!(!shown.contains(pw), "{text}: {shown}");
            assert!(shown.contains("***"), "{text}: {shown}");
        }
        // The `p` before the first `@` is not blanked out of every word.
        let e = super::StoreUrl::parse("postgres://bob:p@ss@wordX@host:99999/db")
            .expect_err("a bad port");
        assert!(!e.to_string().contains("o***tion"), "{e}");
        // SQLite forms keep their path.
        assert_eq!(redact("sqlite:relative.db"), "sqlite:relative.db");
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact("postgres://u:p@ss@h:5432/db?password=x&sslmode=disable"),
            "postgres://u:***@h:5432/db?password=***&sslmode=disable"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact("postgres://h/db?pool_size=x"),
            "postgres://h/db?pool_size=x"
        );
        assert_eq!(redact("sqlite://a:b@c"), "sqlite://a:b@c");
        assert_eq!(redact("mysql://a:b@c"), "mysql://a:***@c");
        assert_eq!(redact("postgres://?:pw@h"), "postgres://?:***@h");
        assert_eq!(
            redact("postgres://h/??password=pw&pass%77ord=pw"),
            "postgres://h/??password=***&pass%77ord=***"
        );
        assert_eq!(redact("postgres://h/?=?password=pw"), "postgres://h/?***");
        assert_eq!(
            redact("postgres://h?password=pw&schema=@"),
            "postgres://h?password=***&schema=@"
        );
        assert_eq!(
            redact("postgres://h:0?schema=@&password=pw"),
            "postgres://h:***@&password=***"
        );
        assert_eq!(redact("postgres://u@x:pw@h/d"), "postgres://u@x:***@h/d");
        assert_eq!(redact("no scheme"), "no scheme");
    }
}
