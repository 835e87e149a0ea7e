//! A server run as a child process (`taskq admin`, `melange --serve`), seen from a test:
//! wait until it listens, ask it one plain HTTP/1.1 GET, stop it with SIGTERM.

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// Waits until `addr` accepts a connection; fails the test if the child exits first or
/// nothing listens within `limit`.
pub fn wait_listening(child: &mut Child, addr: &str, limit: Duration) {
    let start = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            panic!("the server exited before listening on {addr}: {status}");
        }
        assert!(start.elapsed() < limit, "nothing listened on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One `GET path` on `addr` with these extra headers (`("Cookie", "a=b")`, ...), the
/// connection closed after it: the status code and the whole answer (head and body).
pub fn http_get(addr: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the server");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read the answer");
    let code = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    (code, answer)
}

/// Sends SIGTERM to the child and waits for it to exit; fails the test if it has not
/// within `limit` (then it is killed).
pub fn stop_with_sigterm(child: &mut Child, limit: Duration) -> ExitStatus {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -TERM failed");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("the server did not stop within {limit:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
