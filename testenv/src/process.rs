//! Child processes of the control plane, and the reaper that stops them when the test
//! process dies without running destructors (a panic across threads, SIGKILL, Ctrl-C, or a
//! control plane kept in a `static`).

use std::fs::File;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result, io};

/// One running program of the control plane, with its output in a log file.
pub struct Component {
    pub name: String,
    child: Child,
    log: PathBuf,
    binary: PathBuf,
    args: Vec<String>,
}

impl Component {
    /// Starts `binary args...` in a process group of its own, so that Ctrl-C on the test
    /// run reaches the reaper's clean-up rather than killing components half-way.
    pub fn spawn(
        name: &str,
        binary: &Path,
        args: &[String],
        log: PathBuf,
        reaper: &mut Reaper,
    ) -> Result<Component> {
        let out = File::create(&log)
            .map_err(io(format!("{name}: cannot create log {}", log.display())))?;
        let child = start(name, binary, args, out, reaper)?;
        Ok(Component {
            name: name.to_string(),
            child,
            log,
            binary: binary.to_path_buf(),
            args: args.to_vec(),
        })
    }

    /// Stops the program and starts it again with the same flags (and ports), its log
    /// going on in the same file.
    pub fn restart(&mut self, reaper: &mut Reaper) -> Result<()> {
        self.stop();
        let out = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .map_err(io(format!(
                "{}: cannot open log {}",
                self.name,
                self.log.display()
            )))?;
        self.child = start(&self.name, &self.binary, &self.args, out, reaper)?;
        Ok(())
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the program has already stopped.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// An error naming this component, the cause and the end of its log.
    pub fn failure(&self, cause: impl Into<String>) -> Error {
        let tail = log_tail(&self.log, 25);
        let port_in_use = tail.contains("address already in use");
        Error::Component {
            component: self.name.clone(),
            cause: cause.into(),
            log: self.log.clone(),
            tail,
            port_in_use,
        }
    }

    /// Waits until `probe` succeeds; fails at once if the program exits, and after
    /// `timeout` with the last probe error.
    pub async fn wait_healthy<F, Fut>(
        &mut self,
        timeout: Duration,
        mut probe: F,
    ) -> Result<Duration>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<(), String>>,
    {
        let start = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return Err(self.failure(format!("it exited at start ({status})")));
            }
            let last_error = match tokio::time::timeout(Duration::from_secs(5), probe()).await {
                Ok(Ok(())) => return Ok(start.elapsed()),
                Ok(Err(e)) => e,
                Err(_) => "the health probe took over 5 s".to_string(),
            };
            if start.elapsed() > timeout {
                return Err(self.failure(format!(
                    "not healthy after {timeout:?}; last health probe: {last_error}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the program at once; the control plane is disposable.
    pub fn stop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        self.stop();
    }
}

fn start(
    name: &str,
    binary: &Path,
    args: &[String],
    out: File,
    reaper: &mut Reaper,
) -> Result<Child> {
    let err = out
        .try_clone()
        .map_err(io(format!("{name}: cannot open its log")))?;
    let child = Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(io(format!("{name}: cannot start {}", binary.display())))?;
    reaper.watch_pid(child.id())?;
    Ok(child)
}

/// The last `lines` lines of a log file, or a note that it cannot be read.
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// A small shell process that holds the read end of a pipe from the test process. When the
/// test process goes away without a word (its end of the pipe closes), the reaper kills
/// every component it was told about and deletes the control plane's folder. A normal
/// shutdown says `done` first, and the reaper leaves quietly.
pub struct Reaper {
    child: Child,
    stdin: Option<ChildStdin>,
}

const REAPER_SCRIPT: &str = r#"
trap '' INT TERM HUP
pids=""; dir=""
while read -r kind arg; do
  case "$kind" in
    pid) pids="$pids $arg" ;;
    dir) dir="$arg" ;;
    done) exit 0 ;;
  esac
done
for p in $pids; do kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null; done
[ -n "$dir" ] && rm -rf -- "$dir"
exit 0
"#;

impl Reaper {
    pub fn start() -> Result<Reaper> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(REAPER_SCRIPT)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(io("cannot start the clean-up watcher (sh)"))?;
        let stdin = child.stdin.take();
        Ok(Reaper { child, stdin })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn watch_pid(&mut self, pid: u32) -> Result<()> {
        self.say(&format!("pid {pid}"))
    }

    pub fn watch_dir(&mut self, dir: &Path) -> Result<()> {
        self.say(&format!("dir {}", dir.display()))
    }

    fn say(&mut self, line: &str) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| Error::Usage("the clean-up watcher was already dismissed".into()))?;
        writeln!(stdin, "{line}").map_err(io("cannot reach the clean-up watcher"))
    }

    /// Everything was stopped in order: the reaper has nothing left to do.
    pub fn dismiss(&mut self) {
        let _ = self.say("done");
        self.stdin = None;
        let _ = self.child.wait();
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            self.dismiss();
        }
    }
}
