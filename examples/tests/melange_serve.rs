//! `melange --serve ADDR`: the starter page and, beside it at `/admin`, the taskq web
//! console, both behind the token the demo prints (here given as `MELANGE_TOKEN`).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn http_get(addr: &str, path: &str, cookie: Option<&str>, bearer: Option<&str>) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut extra = String::new();
    if let Some(c) = cookie {
        extra += &format!("Cookie: {c}\r\n");
    }
    if let Some(t) = bearer {
        extra += &format!("Authorization: Bearer {t}\r\n");
    }
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read");
    let code = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    (code, answer)
}

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
    let start = Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        if let Some(status) = child.try_wait().expect("wait") {
            panic!("melange exited early: {status}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "melange never listened on {addr}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let cookie = format!("melange_session={token}");
    let (code, page) = http_get(&addr, "/", Some(&cookie), None);
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains("href=\"/admin\""),
        "the starter links to the console: {page}"
    );
    let (code, _) = http_get(&addr, "/admin", None, None);
    assert_eq!(code, 401, "the console without the token");
    let (code, console) = http_get(&addr, "/admin", None, Some(token));
    assert_eq!(code, 200, "{console}");
    assert!(
        console.contains("id=\"queues\"") || console.contains("id=\"no-queues\""),
        "{console}"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("melange did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
