//! `melange --serve ADDR`: the starter page and, beside it at `/admin`, the taskq web
//! console, both behind the token the demo prints (here given as `MELANGE_TOKEN`).

use std::process::{Command, Stdio};
use std::time::Duration;

use taskq_tests::served::{http_get, stop_with_sigterm, wait_listening};

#[test]
fn serve_mounts_the_console_beside_the_starter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let addr = format!("127.0.0.1:{port}");
    let token = "melange-test-token-0123456789";
    let store = format!("sqlite://{}", dir.path().join("tasks.db").display());
    let app_db = dir.path().join("app.db").display().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_melange"))
        .args(["--serve", &addr, "--store", &store, "--app-db", &app_db])
        .args(["--students", "200"])
        .env("MELANGE_TOKEN", token)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start melange");
    wait_listening(&mut child, &addr, Duration::from_secs(120));
    let cookie = format!("melange_session={token}");
    let (code, page) = http_get(&addr, "/", &[("Cookie", &cookie)]);
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains("href=\"/admin\""),
        "the starter links to the console: {page}"
    );
    let (code, _) = http_get(&addr, "/admin", &[]);
    assert_eq!(code, 401, "the console without the token");
    let bearer = format!("Bearer {token}");
    let (code, console) = http_get(&addr, "/admin", &[("Authorization", &bearer)]);
    assert_eq!(code, 200, "{console}");
    assert!(
        console.contains("id=\"queues\"") || console.contains("id=\"no-queues\""),
        "{console}"
    );
    stop_with_sigterm(&mut child, Duration::from_secs(60));
}
