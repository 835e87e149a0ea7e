//! The store URL: taskq's options (`schema`, `pool_size`) taken out of the query string,
//! the rest read by the driver, and taskq's defaults for what the URL leaves unset. Pure:
//! nothing here connects.

use std::time::Duration;

use tokio_postgres::Config;

use crate::store::url::bad_url;
use crate::store::StoreError;

/// Checks `url` as [`PostgresStore::open`](super::PostgresStore::open) reads it, without
/// connecting: for [`StoreUrl::parse`](crate::store::StoreUrl::parse).
pub(crate) fn check_url(url: &str) -> Result<(), StoreError> {
    let (_, opts) = parse_url(url)?;
    check_schema_name(url, opts.schema.as_deref().unwrap_or("public"))
}

/// taskq's own URL options, taken out of the query string.
pub(super) struct UrlOptions {
    /// `schema=NAME` (or `taskq_schema=NAME`).
    pub schema: Option<String>,
    /// `pool_size=N`, 10 by default.
    pub pool_size: usize,
}

/// Reads a PostgreSQL URL: the driver's configuration, with taskq's defaults for what the
/// URL leaves unset (timeouts, keepalives, the application name), and taskq's own options.
pub(super) fn parse_url(url: &str) -> Result<(Config, UrlOptions), StoreError> {
    let bad = |reason: String| bad_url(url, reason);
    let mut opts = UrlOptions {
        schema: None,
        pool_size: 10,
    };
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut rest = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "schema" | "taskq_schema" => opts.schema = Some(v.to_string()),
            "pool_size" => {
                opts.pool_size = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad(format!("`pool_size={v}` is not a positive number")))?
            }
            _ => rest.push(pair),
        }
    }
    let driver_url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    let mut config: Config = driver_url
        .parse()
        // The driver's error says only "invalid connection string"; its source says what.
        .map_err(|e: tokio_postgres::Error| bad(crate::error::chain(&e)))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    // Detect a dead peer (a failover, a half-open connection) in seconds, not the ~15
    // minutes of the kernel's defaults: keepalive probes after 10 s idle, every 2 s, 3 of
    // them; and unacknowledged writes give up after 10 s. The URL may set each.
    if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
        config.keepalives_idle(Duration::from_secs(10));
    }
    if config.get_keepalives_interval().is_none() {
        config.keepalives_interval(Duration::from_secs(2));
    }
    if config.get_keepalives_retries().is_none() {
        config.keepalives_retries(3);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(Duration::from_secs(10));
    }
    if config.get_application_name().is_none() {
        config.application_name("taskq");
    }
    Ok((config, opts))
}

/// Refuses a schema name taskq does not quote safely: 1 to 63 ASCII letters, digits or
/// `_`, not starting with a digit.
pub(super) fn check_schema_name(url: &str, name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .next()
            .map(|c| c.is_ascii_alphabetic() || c == '_')
            .unwrap_or(false)
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(bad_url(
            url,
            format!(
                "schema name `{name}` must be 1 to 63 ASCII letters, digits or `_`, not starting with a digit"
            ),
        ))
    }
}
