//! The web console over HTTP (issue 12): requests go through its axum `Router` with
//! `tower::ServiceExt::oneshot` (no socket). Authentication (401), CSRF (403), read-only
//! mode, escaping of task values, security headers, and each action changing the store:
//! the cases about the store run on memory, a SQLite file and PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use taskq_runtime::console::{self, ConsoleConfig, ConsoleError};
use taskq_runtime::store::{
    ClaimRequest, Finish, NewIteration, NewTask, Outcome, RunState, Store, TaskQuery,
};
use taskq_runtime::{Queue, TaskId, TaskState, Timestamp};
use tower::ServiceExt;

const TOKEN: &str = "console-test-token-0123456789";
const SCRIPT: &str = "<script>alert('taskq')</script>";

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Resp {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn send(app: &Router, req: Request<Body>) -> Resp {
    let resp = app.clone().oneshot(req).await.expect("the router answers");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn get(path: &str, cookie: Option<&str>) -> Request<Body> {
    let mut r = Request::get(path).header(header::HOST, "127.0.0.1:8080");
    if let Some(c) = cookie {
        r = r.header(header::COOKIE, c);
    }
    r.body(Body::empty()).expect("request")
}

fn post(path: &str, cookie: Option<&str>, form: &str) -> Request<Body> {
    let mut r = Request::post(path)
        .header(header::HOST, "127.0.0.1:8080")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        r = r.header(header::COOKIE, c);
    }
    r.body(Body::from(form.to_string())).expect("request")
}

/// The `name=value` of the response's session cookie.
fn session_cookie(r: &Resp) -> Option<String> {
    r.headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("taskq_console=") && !v.starts_with("taskq_console=;"))
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
}

/// The first CSRF token a page's forms carry.
fn csrf_of(page: &str) -> String {
    let key = r#"name="csrf" value=""#;
    let at = page
        .find(key)
        .expect("the page has a form with a CSRF token")
        + key.len();
    page[at..].split('"').next().unwrap_or("").to_string()
}

/// A console on `store`, and a person signed in to it.
struct Console {
    app: Router,
    queue: Queue,
    cookie: String,
    csrf: String,
}

impl Console {
    async fn new(store: Arc<dyn Store>, config: ConsoleConfig) -> Console {
        let queue = Queue::new(store);
        let app = console::router(queue.clone(), config).expect("router");
        let r = send(&app, post("/login", None, &format!("token={TOKEN}&next=/"))).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        let cookie = session_cookie(&r).expect("a session cookie");
        let home = send(&app, get("/tasks", Some(&cookie))).await;
        assert_eq!(home.status, StatusCode::OK, "{}", home.body);
        let csrf = csrf_of(&home.body);
        Console {
            app,
            queue,
            cookie,
            csrf,
        }
    }

    async fn signed_in(store: Arc<dyn Store>) -> Console {
        Console::new(store, ConsoleConfig::token(TOKEN)).await
    }

    async fn get(&self, path: &str) -> Resp {
        send(&self.app, get(path, Some(&self.cookie))).await
    }

    /// A POST with the session's CSRF token.
    async fn post(&self, path: &str, form: &str) -> Resp {
        let sep = if form.is_empty() { "" } else { "&" };
        let body = format!("csrf={}{sep}{form}", self.csrf);
        send(&self.app, post(path, Some(&self.cookie), &body)).await
    }

    async fn state(&self, id: TaskId) -> Option<TaskState> {
        self.queue
            .task(id)
            .await
            .expect("task()")
            .map(|d| d.info.state)
    }
}

fn new_task(queue: &str, payload: Value, run_at: Timestamp) -> NewTask {
    NewTask {
        task: "console::job".into(),
        queue: queue.into(),
        payload,
        priority: 0,
        run_at,
        unique_name: None,
        tombstone: Duration::from_secs(60),
        iteration: None,
        trace: None,
    }
}

/// Stores a task on its own queue, claims it and ends it with `outcome`, now.
async fn ended(s: &dyn Store, queue: &str, payload: Value, outcome: Outcome) -> TaskId {
    let now = Timestamp::now();
    let id = s
        .enqueue(vec![new_task(queue, payload, now)], now)
        .await
        .expect("enqueue")[0];
    let c = s
        .claim(&ClaimRequest {
            queues: vec![queue.into()],
            worker: "w-console".into(),
            limit: 1,
            lease: Duration::from_secs(30),
            now,
        })
        .await
        .expect("claim");
    assert_eq!(c.len(), 1, "the only task of `{queue}`");
    let r = s
        .finish(
            vec![Finish {
                lease: c[0].lease,
                outcome,
                started_at: now,
            }],
            "w-console",
            now,
        )
        .await
        .expect("finish");
    assert!(r.iter().all(Result::is_ok), "{r:?}");
    id
}

fn dead(why: &str) -> Outcome {
    Outcome::Dead { error: why.into() }
}

// ---- authentication, CSRF, read-only, headers (the store does not matter: memory) ----

/// Every page and action answers 401 without credentials (a page with the sign-in form
/// for a person), and with a wrong bearer token; the right one opens them.
async fn unauthenticated_requests_get_401(s: Arc<dyn Store>) {
    let id = ended(&*s, "q", json!({}), dead("spent")).await;
    let app = console::router(Queue::new(s.clone()), ConsoleConfig::token(TOKEN)).expect("router");
    for path in ["/", "/tasks", &format!("/tasks/{id}"), "/runs", "/runs/1"] {
        let r = send(&app, get(path, None)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(
            r.body.contains(r#"<form id="sign-in""#),
            "{path}: {}",
            r.body
        );
        assert!(r.body.contains(r#"id="sign-in-button""#));
        assert!(!r.body.contains("console::job"), "{path} shows no data");
        assert!(
            !r.body.contains(r#"href="/tasks""#),
            "{path}: no navigation"
        );
    }
    for path in [
        &format!("/tasks/{id}/retry"),
        &format!("/tasks/{id}/delete"),
        "/queues/purge",
    ] {
        let r = send(&app, post(path, None, "queue=q&confirm=yes")).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let forged = send(
        &app,
        post(
            "/tasks/retry",
            Some("taskq_console=1.2.3"),
            &format!("id={id}"),
        ),
    )
    .await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED, "a forged cookie");
    assert_eq!(
        s.task(id).await.expect("task").expect("kept").info.state,
        TaskState::Dead,
        "nothing acted"
    );

    let bearer = |token: &str| {
        Request::get("/tasks")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .expect("request")
    };
    let r = send(&app, bearer("console-test-token-012345678X")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = send(&app, bearer(TOKEN)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains(&format!(r#"id="task-{id}""#)), "{}", r.body);

    // A wrong token in the form: 401 again, no cookie.
    let r = send(&app, post("/login", None, "token=nope-nope-nope-nope")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(session_cookie(&r).is_none());
    assert!(r.body.contains("not valid"));
    // The assets need no sign-in (they hold no data).
    let r = send(&app, get("/assets/console.js", None)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("refresh"));
}

/// User and password: both must match; the session cookie is HttpOnly and SameSite=Strict;
/// signing out removes it.
async fn password_sign_in_and_out(s: Arc<dyn Store>) {
    let app = console::router(
        Queue::new(s),
        ConsoleConfig::password("ops", "correct horse"),
    )
    .expect("router");
    let r = send(&app, get("/login", None)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains(r#"id="user""#) && r.body.contains(r#"id="password""#));
    for bad in [
        "user=ops&password=wrong-horse",
        "user=root&password=correct+horse",
        "user=&password=",
    ] {
        let r = send(&app, post("/login", None, bad)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{bad}");
        assert!(session_cookie(&r).is_none(), "{bad}");
    }
    let r = send(
        &app,
        post("/login", None, "user=ops&password=correct+horse&next=/runs"),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/runs");
    let set = r
        .headers
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = session_cookie(&r).expect("cookie");
    let page = send(&app, get("/runs", Some(&cookie))).await;
    assert_eq!(page.status, StatusCode::OK);
    // No open redirect: `next` must be a path of the console.
    let r = send(
        &app,
        post(
            "/login",
            None,
            "user=ops&password=correct+horse&next=https://evil.example/",
        ),
    )
    .await;
    assert_eq!(r.location(), "/");
    let csrf = csrf_of(&page.body);
    let out = send(
        &app,
        post("/logout", Some(&cookie), &format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    let cleared = out
        .headers
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        cleared.starts_with("taskq_console=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
}

/// A POST with the session cookie and no CSRF token, or a wrong one, or the token of
/// another session, is refused with 403 and changes nothing.
async fn actions_need_the_csrf_token(s: Arc<dyn Store>) {
    let id = ended(&*s, "q", json!({}), dead("spent")).await;
    let c = Console::signed_in(s.clone()).await;
    let other = Console::signed_in(s.clone()).await;
    assert_ne!(c.csrf, other.csrf, "a token per session");
    let path = format!("/tasks/{id}/retry");
    for form in [
        String::new(),
        "csrf=0000".into(),
        format!("csrf={}", other.csrf),
    ] {
        let r = send(&c.app, post(&path, Some(&c.cookie), &form)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{form}");
        assert!(r.body.contains("CSRF"), "{}", r.body);
        assert_eq!(c.state(id).await, Some(TaskState::Dead), "{form}");
    }
    let r = c.post(&path, "").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(c.state(id).await, Some(TaskState::Pending));
}

/// The security headers are on pages, refusals and assets; the policy allows no inline
/// script or style and no framing.
async fn security_headers_on_every_response(s: Arc<dyn Store>) {
    let c = Console::signed_in(s).await;
    let page = c.get("/").await;
    let refused = send(&c.app, get("/tasks", None)).await;
    let asset = send(&c.app, get("/assets/console.css", None)).await;
    for (what, r) in [("page", &page), ("401", &refused), ("asset", &asset)] {
        let h = |name: &str| {
            r.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let csp = h("content-security-policy");
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{what}: {csp}"
        );
        assert!(
            csp.contains("default-src 'none'") && !csp.contains("unsafe-inline"),
            "{what}: {csp}"
        );
        assert_eq!(h("x-frame-options"), "DENY", "{what}");
        assert_eq!(h("x-content-type-options"), "nosniff", "{what}");
        assert_eq!(h("referrer-policy"), "no-referrer", "{what}");
    }
    assert_eq!(
        page.headers
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    assert!(!page.body.contains("<script>"), "no inline script");
    assert!(page
        .body
        .contains(r#"<script src="/assets/console.js" defer></script>"#));
    assert!(!page.body.contains("style="), "no inline style");
}

/// `serve` refuses to start without credentials unless bound to loopback with the
/// explicit flag; weak credentials are refused by the router itself.
async fn serve_refuses_to_run_without_credentials(_s: Arc<dyn Store>) {
    let any: std::net::SocketAddr = "0.0.0.0:0".parse().expect("addr");
    let lo: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let mut none = ConsoleConfig::token(TOKEN);
    none.auth = None;
    assert!(matches!(
        none.check_bind(lo),
        Err(ConsoleError::NoCredentials)
    ));
    let unauth = ConsoleConfig::unauthenticated_loopback();
    assert!(matches!(
        unauth.check_bind(any),
        Err(ConsoleError::NotLoopback(_))
    ));
    assert!(unauth.check_bind(lo).is_ok());
    assert!("[::1]:0"
        .parse()
        .map(|a| unauth.check_bind(a).is_ok())
        .unwrap_or(false));
    assert!(ConsoleConfig::token(TOKEN).check_bind(any).is_ok());
    let queue = Queue::open("memory://").await.expect("queue");
    let r = console::serve(queue.clone(), none, lo).await;
    assert!(matches!(r, Err(ConsoleError::NoCredentials)), "{r:?}");
    let r = console::serve(
        queue.clone(),
        ConsoleConfig::unauthenticated_loopback(),
        any,
    )
    .await;
    assert!(matches!(r, Err(ConsoleError::NotLoopback(_))), "{r:?}");
    let mut secret = ConsoleConfig::password("ops", "correct horse");
    secret.session_key = Some(b"0123456789abcdef0123456789abcdef".to_vec());
    let shown = format!("{secret:?}");
    assert!(
        !shown.contains("horse") && !shown.contains("0123456789abcdef"),
        "{shown}"
    );
    assert!(!format!("{:?}", ConsoleConfig::token(TOKEN)).contains(TOKEN));
    for weak in [
        ConsoleConfig::token("short"),
        ConsoleConfig::password("", "long enough"),
        ConsoleConfig::password("ops", "short"),
    ] {
        assert!(matches!(
            console::router(queue.clone(), weak),
            Err(ConsoleError::WeakCredentials(_))
        ));
    }
}

/// `serve_on` serves the console on a bound socket (unauthenticated on loopback here)
/// until its shutdown future completes.
async fn serve_on_a_socket_until_shutdown(s: Arc<dyn Store>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(console::serve_on(
        Queue::new(s),
        ConsoleConfig::unauthenticated_loopback(),
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.write_all(b"GET /tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-security-policy:"),
        "{answer}"
    );
    assert!(answer.contains(r#"id="filters""#), "{answer}");
    let _ = stop.send(());
    let ended = tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("the server stops on shutdown")
        .expect("no panic");
    assert!(ended.is_ok(), "{ended:?}");
}

/// Without credentials (the explicit flag), the console answers only for a loopback host
/// (DNS rebinding), and its forms still need their CSRF token.
async fn unauthenticated_mode_is_loopback_only_and_keeps_csrf(s: Arc<dyn Store>) {
    let id = ended(&*s, "q", json!({}), dead("spent")).await;
    let queue = Queue::new(s);
    let app =
        console::router(queue.clone(), ConsoleConfig::unauthenticated_loopback()).expect("router");
    let rebound = Request::get("/tasks")
        .header(header::HOST, "attacker.example:8080")
        .body(Body::empty())
        .expect("request");
    assert_eq!(send(&app, rebound).await.status, StatusCode::FORBIDDEN);
    // A peer elsewhere (where the server gives its address), whatever `Host` it sends.
    let mut remote = get("/tasks", None);
    remote
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            [192, 0, 2, 7],
            40_000,
        ))));
    assert_eq!(send(&app, remote).await.status, StatusCode::FORBIDDEN);
    let mut local = get("/tasks", None);
    local
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            40_000,
        ))));
    assert_eq!(send(&app, local).await.status, StatusCode::OK);
    let page = send(&app, get("/tasks", None)).await;
    assert_eq!(page.status, StatusCode::OK);
    let cookie = session_cookie(&page).expect("a session for CSRF");
    let path = format!("/tasks/{id}/retry");
    let r = send(&app, post(&path, None, "")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "no cookie, no token");
    let r = send(&app, post(&path, Some(&cookie), "csrf=nope")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = send(
        &app,
        post(
            &path,
            Some(&cookie),
            &format!("csrf={}", csrf_of(&page.body)),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let state = queue.task(id).await.expect("task").map(|d| d.info.state);
    assert_eq!(state, Some(TaskState::Pending));
}

/// Nested in an application, links, forms and the cookie follow the mount path.
async fn nested_router_links_under_its_path(s: Arc<dyn Store>) {
    let id = ended(&*s, "q", json!({}), dead("spent")).await;
    let queue = Queue::new(s);
    let admin = console::router(queue.clone(), ConsoleConfig::token(TOKEN)).expect("router");
    let app = Router::new().nest("/admin", admin);
    let r = send(&app, get("/admin/tasks", None)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body.contains(r#"action="/admin/login""#), "{}", r.body);
    let r = send(
        &app,
        post(
            "/admin/login",
            None,
            &format!("token={TOKEN}&next=/admin/tasks"),
        ),
    )
    .await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/admin/tasks")
    );
    let set = r
        .headers
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(set.contains("Path=/admin;"), "{set}");
    let cookie = session_cookie(&r).expect("cookie");
    let page = send(&app, get("/admin/tasks", Some(&cookie))).await;
    assert!(
        page.body.contains(&format!(r#"href="/admin/tasks/{id}""#)),
        "{}",
        page.body
    );
    assert!(page.body.contains(r#"href="/admin/assets/console.css""#));
    let home = send(&app, get("/admin", Some(&cookie))).await;
    assert_eq!(home.status, StatusCode::OK, "{}", home.body);
    let r = send(
        &app,
        post(
            &format!("/admin/tasks/{id}/retry"),
            Some(&cookie),
            &format!("csrf={}&next=/admin/tasks", csrf_of(&page.body)),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(
        r.location().starts_with("/admin/tasks?"),
        "{}",
        r.location()
    );
}

/// No request can start a task: there is no route for it, and nothing is stored.
async fn no_request_starts_a_task(s: Arc<dyn Store>) {
    let c = Console::signed_in(s.clone()).await;
    for path in [
        "/tasks",
        "/tasks/new",
        "/tasks/start",
        "/start",
        "/queues/q/tasks",
    ] {
        let r = c
            .post(path, "task=console::job&payload=%7B%7D&queue=q")
            .await;
        assert!(
            r.status == StatusCode::NOT_FOUND || r.status == StatusCode::METHOD_NOT_ALLOWED,
            "{path}: {}",
            r.status
        );
    }
    let all = s.list_tasks(&TaskQuery::default()).await.expect("list");
    assert!(all.is_empty(), "{all:?}");
}

// ---- on every store -------------------------------------------------------------------

/// An argument, an error, a task name and a queue name holding `<script>` are shown
/// escaped, on the listing and the task's page.
async fn values_from_tasks_are_escaped(s: Arc<dyn Store>) {
    let id = ended(&*s, "q<b>", json!({ "note": SCRIPT, "n": 1 }), dead(SCRIPT)).await;
    let c = Console::signed_in(s).await;
    for path in [
        format!("/tasks/{id}"),
        "/tasks".into(),
        "/".into(),
        "/tasks?queue=q%3Cb%3E".into(),
    ] {
        let r = c.get(&path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert!(
            !r.body.contains("<script>alert"),
            "{path}: raw script in {}",
            r.body
        );
        assert!(!r.body.contains("q<b>"), "{path}: raw queue name");
    }
    let page = c.get(&format!("/tasks/{id}")).await.body;
    assert!(
        page.contains("&#60;script&#62;") || page.contains("&lt;script&gt;"),
        "{page}"
    );
    assert!(page.contains(r#"id="task-args""#) && page.contains(r#"id="attempts""#));
    assert!(
        page.contains(r#"id="task-state" data-state="dead""#),
        "{page}"
    );
}

/// A task unique by its arguments shows its unique key on its page; a named one its name.
async fn task_page_shows_the_unique_key(s: Arc<dyn Store>) {
    let payload = json!({ "to": "ada" });
    let key = taskq_runtime::unique::key("t", "q", &payload, &taskq_runtime::UniqueArgs::All)
        .expect("a key");
    let mut keyed = new_task("q", payload, Timestamp(0));
    keyed.unique_name = Some(key.clone());
    let mut named = new_task("q", json!({}), Timestamp(0));
    named.unique_name = Some("by-hand".into());
    let ids = s
        .enqueue(vec![keyed, named], Timestamp(0))
        .await
        .expect("enqueue");
    let c = Console::signed_in(s).await;
    let page = c.get(&format!("/tasks/{}", ids[0])).await.body;
    assert!(
        page.contains("<dt>Unique key</dt>")
            && page.contains(&key)
            && page.contains(r#"id="unique-key""#),
        "{page}"
    );
    let page = c.get(&format!("/tasks/{}", ids[1])).await.body;
    assert!(
        page.contains("<dt>Unique name</dt>") && !page.contains("Unique key"),
        "{page}"
    );
}

/// Each action changes the store: run now, retry (one, ticked, all matching), delete
/// (after its confirmation), pause, resume, purge (after its confirmation), cancel a run.
async fn each_action_changes_the_store(s: Arc<dyn Store>) {
    let c = Console::signed_in(s.clone()).await;
    let later = Timestamp::now().add(Duration::from_secs(3600));
    let ids = s
        .enqueue(
            vec![
                new_task("later", json!({}), later),
                new_task("later", json!({}), later),
            ],
            Timestamp::now(),
        )
        .await
        .expect("enqueue");

    // Run now.
    let r = c.post(&format!("/tasks/{}/run-now", ids[0]), "").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(
        r.location()
            .starts_with(&format!("/tasks/{}?did=run-now", ids[0])),
        "{}",
        r.location()
    );
    let t = c.queue.task(ids[0]).await.expect("task").expect("there");
    assert!(t.info.run_at < later, "due now: {t:?}");
    assert!(c
        .get(r.location())
        .await
        .body
        .contains("The task is due now."));

    // Retry one.
    let one = ended(&*s, "r1", json!({}), dead("spent")).await;
    assert_eq!(
        c.post(&format!("/tasks/{one}/retry"), "").await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(c.state(one).await, Some(TaskState::Pending));

    // Retry the ticked ones (a task not dead counts as skipped).
    let a = ended(&*s, "r2", json!({}), dead("spent")).await;
    let b = ended(
        &*s,
        "r3",
        json!({}),
        Outcome::Failed {
            error: "fatal".into(),
        },
    )
    .await;
    let r = c
        .post(
            "/tasks/retry",
            &format!("id={a}&id={b}&id={}&next=/tasks", ids[1]),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/tasks?did=retry&n=2&skipped=1");
    assert_eq!(
        (c.state(a).await, c.state(b).await),
        (Some(TaskState::Pending), Some(TaskState::Pending))
    );

    // Retry all matching a filter: first a confirmation, then only the queue's dead tasks.
    let m1 = ended(&*s, "m", json!({}), dead("spent")).await;
    let m2 = ended(&*s, "m", json!({}), dead("spent")).await;
    let other = ended(&*s, "m-other", json!({}), dead("spent")).await;
    let r = c.post("/tasks/retry-matching", "queue=m&state=dead").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains(r#"id="confirm-button""#), "{}", r.body);
    assert_eq!(
        c.state(m1).await,
        Some(TaskState::Dead),
        "not before the confirmation"
    );
    let r = c
        .post("/tasks/retry-matching", "queue=m&state=dead&confirm=yes")
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location(), "/tasks?queue=m&state=dead&did=retry&n=2");
    assert_eq!(
        (c.state(m1).await, c.state(m2).await),
        (Some(TaskState::Pending), Some(TaskState::Pending))
    );
    assert_eq!(c.state(other).await, Some(TaskState::Dead));

    // Delete: a confirmation page, then gone.
    let r = c.post(&format!("/tasks/{other}/delete"), "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains(&format!("Delete task {other}?")));
    assert_eq!(c.state(other).await, Some(TaskState::Dead));
    let r = c
        .post(
            &format!("/tasks/{other}/delete"),
            &format!("confirm=yes&next=/tasks/{other}"),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        r.location(),
        "/tasks?did=delete",
        "never back to the deleted task"
    );
    assert_eq!(c.state(other).await, None);

    // Pause, resume.
    let paused = |name: &'static str| {
        let q = c.queue.clone();
        async move {
            q.queues()
                .await
                .expect("queues")
                .into_iter()
                .find(|i| i.name == name)
                .map(|i| i.paused)
        }
    };
    assert_eq!(
        c.post("/queues/pause", "queue=later").await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(paused("later").await, Some(true));
    assert!(c.get("/").await.body.contains("queue-paused"));
    assert_eq!(
        c.post("/queues/resume", "queue=later").await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(paused("later").await, Some(false));
    // A queue the store does not know is not created by a crafted form: 404, no queue.
    for path in ["/queues/pause", "/queues/resume", "/queues/purge"] {
        let r = c.post(path, "queue=no-such-queue&confirm=yes").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.body);
        assert!(r.body.contains("No queue named"), "{path}: {}", r.body);
        assert_eq!(
            paused("no-such-queue").await,
            None,
            "{path} created the queue"
        );
    }

    // Purge: a confirmation page, then the pending tasks are gone.
    let r = c.post("/queues/purge", "queue=later").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Purge queue `later`?"));
    assert!(c.state(ids[1]).await.is_some());
    let r = c.post("/queues/purge", "queue=later&confirm=yes").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/?did=purge&n=2");
    assert_eq!((c.state(ids[0]).await, c.state(ids[1]).await), (None, None));

    // Cancel a run: a confirmation page, then cancelled.
    let mut first = new_task(
        "runs",
        json!({ "filter": {}, "args": {} }),
        Timestamp::now(),
    );
    first.iteration = Some(NewIteration { filter: json!({}) });
    let run = s.enqueue(vec![first], Timestamp::now()).await.expect("run")[0];
    let page = c.get("/runs").await;
    assert!(
        page.body.contains(&format!(r#"id="cancel-{run}""#)),
        "{}",
        page.body
    );
    let r = c.post(&format!("/runs/{run}/cancel"), "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        c.queue.iteration(run).await.expect("run").state,
        RunState::Running
    );
    let r = c.post(&format!("/runs/{run}/cancel"), "confirm=yes").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        c.queue.iteration(run).await.expect("run").state,
        RunState::Cancelled
    );

    // A refusal of the store is a page, not a crash: run now of a finished task.
    let r = c.post(&format!("/tasks/{one}/delete"), "confirm=yes").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = c.post(&format!("/tasks/{one}/retry"), "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

/// Read-only mode: no action on the pages, and every action refused with 403.
async fn read_only_refuses_actions(s: Arc<dyn Store>) {
    let id = ended(&*s, "q", json!({}), dead("spent")).await;
    let mut config = ConsoleConfig::token(TOKEN);
    config.read_only = true;
    let c = Console::new(s, config).await;
    let list = c.get("/tasks").await.body;
    assert!(list.contains(&format!(r#"id="task-{id}""#)));
    assert!(
        !list.contains("retry-button") && !list.contains("retry-matching"),
        "{list}"
    );
    let page = c.get(&format!("/tasks/{id}")).await.body;
    assert!(!page.contains("delete-button") && !page.contains(r#"id="retry-button""#));
    for (path, form) in [
        (format!("/tasks/{id}/retry"), ""),
        (format!("/tasks/{id}/delete"), "confirm=yes"),
        ("/tasks/retry-matching".into(), "confirm=yes"),
        ("/queues/pause".into(), "queue=q"),
        ("/queues/purge".into(), "queue=q&confirm=yes"),
    ] {
        let r = c.post(&path, form).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
        assert!(r.body.contains("read-only"), "{path}");
    }
    assert_eq!(c.state(id).await, Some(TaskState::Dead));
    let queues = c.queue.queues().await.expect("queues");
    assert!(
        !queues.is_empty() && queues.iter().all(|q| !q.paused),
        "{queues:?}"
    );
}

/// The queues page counts by state and charts the tasks done and failed in the last
/// hour (from the store's finish times); the tasks page filters and pages by key.
async fn queues_chart_and_paged_listing(s: Arc<dyn Store>) {
    for _ in 0..3 {
        ended(&*s, "done", json!({}), Outcome::Done).await;
    }
    ended(&*s, "bad", json!({}), dead("spent")).await;
    ended(
        &*s,
        "bad",
        json!({}),
        Outcome::Failed {
            error: "fatal".into(),
        },
    )
    .await;
    let c = Console::signed_in(s).await;
    let home = c.get("/").await.body;
    assert!(home.contains(r#"<svg id="throughput-chart""#), "{home}");
    assert_eq!(home.matches(r#"<g class="minute""#).count(), 60);
    assert!(
        home.contains(r#"<strong id="done-hour">3</strong>"#),
        "{home}"
    );
    assert!(
        home.contains(r#"<strong id="failed-hour">2</strong>"#),
        "{home}"
    );
    assert!(home.contains(r#"data-queue="done""#) && home.contains(r#"data-queue="bad""#));

    let page = c.get("/tasks?state=done&limit=2").await.body;
    assert_eq!(
        page.matches(r#"class="task-row state-done""#).count(),
        2,
        "{page}"
    );
    let key = r#"id="older-page" href=""#;
    let at = page.find(key).expect("an older page link") + key.len();
    let link = page[at..]
        .split('"')
        .next()
        .unwrap_or("")
        .replace("&#38;", "&")
        .replace("&amp;", "&");
    assert!(link.starts_with("/tasks?state=done&before="), "{link}");
    let older = c.get(&link).await.body;
    assert_eq!(
        older.matches(r#"class="task-row state-done""#).count(),
        1,
        "{link}: {older}"
    );
    assert!(older.contains(r#"id="newest-page""#));
    let bad = c.get("/tasks?queue=bad").await.body;
    assert_eq!(bad.matches(r#"class="task-row"#).count(), 2);
    assert_eq!(
        bad.matches("retry-button").count(),
        2,
        "dead and failed rows have a retry button"
    );
    // A filter that does not parse answers 400 and lists nothing (an unfiltered list
    // under the banner would read as the filtered one).
    let wrong = c.get("/tasks?state=zombie").await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST, "{}", wrong.body);
    assert!(wrong.body.contains("unknown task state"), "{}", wrong.body);
    assert_eq!(
        wrong.body.matches(r#"class="task-row"#).count(),
        0,
        "{}",
        wrong.body
    );
}

/// Issue 13: the task page's Cancel button, for pending and running tasks (a POST with the
/// CSRF token, after a confirmation): a pending task ends cancelled; a running one shows
/// "cancel requested" until its worker stops it. Hidden, and refused, in read-only mode;
/// absent on a finished task.
async fn cancel_button_cancels_pending_and_running_tasks(s: Arc<dyn Store>) {
    let c = Console::signed_in(s.clone()).await;
    let now = Timestamp::now();
    let later = now.add(Duration::from_secs(3600));
    let pending = s
        .enqueue(vec![new_task("cancel-later", json!({}), later)], now)
        .await
        .expect("enqueue")[0];
    let page = c.get(&format!("/tasks/{pending}")).await.body;
    assert!(page.contains(r#"id="cancel-button""#), "{page}");
    let r = c.post(&format!("/tasks/{pending}/cancel"), "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body.contains(&format!("Cancel task {pending}?")),
        "{}",
        r.body
    );
    assert_eq!(
        c.state(pending).await,
        Some(TaskState::Pending),
        "not before the confirmation"
    );
    let r = c
        .post(
            &format!("/tasks/{pending}/cancel"),
            &format!("confirm=yes&next=/tasks/{pending}"),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location(), format!("/tasks/{pending}?did=cancel-task"));
    assert_eq!(c.state(pending).await, Some(TaskState::Cancelled));
    let page = c.get(r.location()).await.body;
    assert!(page.contains("The task is cancelled."), "{page}");
    assert!(!page.contains(r#"id="cancel-button""#), "{page}");

    // Running: the cancel is requested, and shown.
    let running = s
        .enqueue(vec![new_task("cancel-running", json!({}), now)], now)
        .await
        .expect("enqueue")[0];
    let claimed = s
        .claim(&ClaimRequest {
            queues: vec!["cancel-running".into()],
            worker: "w".into(),
            limit: 1,
            lease: Duration::from_secs(600),
            now,
        })
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    let page = c.get(&format!("/tasks/{running}")).await.body;
    assert!(page.contains(r#"id="cancel-button""#), "{page}");
    assert!(!page.contains(r#"id="cancel-requested""#), "{page}");
    let r = c
        .post(
            &format!("/tasks/{running}/cancel"),
            &format!("confirm=yes&next=/tasks/{running}"),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(
        r.location(),
        format!("/tasks/{running}?did=cancel-requested")
    );
    assert_eq!(c.state(running).await, Some(TaskState::Running));
    let page = c.get(r.location()).await.body;
    assert!(page.contains(r#"id="cancel-requested""#), "{page}");
    assert!(page.contains("The cancel is requested"), "{page}");

    // A finished task: no button, and the action is refused.
    let r = c
        .post(&format!("/tasks/{pending}/cancel"), "confirm=yes")
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);

    // Read-only: no button, the action refused.
    let mut config = ConsoleConfig::token(TOKEN);
    config.read_only = true;
    let ro = Console::new(s.clone(), config).await;
    let page = ro.get(&format!("/tasks/{running}")).await.body;
    assert!(!page.contains(r#"id="cancel-button""#), "{page}");
    let r = ro
        .post(&format!("/tasks/{running}/cancel"), "confirm=yes")
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

/// The schedules page lists each schedule with its next run, escaped; run now, pause and
/// resume are POST forms with the CSRF token, hidden and refused in read-only mode.
async fn schedules_page_and_actions(s: Arc<dyn Store>) {
    let c = Console::signed_in(s.clone()).await;
    let name = format!("nightly {SCRIPT}");
    taskq_runtime::Schedule::new(name.clone(), "0 3 * * *", "console::report")
        .timezone("Europe/Paris")
        .args(json!({ "team": "sales" }))
        .register(&c.queue)
        .await
        .expect("register");
    let page = c.get("/schedules").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains(r#"href="/schedules""#),
        "linked from the nav"
    );
    assert!(!page.body.contains("<script>alert"), "{}", page.body);
    assert_eq!(page.body.matches(r#"class="schedule-row""#).count(), 1);
    assert!(page.body.contains("Europe/Paris") && page.body.contains("schedule-run-button"));
    let next = c.queue.schedules().await.expect("schedules")[0].next_tick;
    let shown = next.to_string().replacen('T', " ", 1);
    assert!(
        page.body.contains(&shown[..19]),
        "next run {shown}: {}",
        page.body
    );
    let enc: String = form_urlencoded_name(&name);

    // Without the CSRF token: refused, nothing started.
    let r = send(
        &c.app,
        post(
            "/schedules/run-now",
            Some(&c.cookie),
            &format!("schedule={enc}"),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(s
        .list_tasks(&TaskQuery::default())
        .await
        .expect("list")
        .is_empty());

    let r = c
        .post(
            "/schedules/run-now",
            &format!("schedule={enc}&next=/schedules"),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location(), "/schedules?did=schedule-run");
    let started = s
        .list_tasks(&TaskQuery {
            with_payload: true,
            ..TaskQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].payload, json!({ "team": "sales" }));
    assert_eq!(
        c.queue.schedules().await.expect("schedules")[0].next_tick,
        next,
        "run now moves nothing"
    );

    let r = c.post("/schedules/pause", &format!("schedule={enc}")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(c.queue.schedules().await.expect("schedules")[0].paused);
    let page = c.get("/schedules?did=schedule-pause").await.body;
    assert!(page.contains("schedule-resume-button") && page.contains("The schedule is paused."));
    let r = c
        .post("/schedules/resume", &format!("schedule={enc}"))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(!c.queue.schedules().await.expect("schedules")[0].paused);
    let r = c.post("/schedules/pause", "schedule=no-such").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let mut config = ConsoleConfig::token(TOKEN);
    config.read_only = true;
    let ro = Console::new(s.clone(), config).await;
    let page = ro.get("/schedules").await.body;
    assert!(
        page.contains(r#"class="schedule-row""#) && !page.contains("schedule-run-button"),
        "{page}"
    );
    let r = ro
        .post("/schedules/run-now", &format!("schedule={enc}"))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        s.list_tasks(&TaskQuery::default())
            .await
            .expect("list")
            .len(),
        1
    );
}

/// `name` percent-encoded for a form body.
fn form_urlencoded_name(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

macro_rules! console_cases {
    ($store:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                super::$case($store().await).await;
            }
        )*
    };
}

mod memory {
    console_cases!(taskq_tests::memory_store;
        unauthenticated_requests_get_401, password_sign_in_and_out, actions_need_the_csrf_token,
        security_headers_on_every_response, serve_refuses_to_run_without_credentials,
        unauthenticated_mode_is_loopback_only_and_keeps_csrf, nested_router_links_under_its_path,
        serve_on_a_socket_until_shutdown,
        no_request_starts_a_task, values_from_tasks_are_escaped, each_action_changes_the_store,
        read_only_refuses_actions, queues_chart_and_paged_listing, schedules_page_and_actions,
        cancel_button_cancels_pending_and_running_tasks,
        task_page_shows_the_unique_key,
    );
}

mod sqlite {
    console_cases!(taskq_tests::sqlite_store;
        actions_need_the_csrf_token, values_from_tasks_are_escaped, each_action_changes_the_store,
        read_only_refuses_actions, queues_chart_and_paged_listing, schedules_page_and_actions,
        cancel_button_cancels_pending_and_running_tasks,
    );
}

mod postgres {
    console_cases!(taskq_tests::postgres_store;
        values_from_tasks_are_escaped, each_action_changes_the_store,
        queues_chart_and_paged_listing, cancel_button_cancels_pending_and_running_tasks,
    );
}

/// `GET /metrics` serves the Prometheus exposition of the recorder the console was given
/// (the queue depth refreshed from the store), behind the same authentication as the
/// pages; without a recorder the route answers 404. The only test of this binary that
/// installs the process's recorder.
#[tokio::test]
async fn metrics_route_needs_credentials_and_serves_the_exposition() {
    let s = taskq_tests::memory_store().await;
    let queue = Queue::new(s.clone());
    queue.pause("scraped").await.expect("pause");
    let bare = console::router(queue.clone(), ConsoleConfig::token(TOKEN)).expect("router");
    let bearer = || {
        Request::get("/metrics")
            .header(header::HOST, "127.0.0.1:8080")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .expect("request")
    };
    assert_eq!(send(&bare, bearer()).await.status, StatusCode::NOT_FOUND);

    let mut config = ConsoleConfig::token(TOKEN);
    config.metrics = Some(taskq_runtime::metrics::install_prometheus().expect("recorder"));
    let app = console::router(queue, config).expect("router");
    assert_eq!(
        send(&app, get("/metrics", None)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let r = send(&app, bearer()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        r.body
            .lines()
            .any(|l| l == "taskq_queue_depth{queue=\"scraped\",state=\"pending\"} 0"),
        "{}",
        r.body
    );
    assert!(r
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain")));
}
