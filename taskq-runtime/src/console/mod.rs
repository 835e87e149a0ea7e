//! The web console (Cargo feature `console`): server-rendered pages over the management
//! API of a [`Queue`], as an axum [`Router`] an application nests, and [`serve`] for a
//! console of its own (what `taskq admin --bind ADDR` runs).
//!
//! ```no_run
//! use taskq_runtime::console::{self, ConsoleConfig};
//! use taskq_runtime::Queue;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let queue = Queue::open("sqlite://tasks.db").await?;
//! // The operator's token (16 bytes or more); keep it out of the source.
//! let token = std::env::var("TASKQ_CONSOLE_TOKEN")?;
//! let admin = console::router(queue, ConsoleConfig::token(token))?;
//! let app = axum::Router::new().nest("/admin", admin);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! # Pages
//! - `/`: every queue with its counts by state and pause flag, and a chart of the tasks
//!   done and failed (failed or dead) per minute over the last hour.
//! - `/tasks`: tasks newest first, filtered by queue, state and task name, paged by key
//!   (`?before=ID`), with a retry button on each dead or failed one, "retry selected" and
//!   "retry all matching".
//! - `/tasks/{id}`: one task, its arguments pretty-printed and every attempt (times,
//!   worker, outcome, error).
//! - `/runs`: iterative runs with a progress bar, entities per second (the average since
//!   the run started) and the estimated time left.
//! - `/schedules`: periodic tasks' schedules ([`crate::schedule`]) with their cron
//!   expression, time zone, next and last run, last task, and whether each is paused or
//!   its task missing; buttons to run one now, pause or resume it.
//!
//! Pages refresh themselves every [`ConsoleConfig::refresh`] through a small script served
//! by the console (`/assets/console.js`), which pauses while a person reads: while the
//! pointer is over a table, the arguments, the chart or a form, text is selected, a form field has the focus,
//! a row is ticked, the page is scrolled down or hidden, or the person paused it.
//!
//! # Actions
//! POST forms: run now, delete, retry (one, the ticked ones, every dead or failed task
//! matching the filter), pause, resume, purge a queue, cancel an iterative run, run a
//! schedule's task now, pause or resume a schedule. Delete,
//! purge, cancel and retry-all first show a confirmation page. No request chooses a task
//! or its arguments: the console acts on tasks that exist (a retry puts back a dead or
//! failed task with its own arguments), and a schedule's "run now" starts the stored
//! schedule's task with the schedule's stored arguments.
//!
//! # Security model
//! - **Authentication** on every page and action, configured by the operator
//!   ([`ConsoleAuth`]): a token, or a user name and password. People sign in with a form;
//!   the console then keeps a session in a cookie signed with HMAC-SHA-256
//!   (`HttpOnly`, `SameSite=Strict`, `Secure` when [`ConsoleConfig::secure_cookie`]),
//!   valid for [`ConsoleConfig::session_ttl`] (12 hours by default). With a token, scripts
//!   may instead send `Authorization: Bearer TOKEN` on each request. Credentials are
//!   compared in constant time (`subtle`). A session names a digest of the credentials, so
//!   changing the token or password ends every session; so does a new session key (a
//!   random one per start unless [`ConsoleConfig::session_key`] is set).
//! - **Unauthenticated** only when the configuration says so explicitly
//!   ([`ConsoleConfig::unauthenticated_loopback`]): [`serve`] then refuses any address but
//!   a loopback one, and the console answers only requests whose `Host` is a loopback
//!   name or address (against DNS rebinding) from a peer on this machine (where the
//!   server gives the peer's address, as [`serve`] does).
//! - **CSRF**: every POST made with the session cookie carries a token derived from that
//!   session (HMAC), checked in constant time before any handler runs; a POST without it,
//!   or with a wrong one, is refused with 403. A request with `Authorization: Bearer` needs
//!   none (a browser never adds that header by itself).
//! - **Read-only mode** ([`ConsoleConfig::read_only`]): the pages show no action, and every
//!   action is refused with 403.
//! - **Escaping**: every value that comes from a task (names, arguments, errors, queue
//!   names) is HTML-escaped by the templates (askama escapes by default).
//! - **Headers** on every response: a Content-Security-Policy without inline scripts or
//!   styles (`default-src 'none'; script-src 'self'; style-src 'self'; ...;
//!   frame-ancestors 'none'`), `X-Frame-Options: DENY`, `X-Content-Type-Options: nosniff`,
//!   `Referrer-Policy: no-referrer`, and `Cache-Control: no-store` on pages.
//! - Every asset is served from the binary: no CDN, no file read at run time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;

use crate::Queue;

mod actions;
mod assets;
mod auth;
mod chart;
pub(crate) mod csrf;
mod filters;
mod headers;
mod pages;
mod schedules;
mod templates;

/// How people (and scripts) prove they may use the console.
#[derive(Clone)]
pub enum ConsoleAuth {
    /// A shared secret of at least [`MIN_TOKEN_BYTES`] bytes: typed into the sign-in form,
    /// or sent by scripts as `Authorization: Bearer TOKEN`.
    Token(String),
    /// A user name (not empty) and a password of at least [`MIN_PASSWORD_BYTES`] bytes,
    /// typed into the sign-in form.
    Password {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
}

impl std::fmt::Debug for ConsoleAuth {
    // Never print a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConsoleAuth::Token(_) => f.write_str("Token(***)"),
            ConsoleAuth::Password { user, .. } => f
                .debug_struct("Password")
                .field("user", user)
                .field("password", &"***")
                .finish(),
        }
    }
}

/// The shortest token [`ConsoleAuth::Token`] accepts, in bytes.
pub const MIN_TOKEN_BYTES: usize = 16;
/// The shortest password [`ConsoleAuth::Password`] accepts, in bytes.
pub const MIN_PASSWORD_BYTES: usize = 8;

/// How the console runs. Build one with [`ConsoleConfig::token`],
/// [`ConsoleConfig::password`] or [`ConsoleConfig::unauthenticated_loopback`], then set
/// the other fields. Its `Debug` form hides the secrets.
#[derive(Clone)]
pub struct ConsoleConfig {
    /// Who may use the console; `None` only with
    /// [`allow_unauthenticated_loopback`](Self::allow_unauthenticated_loopback).
    pub auth: Option<ConsoleAuth>,
    /// The explicit flag that lets the console run without credentials: [`router`] then
    /// answers only requests for a loopback host, and [`serve`] binds only a loopback
    /// address. Default `false`.
    pub allow_unauthenticated_loopback: bool,
    /// Shows the pages without any action and refuses every action with 403. Default
    /// `false`.
    pub read_only: bool,
    /// The key that signs session cookies and CSRF tokens (at least 32 bytes). `None`, the
    /// default: 32 random bytes drawn when the router is built, so sessions end when the
    /// process restarts. Give the same key to every process behind one address.
    pub session_key: Option<Vec<u8>>,
    /// How long a sign-in lasts. Default 12 hours.
    pub session_ttl: Duration,
    /// Marks the session cookie `Secure` (sent over HTTPS only): set it when the console
    /// is served over HTTPS. Default `false`.
    pub secure_cookie: bool,
    /// How often pages refresh themselves while nobody reads them, in whole seconds; under
    /// one second turns live refresh off. Default 5 seconds.
    pub refresh: Duration,
    /// Tasks per page on `/tasks` (the `limit` query parameter may ask for up to 500).
    /// Default 50.
    pub page_size: usize,
    /// The Prometheus recorder whose metrics `GET /metrics` serves in the text exposition
    /// format (queue depth refreshed from the store at each scrape, through
    /// [`crate::metrics::scrape`]), behind the same authentication as the pages: a
    /// scraper sends the token as `Authorization: Bearer TOKEN`. `None` (the default):
    /// no `/metrics` route. Feature `prometheus`.
    #[cfg(feature = "prometheus")]
    pub metrics: Option<crate::metrics::PrometheusHandle>,
}

impl std::fmt::Debug for ConsoleConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleConfig")
            .field("auth", &self.auth)
            .field(
                "allow_unauthenticated_loopback",
                &self.allow_unauthenticated_loopback,
            )
            .field("read_only", &self.read_only)
            .field("session_key", &self.session_key.as_ref().map(|_| "***"))
            .field("session_ttl", &self.session_ttl)
            .field("secure_cookie", &self.secure_cookie)
            .field("refresh", &self.refresh)
            .field("page_size", &self.page_size)
            .finish_non_exhaustive()
    }
}

impl ConsoleConfig {
    fn with_auth(auth: Option<ConsoleAuth>) -> ConsoleConfig {
        ConsoleConfig {
            auth,
            allow_unauthenticated_loopback: false,
            read_only: false,
            session_key: None,
            session_ttl: Duration::from_secs(12 * 3600),
            secure_cookie: false,
            refresh: Duration::from_secs(5),
            page_size: 50,
            #[cfg(feature = "prometheus")]
            metrics: None,
        }
    }

    /// A console people sign in to with `token` (at least [`MIN_TOKEN_BYTES`] bytes), and
    /// scripts reach with `Authorization: Bearer TOKEN`.
    pub fn token(token: impl Into<String>) -> ConsoleConfig {
        ConsoleConfig::with_auth(Some(ConsoleAuth::Token(token.into())))
    }

    /// A console people sign in to with a user name and a password (at least
    /// [`MIN_PASSWORD_BYTES`] bytes).
    pub fn password(user: impl Into<String>, password: impl Into<String>) -> ConsoleConfig {
        ConsoleConfig::with_auth(Some(ConsoleAuth::Password {
            user: user.into(),
            password: password.into(),
        }))
    }

    /// A console without credentials, for this machine only: it answers only requests
    /// whose `Host` is a loopback name or address (against DNS rebinding) and, where the
    /// server gives the peer's address (axum's `ConnectInfo`, as [`serve`] does), only
    /// peers on this machine; [`serve`] binds only a loopback address. Anyone who can open
    /// a connection on this machine can use it. Nesting it yourself, bind a loopback
    /// address or serve with `into_make_service_with_connect_info::<SocketAddr>()`: a
    /// client elsewhere can send any `Host`.
    pub fn unauthenticated_loopback() -> ConsoleConfig {
        let mut c = ConsoleConfig::with_auth(None);
        c.allow_unauthenticated_loopback = true;
        c
    }

    /// The checks [`router`] makes: credentials present (or the explicit flag), strong
    /// enough, and a session key of at least 32 bytes.
    pub fn validate(&self) -> Result<(), ConsoleError> {
        if let Some(k) = &self.session_key {
            if k.len() < 32 {
                return Err(ConsoleError::WeakCredentials(format!(
                    "the session key is {} bytes long; it needs at least 32",
                    k.len()
                )));
            }
        }
        match &self.auth {
            None if !self.allow_unauthenticated_loopback => Err(ConsoleError::NoCredentials),
            None => Ok(()),
            Some(ConsoleAuth::Token(t)) if t.len() < MIN_TOKEN_BYTES => {
                Err(ConsoleError::WeakCredentials(format!(
                    "the console token is {} bytes long; it needs at least {MIN_TOKEN_BYTES}",
                    t.len()
                )))
            }
            Some(ConsoleAuth::Password { user, .. }) if user.is_empty() => Err(
                ConsoleError::WeakCredentials("the console user name is empty".into()),
            ),
            Some(ConsoleAuth::Password { password, .. }) if password.len() < MIN_PASSWORD_BYTES => {
                Err(ConsoleError::WeakCredentials(format!(
                    "the console password is {} bytes long; it needs at least {MIN_PASSWORD_BYTES}",
                    password.len()
                )))
            }
            Some(_) => Ok(()),
        }
    }

    /// The check [`serve`] makes before binding `addr`: [`validate`](Self::validate), and
    /// without credentials, a loopback address.
    pub fn check_bind(&self, addr: SocketAddr) -> Result<(), ConsoleError> {
        self.validate()?;
        if self.auth.is_none() && !addr.ip().is_loopback() {
            return Err(ConsoleError::NotLoopback(addr));
        }
        Ok(())
    }
}

/// Why the console would not start.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// No credentials, and no explicit flag to run without.
    #[error("the console needs credentials (a token, or a user and password); to run it without any on this machine only, set allow_unauthenticated_loopback and bind a loopback address")]
    NoCredentials,
    /// Without credentials, on an address other machines can reach.
    #[error("the console has no credentials, so it binds only a loopback address (127.0.0.1 or ::1), not {0}")]
    NotLoopback(SocketAddr),
    /// A token, password, user name or session key too weak to accept; says which.
    #[error("{0}")]
    WeakCredentials(String),
    /// No random bytes for the session key.
    #[error("cannot draw a random session key: {0}")]
    Random(String),
    /// Binding or serving failed.
    #[error("console server: {0}")]
    Io(#[from] std::io::Error),
}

/// A new random token for [`ConsoleConfig::token`]: 32 hexadecimal characters (128 bits)
/// from the operating system's random source. Fails only when that source does.
pub fn random_token() -> Result<String, ConsoleError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| ConsoleError::Random(e.to_string()))?;
    Ok(auth::hex(&bytes))
}

/// What every handler shares.
pub(crate) struct Console {
    pub(crate) queue: Queue,
    pub(crate) config: ConsoleConfig,
    pub(crate) keys: auth::Keys,
    /// The throughput chart's settled minutes.
    pub(crate) counted: chart::Counted,
}

/// Shared state of the console's handlers.
pub(crate) type Shared = Arc<Console>;

/// The console's routes, to nest in an application (`Router::nest("/admin", ..)`) or
/// serve as they are. Links and the session cookie follow the path it is nested at.
///
/// Fails when the configuration does ([`ConsoleConfig::validate`]) or no random session
/// key can be drawn.
pub fn router(queue: Queue, config: ConsoleConfig) -> Result<Router, ConsoleError> {
    config.validate()?;
    let keys = auth::Keys::new(&config)?;
    let shared: Shared = Arc::new(Console {
        queue,
        config,
        keys,
        counted: chart::Counted::default(),
    });
    let app = Router::new()
        .merge(pages::routes())
        .merge(actions::routes())
        .merge(schedules::routes())
        .merge(auth::logout_routes())
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            auth::gate,
        ))
        .merge(auth::login_routes())
        .merge(assets::routes())
        .with_state(shared)
        .layer(axum::middleware::from_fn(headers::guard));
    Ok(app)
}

/// Serves the console alone on `addr` until Ctrl-C or SIGTERM, then finishes the requests
/// in flight: what `taskq admin --bind ADDR` runs.
///
/// Refuses to start without credentials unless the configuration sets
/// [`ConsoleConfig::allow_unauthenticated_loopback`] and `addr` is a loopback address
/// ([`ConsoleConfig::check_bind`]); fails too when the address cannot be bound.
pub async fn serve(
    queue: Queue,
    config: ConsoleConfig,
    addr: SocketAddr,
) -> Result<(), ConsoleError> {
    config.check_bind(addr)?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    serve_on(queue, config, listener, shutdown_signal()).await
}

/// Serves the console alone on a bound listener until `shutdown` completes (then finishes
/// the requests in flight). Makes the checks of [`serve`] on the listener's address.
pub async fn serve_on(
    queue: Queue,
    config: ConsoleConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ConsoleError> {
    config.check_bind(listener.local_addr()?)?;
    let app = router(queue, config)?;
    // With the peer's address, so that an unauthenticated console refuses any peer but
    // this machine even if its listener was bound more widely.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    Ok(())
}

/// Completes on Ctrl-C, or SIGTERM on Unix (what `docker stop`, systemd and Kubernetes
/// send): the `shutdown` that [`serve`] gives [`serve_on`], for a caller that binds its
/// own listener (to report the bound address before serving, say).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        // An error means no signal handler could be installed: then only SIGTERM stops.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
