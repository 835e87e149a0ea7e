//! Authentication: the credentials check (constant time), signed session cookies, the
//! sign-in and sign-out handlers, and [`gate`], the layer every page and action passes
//! (it also refuses actions in read-only mode and checks their CSRF token).

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::templates::{self, Chrome};
use super::{csrf, ConsoleAuth, ConsoleConfig, ConsoleError, Shared};
use crate::time::Timestamp;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "taskq_console";

/// The largest form body an action reads (the ids of a selection fit many times over).
const MAX_FORM_BYTES: usize = 256 * 1024;

/// How long a failed sign-in waits before answering: slows down guessing from one
/// connection (a guesser with many connections is slowed by the credentials' length).
const FAILED_SIGN_IN_DELAY: Duration = Duration::from_millis(250);

type HmacSha256 = Hmac<Sha256>;

/// The keys of a console: the one that signs cookies and CSRF tokens, and a digest of the
/// credentials each session is bound to.
pub(crate) struct Keys {
    mac_key: Vec<u8>,
    credentials: [u8; 32],
}

impl Keys {
    pub(crate) fn new(config: &ConsoleConfig) -> Result<Keys, ConsoleError> {
        let mac_key = match &config.session_key {
            Some(k) => k.clone(),
            None => {
                let mut k = vec![0u8; 32];
                getrandom::fill(&mut k).map_err(|e| ConsoleError::Random(e.to_string()))?;
                k
            }
        };
        // Sessions name the credentials: changing the token or password ends them.
        let credentials = match &config.auth {
            Some(ConsoleAuth::Token(t)) => digest(&[b"token", t.as_bytes()]),
            Some(ConsoleAuth::Password { user, password }) => {
                digest(&[b"password", user.as_bytes(), password.as_bytes()])
            }
            None => digest(&[b"unauthenticated"]),
        };
        Ok(Keys {
            mac_key,
            credentials,
        })
    }

    /// HMAC-SHA-256 of the parts (each followed by a NUL, so parts cannot run together).
    pub(crate) fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        // A key of any length is valid for HMAC: this cannot fail.
        let mut m = match <HmacSha256 as KeyInit>::new_from_slice(&self.mac_key) {
            Ok(m) => m,
            Err(_) => return [0; 32],
        };
        for p in parts {
            m.update(p);
            m.update(&[0]);
        }
        m.finalize().into_bytes().into()
    }

    /// A session cookie value valid until `expires`: `EXPIRES.NONCE.MAC`.
    fn new_session(&self, expires: Timestamp) -> Result<String, ConsoleError> {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).map_err(|e| ConsoleError::Random(e.to_string()))?;
        let (exp, nonce) = (expires.0.to_string(), hex(&nonce));
        let mac = self.session_mac(&exp, &nonce);
        Ok(format!("{exp}.{nonce}.{}", hex(&mac)))
    }

    fn session_mac(&self, exp: &str, nonce: &str) -> [u8; 32] {
        self.mac(&[
            b"taskq-console-session",
            exp.as_bytes(),
            nonce.as_bytes(),
            &self.credentials,
        ])
    }

    /// Whether a cookie value is a session this console signed, not expired at `now`.
    fn valid_session(&self, value: &str, now: Timestamp) -> bool {
        let mut parts = value.split('.');
        let (Some(exp), Some(nonce), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let Ok(expires) = exp.parse::<i64>() else {
            return false;
        };
        let expected = hex(&self.session_mac(exp, nonce));
        let signed: bool = expected.as_bytes().ct_eq(mac.as_bytes()).into();
        signed && now.0 < expires
    }
}

/// SHA-256 of the parts, each followed by a NUL.
fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
        h.update([0u8]);
    }
    h.finalize().into()
}

/// Lowercase hexadecimal.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Whether `given` equals `expected`, in time independent of where they differ and of
/// their lengths (both are hashed first).
fn secret_eq(given: &str, expected: &str) -> subtle::Choice {
    digest(&[given.as_bytes()]).ct_eq(&digest(&[expected.as_bytes()]))
}

/// Who is asking, as [`gate`] found out; handlers read it from the request extensions.
#[derive(Clone, Debug)]
pub(crate) struct Principal {
    /// The CSRF token forms must carry; `None` for a request authenticated by its
    /// `Authorization` header (it needs none).
    pub(crate) csrf: Option<String>,
    /// Signed in with credentials (shows the sign-out button).
    pub(crate) signed_in: bool,
}

/// The routes of signing in, outside [`gate`].
pub(crate) fn login_routes() -> Router<Shared> {
    Router::new().route("/login", get(login_page).post(login))
}

/// Signing out, behind [`gate`] (a POST with its CSRF token).
pub(crate) fn logout_routes() -> Router<Shared> {
    Router::new().route("/logout", post(logout))
}

/// The session cookie of a request, if any. The header is split as bytes: another
/// site's cookie on the same host holding bytes that are not UTF-8 (browsers send them
/// as they were set) must not hide ours.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .filter_map(|c| {
            let c = c.trim_ascii();
            let eq = c.iter().position(|b| *b == b'=')?;
            Some((&c[..eq], &c[eq + 1..]))
        })
        .find(|(name, _)| *name == COOKIE.as_bytes())
        .and_then(|(_, value)| std::str::from_utf8(value).ok())
}

/// The `Set-Cookie` header of a session (or, for `None`, of its removal).
fn set_cookie(console: &Shared, chrome: &Chrome, value: Option<&str>) -> Option<HeaderValue> {
    let path = if chrome.prefix.is_empty() {
        "/"
    } else {
        &chrome.prefix
    };
    let secure = if console.config.secure_cookie {
        "; Secure"
    } else {
        ""
    };
    let (value, age) = match value {
        Some(v) => (v, console.config.session_ttl.as_secs()),
        None => ("", 0),
    };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path={path}; Max-Age={age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .ok()
}

/// Whether a `Host` header names this machine: `localhost`, a 127.0.0.0/8 address or
/// `[::1]`, with any port.
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether the peer is on this machine, where the server says who it is (axum's
/// `ConnectInfo`, which [`super::serve`] provides); `true` where it does not say.
fn loopback_peer(req: &Request) -> bool {
    req.extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .is_none_or(|c| c.0.ip().is_loopback())
}

/// What the `Authorization: Bearer` header says: `None` without one, `Some(ok)` with one.
fn bearer(console: &Shared, headers: &HeaderMap) -> Option<bool> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    Some(match &console.config.auth {
        Some(ConsoleAuth::Token(expected)) => secret_eq(token.trim(), expected).into(),
        _ => false,
    })
}

/// Every page and action passes here: it authenticates the request (a session cookie, a
/// bearer token, or, in unauthenticated loopback mode, a loopback `Host`), answers 401 with
/// the sign-in page without it, and for a POST refuses read-only mode (403) and a missing
/// or wrong CSRF token (403) before any handler runs.
pub(crate) async fn gate(State(console): State<Shared>, req: Request, next: Next) -> Response {
    let chrome = Chrome::of(&console, &req, None);
    let now = Timestamp::now();
    let mut new_cookie = None;
    let principal = match (&console.config.auth, bearer(&console, req.headers())) {
        (None, _) if !loopback_host(req.headers()) || !loopback_peer(&req) => {
            return templates::error_page(
                &chrome,
                StatusCode::FORBIDDEN,
                "This console runs without credentials and answers only for localhost, 127.0.0.1 or [::1].",
            );
        }
        (Some(_), Some(false)) => return unauthorized(&console, &req, "That token is not valid."),
        (Some(_), Some(true)) => Principal {
            csrf: None,
            signed_in: false,
        },
        (auth, _) => match session_cookie(req.headers()) {
            Some(c) if console.keys.valid_session(c, now) => Principal {
                csrf: Some(csrf::token(&console.keys, c)),
                signed_in: auth.is_some(),
            },
            _ if auth.is_none() => {
                // No credentials to check: a session only to bind CSRF tokens to.
                let Ok(c) = console
                    .keys
                    .new_session(now.add(console.config.session_ttl))
                else {
                    return StatusCode::INTERNAL_SERVER_ERROR.into_response();
                };
                let p = Principal {
                    csrf: Some(csrf::token(&console.keys, &c)),
                    signed_in: false,
                };
                new_cookie = Some(c);
                p
            }
            _ => return unauthorized(&console, &req, ""),
        },
    };

    let mut req = req;
    if req.method() == Method::POST {
        let is_logout = req.uri().path().ends_with("/logout");
        if console.config.read_only && !is_logout {
            return templates::error_page(
                &chrome,
                StatusCode::FORBIDDEN,
                "This console is read-only: it takes no action.",
            );
        }
        let (parts, body) = req.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
            return templates::error_page(
                &chrome,
                StatusCode::PAYLOAD_TOO_LARGE,
                "The form is too large.",
            );
        };
        if let Some(expected) = &principal.csrf {
            if !csrf::form_has(&bytes, expected) {
                return templates::error_page(
                    &chrome,
                    StatusCode::FORBIDDEN,
                    "The form's CSRF token is missing or wrong (the page may be older than your session): reload the page and try again.",
                );
            }
        }
        req = Request::from_parts(parts, Body::from(bytes));
    }
    req.extensions_mut().insert(principal);
    let mut resp = next.run(req).await;
    if let Some(c) = new_cookie {
        if let Some(v) = set_cookie(&console, &chrome, Some(&c)) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

/// 401: the sign-in page for a person (GET), a short page for anything else.
fn unauthorized(console: &Shared, req: &Request, error: &str) -> Response {
    let chrome = Chrome::of(console, req, None);
    let next = if req.method() == Method::GET {
        chrome.here.clone()
    } else {
        String::new()
    };
    let mut resp = templates::login_page(console, &chrome, &next, error);
    *resp.status_mut() = StatusCode::UNAUTHORIZED;
    if matches!(console.config.auth, Some(ConsoleAuth::Token(_))) {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"taskq console\""),
        );
    }
    resp
}

/// The sign-in form's fields.
#[derive(serde::Deserialize, Default)]
pub(crate) struct SignIn {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: String,
}

/// `GET /login`: the sign-in form (home at once for a signed-in person or without
/// credentials).
async fn login_page(
    State(console): State<Shared>,
    axum::extract::Query(q): axum::extract::Query<SignIn>,
    req: Request,
) -> Response {
    let chrome = Chrome::of(&console, &req, None);
    let signed_in = session_cookie(req.headers())
        .is_some_and(|c| console.keys.valid_session(c, Timestamp::now()));
    if console.config.auth.is_none() || signed_in {
        return Redirect::to(&chrome.next_or_home(&q.next)).into_response();
    }
    templates::login_page(&console, &chrome, &q.next, "")
}

/// `POST /login`: checks the credentials in constant time; on success sets the session
/// cookie and goes to `next` (a path of this console) or home, else 401 with the form.
async fn login(State(console): State<Shared>, req: Request) -> Response {
    let chrome = Chrome::of(&console, &req, None);
    let Ok(bytes) = axum::body::to_bytes(req.into_body(), MAX_FORM_BYTES).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let mut form = SignIn::default();
    for (k, v) in form_urlencoded::parse(&bytes) {
        match &*k {
            "user" => form.user = v.into_owned(),
            "password" => form.password = v.into_owned(),
            "token" => form.token = v.into_owned(),
            "next" => form.next = v.into_owned(),
            _ => {}
        }
    }
    let ok: bool = match &console.config.auth {
        Some(ConsoleAuth::Token(t)) => secret_eq(&form.token, t).into(),
        Some(ConsoleAuth::Password { user, password }) => {
            // Both compared whatever the first says, so the time tells neither.
            (secret_eq(&form.user, user) & secret_eq(&form.password, password)).into()
        }
        None => true,
    };
    if !ok {
        tokio::time::sleep(FAILED_SIGN_IN_DELAY).await;
        let mut resp = templates::login_page(
            &console,
            &chrome,
            &form.next,
            "Those credentials are not valid.",
        );
        *resp.status_mut() = StatusCode::UNAUTHORIZED;
        return resp;
    }
    let expires = Timestamp::now().add(console.config.session_ttl);
    let Ok(session) = console.keys.new_session(expires) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let mut resp = Redirect::to(&chrome.next_or_home(&form.next)).into_response();
    if let Some(v) = set_cookie(&console, &chrome, Some(&session)) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// `POST /logout`: removes the session cookie and shows the sign-in form. (The signed
/// value itself stays valid until it expires: sessions are not stored; a new session key
/// or new credentials end them all.)
async fn logout(State(console): State<Shared>, req: Request) -> Response {
    let chrome = Chrome::of(&console, &req, None);
    let mut resp = Redirect::to(&format!("{}/login", chrome.prefix)).into_response();
    if let Some(v) = set_cookie(&console, &chrome, None) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(auth: ConsoleConfig) -> Keys {
        Keys::new(&auth).expect("keys")
    }

    #[test]
    fn the_session_cookie_is_found_beside_cookies_that_are_not_utf8() {
        let mut h = HeaderMap::new();
        let raw = [
            b"other=\xff\xfe; taskq_console=abc.def ; x=1".as_slice(),
            b"taskq_consolex=no",
        ];
        for v in raw {
            h.append(
                header::COOKIE,
                HeaderValue::from_bytes(v).expect("a header value"),
            );
        }
        assert_eq!(session_cookie(&h), Some("abc.def"));
        let mut only_other = HeaderMap::new();
        only_other.insert(header::COOKIE, HeaderValue::from_static("a=1;b"));
        assert_eq!(session_cookie(&only_other), None);
    }

    #[test]
    fn a_session_is_valid_until_it_expires_and_only_under_its_credentials() {
        let mut config = ConsoleConfig::token("0123456789abcdef");
        config.session_key = Some(vec![7; 32]);
        let k = keys(config.clone());
        let s = k.new_session(Timestamp(1_000)).expect("session");
        assert!(k.valid_session(&s, Timestamp(999)));
        assert!(!k.valid_session(&s, Timestamp(1_000)), "expired at its end");
        // Tampered expiry, nonce or MAC.
        let (exp, rest) = s.split_once('.').expect("parts");
        assert!(!k.valid_session(&format!("9{exp}.{rest}"), Timestamp(0)));
        let mut flipped = s.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        assert!(!k.valid_session(&String::from_utf8(flipped).expect("utf8"), Timestamp(0)));
        assert!(!k.valid_session("", Timestamp(0)));
        assert!(!k.valid_session("1.2.3.4", Timestamp(0)));
        // Another token, same key: the session is not valid any more.
        let mut other = ConsoleConfig::token("fedcba9876543210");
        other.session_key = Some(vec![7; 32]);
        assert!(!keys(other).valid_session(&s, Timestamp(0)));
    }

    #[test]
    fn loopback_hosts() {
        let host = |h: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, HeaderValue::from_str(h).expect("header"));
            loopback_host(&m)
        };
        for h in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:80",
            "127.9.9.9",
            "[::1]:3000",
        ] {
            assert!(host(h), "{h}");
        }
        for h in [
            "example.org",
            "evil.localhost.example",
            "10.0.0.1:80",
            "[::2]:1",
            "0.0.0.0",
        ] {
            assert!(!host(h), "{h}");
        }
        assert!(!loopback_host(&HeaderMap::new()));
    }

    #[test]
    fn hex_is_lowercase_two_digits_a_byte() {
        assert_eq!(hex(&[0, 15, 16, 255]), "000f10ff");
    }
}
