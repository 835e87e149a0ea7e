//! A private PostgreSQL cluster that a test initialises, stops, starts and removes itself,
//! for tests that take the server down (a restart mid-run): they must never touch the
//! shared server other tests use.
//!
//! It uses the PostgreSQL binaries `.ci/postgres.sh` uses (Debian's `/usr/lib/postgresql/*/bin`,
//! the newest, or `initdb` on `PATH`; `TASKQ_TEST_PGBIN` names another directory). Run as
//! root, the cluster belongs to the non-root user `.ci/postgres.sh` creates (`taskq-pg`), or
//! to `nobody` when that user does not exist: PostgreSQL refuses to run as root.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A running private cluster on a free loopback port, with trust authentication. Dropping
/// it stops the server (immediately) and removes its files.
#[derive(Debug)]
pub struct Cluster {
    _dir: tempfile::TempDir,
    root: PathBuf,
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// The owner commands run as, when this process is root.
    owner: Option<String>,
}

/// The database role the cluster is initialised with.
const ROLE: &str = "taskq";

impl Cluster {
    /// Initialises a cluster in a temporary directory and starts it on a free port of
    /// `127.0.0.1` (fsync off: these tests stop the server, not the machine).
    ///
    /// # Errors
    /// A message naming the step that failed (no binaries, `initdb`, start), with the
    /// server's log when it did not start.
    pub fn start() -> Result<Cluster, String> {
        let bin = bin_dir()?;
        let owner = owner()?;
        let dir = tempfile::Builder::new()
            .prefix("taskq-private-pg.")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let root = dir.path().join("pg");
        let data = root.join("data");
        std::fs::create_dir_all(&data).map_err(|e| format!("mkdir: {e}"))?;
        set_mode(dir.path(), 0o755)?;
        set_mode(&root, 0o755)?;
        set_mode(&data, 0o700)?;
        if let Some(user) = &owner {
            for p in [&root, &data] {
                let out = Command::new("chown")
                    .arg(user)
                    .arg(p)
                    .output()
                    .map_err(|e| format!("chown: {e}"))?;
                if !out.status.success() {
                    return Err(format!(
                        "chown {user} {}: {}",
                        p.display(),
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            }
        }
        let port = free_port()?;
        let mut c = Cluster {
            _dir: dir,
            root,
            bin,
            data,
            port,
            owner,
        };
        let data_arg = c.data.display().to_string();
        c.run(
            "initdb",
            &[
                "-D",
                &data_arg,
                "-U",
                ROLE,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
            ],
        )?;
        c.configure()?;
        if let Err(e) = c.start_server() {
            // The port may have been taken between choosing and binding it: once more.
            c.port = free_port()?;
            c.configure()?;
            c.start_server().map_err(|e2| format!("{e}; then {e2}"))?;
        }
        Ok(c)
    }

    /// A `postgres://` URL of the cluster's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://{ROLE}@127.0.0.1:{}/postgres", self.port)
    }

    /// Its TCP port on `127.0.0.1`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Stops the server with `pg_ctl stop -m MODE` (`fast` disconnects clients and shuts
    /// down cleanly, `immediate` quits at once like a crash, recovering from the WAL at the
    /// next start), waiting until it is down.
    ///
    /// # Errors
    /// When `pg_ctl` fails.
    pub fn stop(&self, mode: &str) -> Result<(), String> {
        let data = self.data.display().to_string();
        self.run(
            "pg_ctl",
            &["-D", &data, "-m", mode, "-w", "-t", "60", "stop"],
        )
        .map(|_| ())
    }

    /// Starts the server again (after [`Cluster::stop`]), waiting until it accepts
    /// connections.
    ///
    /// # Errors
    /// When `pg_ctl` fails; the message holds the end of the server's log.
    pub fn start_server(&self) -> Result<(), String> {
        let data = self.data.display().to_string();
        let log = self.root.join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-w", "-t", "60", "start"],
        )
        .map(|_| ())
        .map_err(|e| {
            let tail = std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(20).collect();
            format!(
                "{e}\nserver log (last lines, newest first):\n{}",
                tail.join("\n")
            )
        })
    }

    fn configure(&self) -> Result<(), String> {
        let conf = format!(
            "\n# taskq private test cluster\nlisten_addresses = '127.0.0.1'\nport = {}\n\
             unix_socket_directories = '{}'\nfsync = off\nmax_connections = 100\n\
             shared_buffers = 32MB\n",
            self.port,
            self.root.display()
        );
        // postgresql.auto.conf is read last: the settings hold whatever initdb wrote.
        std::fs::write(self.data.join("postgresql.auto.conf"), conf)
            .map_err(|e| format!("write the configuration: {e}"))?;
        if let Some(user) = &self.owner {
            let _ = Command::new("chown")
                .arg(user)
                .arg(self.data.join("postgresql.auto.conf"))
                .status();
        }
        Ok(())
    }

    /// Runs one of the cluster's binaries as its owner; its stdout on success.
    fn run(&self, tool: &str, args: &[&str]) -> Result<String, String> {
        let path = self.bin.join(tool);
        let mut cmd = match &self.owner {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&path);
                c
            }
            None => Command::new(&path),
        };
        let out = cmd
            .args(args)
            .current_dir("/")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{tool} {}: {}\n{}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop("immediate");
    }
}

/// The directory of `initdb`, `pg_ctl` and `postgres`.
fn bin_dir() -> Result<PathBuf, String> {
    let usable = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Ok(d) = std::env::var("TASKQ_TEST_PGBIN") {
        let d = PathBuf::from(d);
        return if usable(&d) {
            Ok(d)
        } else {
            Err(format!(
                "TASKQ_TEST_PGBIN={} holds no initdb and pg_ctl",
                d.display()
            ))
        };
    }
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| usable(d))
        .collect();
    debian.sort();
    if let Some((_, d)) = debian.pop() {
        return Ok(d);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .find(|d| usable(d))
        .ok_or_else(|| {
            "no PostgreSQL binaries (initdb, pg_ctl): install Debian's `postgresql` package, or set TASKQ_TEST_PGBIN".to_string()
        })
}

/// The user the cluster runs as when this process is root (`None` otherwise).
fn owner() -> Result<Option<String>, String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| format!("id -u: {e}"))?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Ok(None);
    }
    for user in ["taskq-pg", "nobody"] {
        let known = Command::new("id")
            .arg("-u")
            .arg(user)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if known {
            return Ok(Some(user.to_string()));
        }
    }
    Err(
        "running as root and neither `taskq-pg` nor `nobody` exists to own a PostgreSQL cluster"
            .into(),
    )
}

fn set_mode(p: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", p.display()))
}

/// A loopback port nothing listens on now.
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}
