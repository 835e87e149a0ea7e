//! A TCP proxy the test controls, for network faults between a worker and PostgreSQL.
//!
//! [`Proxy::start`] listens on a free loopback port and forwards every connection to a
//! target address. The test switches it:
//! - [`Proxy::half_open`]: stops forwarding in both directions without closing anything,
//!   as when a network path dies silently (a failover, a dropped NAT entry): the peers'
//!   sockets stay open, what they send is neither delivered nor refused, new connections
//!   are accepted but not carried through. Bytes sent meanwhile wait in the proxy (and the
//!   kernels' buffers) and are delivered by [`Proxy::resume`].
//! - [`Proxy::resume`]: forwards again, the held bytes first.
//! - [`Proxy::cut`]: closes every connection open now (both sides see the connection
//!   end) and forwards new ones: the path came back but the old connections are gone.
//!
//! What a user-space proxy cannot do: make the peer's *kernel* stop answering. While
//! half-open, the proxy's kernel still acknowledges TCP segments and keepalive probes, so
//! TCP keepalive and `TCP_USER_TIMEOUT` on the client do not fire through it; what the
//! client sees is calls that never answer (which is what the worker's bounded store calls
//! are for).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Whether the proxy carries bytes, and which connections are still allowed to live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Control {
    /// `false` while half-open.
    forwarding: bool,
    /// Bumped by every cut: a connection opened under an older generation is closed.
    generation: u64,
}

/// A running proxy; dropping it stops listening and closes every connection.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    control: watch::Sender<Control>,
    open: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on `127.0.0.1` (a free port) and forwards each connection to `target`,
    /// forwarding from the start. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// When no loopback port can be bound.
    pub async fn start(target: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (control, _) = watch::channel(Control {
            forwarding: true,
            generation: 0,
        });
        let open = Arc::new(AtomicUsize::new(0));
        let accept = tokio::spawn({
            let control = control.clone();
            let open = open.clone();
            async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        // Out of file descriptors, say: try again shortly.
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    };
                    let _ = client.set_nodelay(true);
                    let rx = control.subscribe();
                    let open = open.clone();
                    tokio::spawn(async move {
                        open.fetch_add(1, Ordering::SeqCst);
                        carry(client, target, rx).await;
                        open.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            }
        });
        Ok(Proxy {
            addr,
            control,
            open,
            accept,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `url` (a `postgres://` URL naming one `host:port`) with its host and port replaced
    /// by the proxy's, so a store opened on it goes through the proxy.
    ///
    /// # Panics
    /// When `url` has no `scheme://` prefix.
    pub fn url_through(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let user = authority
            .rsplit_once('@')
            .map(|(u, _)| format!("{u}@"))
            .unwrap_or_default();
        format!("{scheme}://{user}{}{tail}", self.addr)
    }

    /// Stops forwarding in both directions, keeping every socket open.
    pub fn half_open(&self) {
        self.control.send_modify(|c| c.forwarding = false);
    }

    /// Forwards again, delivering what was held first.
    pub fn resume(&self) {
        self.control.send_modify(|c| c.forwarding = true);
    }

    /// Closes every connection open now and forwards new ones.
    pub fn cut(&self) {
        self.control.send_modify(|c| {
            c.forwarding = true;
            c.generation += 1;
        });
    }

    /// How many client connections are open through the proxy now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// The address of the `host:port` a `postgres://` URL names (the first, if several).
///
/// # Panics
/// When the URL does not parse or names no TCP host.
pub fn target_of(url: &str) -> SocketAddr {
    use std::net::ToSocketAddrs;
    let (base, _) = crate::pg_models::split_schema(url);
    let config: taskq_runtime::tokio_postgres::Config = base.parse().expect("a postgres URL");
    let host = match config.get_hosts().first() {
        Some(taskq_runtime::tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        other => panic!("the URL names no TCP host: {other:?}"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    (host.as_str(), port)
        .to_socket_addrs()
        .expect("resolve the host")
        .next()
        .expect("an address")
}

/// Carries one connection until either side closes it or a cut closes it.
async fn carry(client: TcpStream, target: SocketAddr, mut rx: watch::Receiver<Control>) {
    let generation = rx.borrow().generation;
    // A connection accepted while half-open is not carried through until forwarding resumes.
    if !forwarding(&mut rx, generation).await {
        return;
    }
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    // When either direction ends, both sockets close (dropped here).
    tokio::select! {
        _ = pump(cr, sw, rx.clone(), generation) => {}
        _ = pump(sr, cw, rx, generation) => {}
    }
}

/// Waits until bytes may flow for a connection of `generation`: `false` once it is cut.
async fn forwarding(rx: &mut watch::Receiver<Control>, generation: u64) -> bool {
    loop {
        let c = *rx.borrow_and_update();
        if c.generation != generation {
            return false;
        }
        if c.forwarding {
            return true;
        }
        if rx.changed().await.is_err() {
            return false;
        }
    }
}

/// Completes when the proxy stops forwarding for `generation` (half-open or cut).
async fn stopped(mut rx: watch::Receiver<Control>, generation: u64) {
    loop {
        {
            let c = *rx.borrow_and_update();
            if c.generation != generation || !c.forwarding {
                return;
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Completes when connections of `generation` are cut.
async fn cut(mut rx: watch::Receiver<Control>, generation: u64) {
    loop {
        if rx.borrow_and_update().generation != generation {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Copies one direction, reading only while forwarding (a read cut short by half-open is
/// retried after; `TcpStream` reads are cancel-safe), and holding bytes already read until
/// forwarding resumes.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut rx: watch::Receiver<Control>,
    generation: u64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if !forwarding(&mut rx, generation).await {
            return;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = stopped(rx.clone(), generation) => continue,
        };
        if !forwarding(&mut rx, generation).await {
            return;
        }
        tokio::select! {
            r = to.write_all(&buf[..n]) => if r.is_err() { return },
            _ = cut(rx.clone(), generation) => return,
        }
    }
}
