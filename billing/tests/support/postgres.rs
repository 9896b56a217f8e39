//! A throwaway PostgreSQL server for tests and benches: Debian's `postgresql` server
//! binaries, a temp data dir, a free loopback port. Stopped and deleted on drop, also
//! when a test panics. Fails loudly when PostgreSQL is not installed: the PostgreSQL
//! half of the suite must never be skipped silently.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const INSTALL_HINT: &str = "install Debian's `postgresql` package (apt-get install -y postgresql) \
     or point OFFPEAK_PG_BIN at a directory holding initdb and postgres";

pub struct TempPostgres {
    bin: PathBuf,
    data: PathBuf,
    run_as_postgres: bool,
    child: Option<Child>,
    port: u16,
    databases: AtomicU32,
    // Dropped last: removes the data dir after the server is gone.
    dir: tempfile::TempDir,
}

/// Highest-version `/usr/lib/postgresql/<v>/bin` that has initdb and postgres.
fn find_bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("OFFPEAK_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").exists() && bin.join("postgres").exists()).then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: {INSTALL_HINT}"
        ),
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl TempPostgres {
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.run_as_postgres {
            // PostgreSQL refuses to run as root; setpriv execs in place, so the child
            // pid is the server's own pid.
            let mut cmd = Command::new("setpriv");
            cmd.args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ]);
            cmd.arg(path);
            cmd
        } else {
            Command::new(path)
        }
    }

    /// Starts a server; panics with the reason (and the install hint) if it cannot.
    pub fn start() -> TempPostgres {
        let bin = find_bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("offpeak-billing-pg-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        let run_as_postgres = is_root();
        let mut server = TempPostgres {
            bin,
            data,
            run_as_postgres,
            child: None,
            port: 0,
            databases: AtomicU32::new(0),
            dir,
        };
        if run_as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(server.dir.path())
                .status()
                .unwrap();
            assert!(
                status.success(),
                "chown of the temp dir to the postgres user failed: {INSTALL_HINT}"
            );
        }
        let out = server
            .command("initdb")
            .arg("-D")
            .arg(&server.data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C",
            ])
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run initdb from {}: {e}; {INSTALL_HINT}",
                    server.bin.display()
                )
            });
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The port is free when we look; another process may take it before the
        // server binds, so retry on a fresh port when the server dies at start.
        for attempt in 1..=5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let log = server.dir.path().join(format!("postgres-{attempt}.log"));
            let log_file = std::fs::File::create(&log).unwrap();
            let child = server
                .command("postgres")
                .arg("-D")
                .arg(&server.data)
                .arg("-p")
                .arg(port.to_string())
                .args(["-c", "listen_addresses=127.0.0.1", "-k"])
                .arg(server.dir.path())
                .args([
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                ])
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().unwrap())
                .stderr(log_file)
                .spawn()
                .unwrap();
            server.child = Some(child);
            server.port = port;
            if server.wait_ready(&log) {
                return server;
            }
        }
        panic!("PostgreSQL did not start on a free loopback port after 5 attempts");
    }

    fn wait_ready(&mut self, log: &Path) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                eprintln!("postgres exited at start on port {}: {text}", self.port);
                self.child = None;
                return false;
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                let ready = Command::new(self.bin.join("pg_isready"))
                    .args([
                        "-h",
                        "127.0.0.1",
                        "-p",
                        &self.port.to_string(),
                        "-U",
                        "postgres",
                    ])
                    .stdout(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(true);
                if ready {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "PostgreSQL did not become ready in 60 s; log: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }

    /// URL of the server's default database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Creates a fresh, empty database and returns its URL.
    pub fn fresh_database(&self) -> String {
        let n = self.databases.fetch_add(1, Ordering::SeqCst);
        let name = format!("t{n}");
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-q",
                "-c",
            ])
            .arg(format!("CREATE DATABASE {name}"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "CREATE DATABASE failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = self
                .command("pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .args(["stop", "-m", "immediate", "-w", "-t", "10"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
