//! CSRF tokens: each session's token is an HMAC of its cookie under the console's key, so
//! nothing is stored and a token is worthless with another session. Every form of the
//! console carries it in a hidden `csrf` field; [`super::auth::gate`] checks it on every
//! POST made with a session cookie, in constant time, before any handler runs.

use subtle::ConstantTimeEq;

use super::auth::{hex, Keys};

/// The CSRF token of the session whose cookie value is `session`.
pub(crate) fn token(keys: &Keys, session: &str) -> String {
    hex(&keys.mac(&[b"taskq-console-csrf", session.as_bytes()]))
}

/// Whether a urlencoded form body holds `csrf=<expected>` (compared in constant time; a
/// body repeating `csrf` must match with every one).
pub(crate) fn form_has(body: &[u8], expected: &str) -> bool {
    let mut found = false;
    for (k, v) in form_urlencoded::parse(body) {
        if k == "csrf" {
            let same: bool = v.as_bytes().ct_eq(expected.as_bytes()).into();
            if !same {
                return false;
            }
            found = true;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_passes_only_with_its_sessions_token() {
        let mut config = super::super::ConsoleConfig::token("0123456789abcdef");
        config.session_key = Some(vec![1; 32]);
        let keys = Keys::new(&config).expect("keys");
        let t = token(&keys, "a-session");
        assert_ne!(t, token(&keys, "another-session"));
        assert!(form_has(format!("id=1&csrf={t}").as_bytes(), &t));
        assert!(!form_has(b"id=1", &t), "missing");
        assert!(!form_has(b"id=1&csrf=", &t), "empty");
        assert!(!form_has(
            format!("csrf={}", token(&keys, "x")).as_bytes(),
            &t
        ));
        assert!(!form_has(format!("csrf={t}&csrf=nope").as_bytes(), &t));
    }
}
