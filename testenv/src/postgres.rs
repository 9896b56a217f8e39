//! A throwaway PostgreSQL server for tests and benches: Debian's `postgresql` server
//! binaries (`/usr/lib/postgresql/<v>/bin`, or `OFFPEAK_PG_BIN`), a temporary data folder
//! and a free loopback port. It can be stopped and started again on the same port and
//! data, so a test can take the ledger away and bring it back. Stopped and deleted on
//! drop, also when a test panics. Fails loudly when PostgreSQL is not installed: the
//! PostgreSQL half of a suite must never be skipped silently.
//!
//! ```no_run
//! # fn demo() -> offpeak_testenv::Result<()> {
//! let mut server = offpeak_testenv::TempPostgres::start()?;
//! let url = server.fresh_database()?; // postgres://postgres@127.0.0.1:<port>/t0
//! server.stop()?;                     // clients see the connection refused
//! server.start_again()?;              // same port, same data
//! # Ok(()) }
//! ```

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result, io};

const INSTALL_HINT: &str = "install Debian's `postgresql` package (apt-get install -y postgresql) \
     or point OFFPEAK_PG_BIN at a directory holding initdb, postgres, pg_isready and psql";

/// How long the server may take to accept connections, or to stop.
const PATIENCE: Duration = Duration::from_secs(60);

/// A PostgreSQL server of its own: user `postgres`, trust authentication, loopback only,
/// no fsync (a test's data need not survive a power cut).
pub struct TempPostgres {
    bin: PathBuf,
    data: PathBuf,
    run_as_postgres: bool,
    child: Option<Child>,
    port: u16,
    starts: u32,
    databases: AtomicU32,
    // Dropped last: removes the data folder after the server is gone.
    dir: tempfile::TempDir,
}

fn failed(cause: impl Into<String>) -> Error {
    Error::Postgres(cause.into())
}

/// The highest-version `/usr/lib/postgresql/<v>/bin` that has initdb and postgres.
fn find_bin_dir() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("OFFPEAK_PG_BIN") {
        return Ok(PathBuf::from(dir));
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
    found.pop().map(|(_, bin)| bin).ok_or_else(|| {
        failed(format!(
            "server binaries not found under /usr/lib/postgresql/*/bin: {INSTALL_HINT}"
        ))
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(io("cannot find a free loopback port for PostgreSQL"))?
        .port())
}

impl TempPostgres {
    /// `program` of the server's binaries, as user `postgres` when we are root (the server
    /// refuses to run as root). setpriv execs in place, so the child's pid is the
    /// program's own.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.run_as_postgres {
            let mut command = Command::new("setpriv");
            command.args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ]);
            command.arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    /// Makes a data folder and starts a server on a free loopback port.
    pub fn start() -> Result<TempPostgres> {
        let bin = find_bin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("offpeak-pg-")
            .tempdir()
            .map_err(io("cannot make a folder for PostgreSQL"))?;
        let data = dir.path().join("data");
        let run_as_postgres = is_root();
        let mut server = TempPostgres {
            bin,
            data,
            run_as_postgres,
            child: None,
            port: 0,
            starts: 0,
            databases: AtomicU32::new(0),
            dir,
        };
        if run_as_postgres {
            let chown = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(server.dir.path())
                .status()
                .map_err(io("cannot run chown"))?;
            if !chown.success() {
                return Err(failed(format!(
                    "chown of {} to the postgres user failed: {INSTALL_HINT}",
                    server.dir.path().display()
                )));
            }
        }
        let init = server
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
            .map_err(|e| {
                failed(format!(
                    "cannot run initdb from {}: {e}; {INSTALL_HINT}",
                    server.bin.display()
                ))
            })?;
        if !init.status.success() {
            return Err(failed(format!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&init.stdout),
                String::from_utf8_lossy(&init.stderr)
            )));
        }
        // The port is free when we look; another process may take it before the server
        // binds, so try a fresh port when the server dies at start.
        let mut last = String::new();
        for _ in 0..5 {
            server.port = free_port()?;
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(e) => last = e.to_string(),
            }
        }
        Err(failed(format!(
            "did not start on a free loopback port in 5 attempts; the last: {last}"
        )))
    }

    /// Starts the server on its port and waits until it accepts connections.
    fn spawn(&mut self) -> Result<()> {
        self.starts += 1;
        let log = self
            .dir
            .path()
            .join(format!("postgres-{}.log", self.starts));
        let out = File::create(&log).map_err(io(format!("cannot create {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(io(format!("cannot open {}", log.display())))?;
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(&self.data)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-c", "listen_addresses=127.0.0.1", "-k"])
            .arg(self.dir.path())
            .args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| failed(format!("cannot start postgres: {e}; {INSTALL_HINT}")))?;
        self.child = Some(child);
        self.wait_ready(&log)
    }

    fn wait_ready(&mut self, log: &Path) -> Result<()> {
        let tail = || std::fs::read_to_string(log).unwrap_or_default();
        let started = Instant::now();
        while started.elapsed() < PATIENCE {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(failed(format!(
                    "postgres exited at start on port {} ({status}); log {}:\n{}",
                    self.port,
                    log.display(),
                    tail()
                )));
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                let ready = Command::new(self.bin.join("pg_isready"))
                    .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                    .args(["-U", "postgres"])
                    .stdout(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(true);
                if ready {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(Error::Timeout {
            what: format!(
                "PostgreSQL to accept connections on port {}; log {}:\n{}",
                self.port,
                log.display(),
                tail()
            ),
            timeout: PATIENCE,
        })
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the server is running (not [`stop`](Self::stop)ped).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// URL of the server's default database, `postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Creates a fresh, empty database and returns its URL.
    pub fn fresh_database(&self) -> Result<String> {
        let name = format!("t{}", self.databases.fetch_add(1, Ordering::SeqCst));
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-q", "-c"])
            .arg(format!("CREATE DATABASE {name}"))
            .output()
            .map_err(|e| failed(format!("cannot run psql: {e}; {INSTALL_HINT}")))?;
        if !out.status.success() {
            return Err(failed(format!(
                "CREATE DATABASE {name} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(format!(
            "postgres://postgres@127.0.0.1:{}/{name}",
            self.port
        ))
    }

    /// Stops the server the way an administrator does (`pg_ctl stop -m fast`: SIGINT, open
    /// sessions are ended) and waits until it is gone: connections are refused until
    /// [`start_again`](Self::start_again). Stopping a stopped server does nothing.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let signalled = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        let started = Instant::now();
        while signalled && started.elapsed() < PATIENCE {
            if let Ok(Some(_)) = child.try_wait() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(failed(format!(
            "the server on port {} did not stop within {PATIENCE:?} of SIGINT; killed",
            self.port
        )))
    }

    /// Starts the stopped server again on the same port with the same data, and waits
    /// until it accepts connections (URLs handed out before stay valid).
    pub fn start_again(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        self.spawn()
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // An immediate shutdown (SIGQUIT): the data is thrown away anyway.
            let _ = Command::new("kill")
                .args(["-QUIT", &child.id().to_string()])
                .status();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
