//! A server in the background, and finding it again: `strata serve --detach`,
//! `strata status`, `strata stop` and `strata logs`.
//!
//! A server keeps its run files in its *run directory*: `--run-dir`, else the store's data
//! directory (`redb:<dir>`, `sqlite:<dir>`). A `memory:` or `dynamodb:` store has none, so
//! such a server writes no run files unless `--run-dir` names a place.
//!
//! - `strata.pid`: the server's process id, written (atomically) once every listener is
//!   bound, so its presence means "ready", and removed when the server shuts down.
//! - `strata.server`: `name=value` lines beside it: the store, each frontend's address, the
//!   start time, and the process's start tick, which tells a live server from an unrelated
//!   process that later got the same pid.
//! - `strata.log`: a detached server's output (stdout and stderr), appended across runs.
//!
//! One invariant: a pid file names a live server or is stale; `running` treats a stale one
//! as absent, and a new server replaces it.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use strata::StoreUrl;

const PID_FILE: &str = "strata.pid";
const SERVER_FILE: &str = "strata.server";
const LOG_FILE: &str = "strata.log";

/// How long `serve --detach` waits for the server to be ready before giving up on waiting
/// (the server itself goes on starting).
const READY_WAIT: Duration = Duration::from_secs(300);

/// Where a server keeps its run files.
pub struct RunDir {
    path: PathBuf,
}

/// What a running server wrote about itself.
#[derive(Default)]
pub struct ServerInfo {
    pub pid: u32,
    /// Seconds since the Unix epoch.
    pub started: u64,
    pub store: String,
    /// (frontend, address), in the order the server printed them.
    pub addresses: Vec<(String, String)>,
    /// The process's start time in clock ticks since boot (Linux), to detect pid reuse.
    start_tick: Option<u64>,
}

impl RunDir {
    /// `--run-dir`, else the store's directory; `None` for a store without one.
    pub fn resolve(explicit: Option<&Path>, store: &StoreUrl) -> Option<RunDir> {
        let path = match (explicit, store) {
            (Some(p), _) => p.to_path_buf(),
            (None, StoreUrl::Redb(dir) | StoreUrl::Sqlite(dir)) => dir.clone(),
            (None, StoreUrl::Memory | StoreUrl::Dynamodb(_)) => return None,
        };
        Some(RunDir { path })
    }

    /// Like `resolve`, but a store without a directory is an error that says what to do.
    pub fn require(explicit: Option<&Path>, store: &StoreUrl) -> Result<RunDir, String> {
        RunDir::resolve(explicit, store).ok_or_else(|| {
            "this store has no data directory to keep the server's pid and log files in: \
             pass --run-dir DIR"
                .to_string()
        })
    }

    pub fn log_file(&self) -> PathBuf {
        self.path.join(LOG_FILE)
    }

    fn pid_file(&self) -> PathBuf {
        self.path.join(PID_FILE)
    }

    fn server_file(&self) -> PathBuf {
        self.path.join(SERVER_FILE)
    }

    /// The live server this directory's pid file names, if any.
    pub fn running(&self) -> Result<Option<ServerInfo>, String> {
        let pid = match std::fs::read_to_string(self.pid_file()) {
            Ok(text) => match text.trim().parse::<u32>() {
                Ok(pid) => pid,
                Err(_) => return Ok(None),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", self.pid_file().display())),
        };
        let info = std::fs::read_to_string(self.server_file())
            .ok()
            .map(|text| ServerInfo::parse(&text))
            .filter(|info| info.pid == pid)
            .unwrap_or(ServerInfo {
                pid,
                ..ServerInfo::default()
            });
        if !alive(pid) {
            return Ok(None);
        }
        match (info.start_tick, start_tick(pid)) {
            (Some(recorded), Some(now)) if recorded != now => Ok(None),
            _ => Ok(Some(info)),
        }
    }

    /// Refuse to start a second server over the same directory.
    pub fn ensure_free(&self) -> Result<(), String> {
        match self.running()? {
            Some(s) => Err(format!(
                "a server is already running from {} (pid {}); `strata stop` stops it",
                self.path.display(),
                s.pid
            )),
            None => Ok(()),
        }
    }

    /// Record this process as the directory's server; the guard removes the pid file when
    /// the server shuts down.
    pub fn claim(&self, store: &str, addresses: Vec<(String, String)>) -> Result<PidGuard, String> {
        std::fs::create_dir_all(&self.path)
            .map_err(|e| format!("cannot create {}: {e}", self.path.display()))?;
        let pid = std::process::id();
        let info = ServerInfo {
            pid,
            started: now_secs(),
            store: store.to_string(),
            addresses,
            start_tick: start_tick(pid),
        };
        write_atomically(&self.server_file(), &info.render())?;
        write_atomically(&self.pid_file(), &format!("{pid}\n"))?;
        Ok(PidGuard {
            pid_file: self.pid_file(),
            server_file: self.server_file(),
            pid,
        })
    }

    /// Start this same command again without `--detach`, in its own process group with its
    /// output appended to the log file, and wait until it is ready or has failed.
    pub fn detach(&self) -> Result<ServerInfo, String> {
        self.ensure_free()?;
        std::fs::create_dir_all(&self.path)
            .map_err(|e| format!("cannot create {}: {e}", self.path.display()))?;
        let log_path = self.log_file();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let err_log = log
            .try_clone()
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
        let args = std::env::args_os()
            .skip(1)
            .filter(|a| a != "--detach")
            .collect::<Vec<_>>();
        let mut command = std::process::Command::new(exe);
        command
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(err_log);
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            // Out of the terminal's foreground group: Ctrl-C in the shell that started it
            // does not reach the server.
            command.process_group(0);
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start the server: {e}"))?;
        let started = Instant::now();
        loop {
            if let Some(status) = child
                .try_wait()
                .map_err(|e| format!("cannot watch the server: {e}"))?
            {
                return Err(format!(
                    "the server stopped before it was ready ({status}); its output:\n{}",
                    read_from(&log_path, log_start).trim_end()
                ));
            }
            if let Some(info) = self.running()? {
                if info.pid == child.id() {
                    return Ok(info);
                }
            }
            if started.elapsed() > READY_WAIT {
                return Err(format!(
                    "the server (pid {}) is not ready after {} s; it goes on starting: \
                     `strata logs` shows its output",
                    child.id(),
                    READY_WAIT.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Ask the server to shut down (SIGTERM: it finishes requests in flight) and wait until
    /// it has exited. `Ok(None)` when none was running.
    pub fn stop(&self, wait: Duration) -> Result<Option<u32>, String> {
        let Some(info) = self.running()? else {
            return Ok(None);
        };
        signal_terminate(info.pid)?;
        let started = Instant::now();
        while self.running()?.is_some() && alive(info.pid) {
            if started.elapsed() > wait {
                return Err(format!(
                    "the server (pid {}) is still shutting down after {} s: it is finishing \
                     requests in flight; run `strata stop` again to wait longer",
                    info.pid,
                    wait.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // The pid file goes last in a clean shutdown; wait for the process itself too.
        while alive(info.pid) && started.elapsed() <= wait {
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Some(info.pid))
    }

    /// Print the log (its last `lines` lines if given); with `follow`, go on printing what
    /// is appended until interrupted.
    pub fn print_log(&self, lines: Option<usize>, follow: bool) -> Result<(), String> {
        let path = self.log_file();
        let text = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && follow => Vec::new(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!(
                    "no log at {}: only a server started with `strata serve --detach` keeps one",
                    path.display()
                ))
            }
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let start = match lines {
            Some(n) => tail_start(&text, n),
            None => 0,
        };
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&text[start..]);
        let _ = out.flush();
        if !follow {
            return Ok(());
        }
        let mut offset = text.len() as u64;
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let Ok(mut file) = std::fs::File::open(&path) else {
                continue;
            };
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            if len < offset {
                // Replaced or truncated: start over from its beginning.
                offset = 0;
            }
            if len == offset {
                continue;
            }
            let mut more = Vec::new();
            if file.seek(SeekFrom::Start(offset)).is_ok() && file.read_to_end(&mut more).is_ok() {
                offset += more.len() as u64;
                let _ = out.write_all(&more);
                let _ = out.flush();
            }
        }
    }
}

/// Removes the pid file when the server is done, unless another server has taken the
/// directory over since.
pub struct PidGuard {
    pid_file: PathBuf,
    server_file: PathBuf,
    pid: u32,
}

impl Drop for PidGuard {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.pid_file)
            .map(|t| t.trim() == self.pid.to_string())
            .unwrap_or(false);
        if ours {
            let _ = std::fs::remove_file(&self.server_file);
            let _ = std::fs::remove_file(&self.pid_file);
        }
    }
}

impl ServerInfo {
    fn render(&self) -> String {
        let mut text = format!(
            "pid={}\nstarted={}\nstore={}\n",
            self.pid, self.started, self.store
        );
        if let Some(t) = self.start_tick {
            text.push_str(&format!("start-tick={t}\n"));
        }
        for (name, addr) in &self.addresses {
            text.push_str(&format!("address.{name}={addr}\n"));
        }
        text
    }

    fn parse(text: &str) -> ServerInfo {
        let mut info = ServerInfo::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            match key {
                "pid" => info.pid = value.parse().unwrap_or(0),
                "started" => info.started = value.parse().unwrap_or(0),
                "store" => info.store = value.to_string(),
                "start-tick" => info.start_tick = value.parse().ok(),
                _ => {
                    if let Some(name) = key.strip_prefix("address.") {
                        info.addresses.push((name.to_string(), value.to_string()));
                    }
                }
            }
        }
        info
    }

    /// How long the server has been up, as `3h 4m 5s`.
    pub fn uptime(&self) -> String {
        let s = now_secs().saturating_sub(self.started);
        match (s / 3600, s / 60 % 60, s % 60) {
            (0, 0, s) => format!("{s}s"),
            (0, m, s) => format!("{m}m {s}s"),
            (h, m, s) => format!("{h}h {m}m {s}s"),
        }
    }

    /// The address a frontend listens on.
    pub fn address(&self, name: &str) -> Option<&str> {
        self.addresses
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a.as_str())
    }
}

/// Seconds since the Unix epoch.
fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn write_atomically(path: &Path, text: &str) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The log's text from `offset` on (lossy UTF-8, at most its last 64 KiB).
fn read_from(path: &Path, offset: u64) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let from = (offset as usize).min(bytes.len());
    let from = from.max(bytes.len().saturating_sub(64 * 1024));
    String::from_utf8_lossy(&bytes[from..]).into_owned()
}

/// Where the last `n` lines of `text` begin.
fn tail_start(text: &[u8], n: usize) -> usize {
    if n == 0 {
        return text.len();
    }
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return i + 1;
            }
        }
    }
    0
}

/// Whether a process with this pid exists and is not a zombie.
#[cfg(unix)]
fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // Signal 0 checks for existence without sending anything.
    // SAFETY: kill(2) with signal 0 has no effect on the target.
    let exists = unsafe { libc::kill(pid, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && proc_state(pid as u32) != Some('Z')
}

#[cfg(not(unix))]
fn alive(_pid: u32) -> bool {
    false
}

#[cfg(unix)]
fn signal_terminate(pid: u32) -> Result<(), String> {
    let target = libc::pid_t::try_from(pid).map_err(|_| format!("invalid pid {pid}"))?;
    // SAFETY: sends SIGTERM to the process the pid file names, checked live just before.
    if unsafe { libc::kill(target, libc::SIGTERM) } == 0 {
        Ok(())
    } else {
        Err(format!(
            "cannot signal pid {pid}: {}",
            std::io::Error::last_os_error()
        ))
    }
}

#[cfg(not(unix))]
fn signal_terminate(pid: u32) -> Result<(), String> {
    Err(format!("stopping pid {pid} needs a Unix system"))
}

/// The fields of `/proc/<pid>/stat` after the command name (Linux only).
fn proc_stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself hold spaces or parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    Some(after.split_whitespace().map(str::to_string).collect())
}

fn proc_state(pid: u32) -> Option<char> {
    proc_stat_fields(pid)?.first()?.chars().next()
}

/// Field 22 of `/proc/<pid>/stat`: when the process started, in ticks since boot.
fn start_tick(pid: u32) -> Option<u64> {
    proc_stat_fields(pid)?.get(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_files_round_trip() {
        let info = ServerInfo {
            pid: 42,
            started: 1_700_000_000,
            store: "redb:./data".into(),
            addresses: vec![
                ("kv-connect".into(), "http://127.0.0.1:4512".into()),
                ("rest".into(), "http://127.0.0.1:4200".into()),
            ],
            start_tick: Some(77),
        };
        let back = ServerInfo::parse(&info.render());
        assert_eq!(back.pid, 42);
        assert_eq!(back.store, "redb:./data");
        assert_eq!(back.start_tick, Some(77));
        assert_eq!(back.address("rest"), Some("http://127.0.0.1:4200"));
        assert_eq!(back.addresses.len(), 2);
    }

    #[test]
    fn the_tail_of_a_log_is_its_last_lines() {
        let text = b"one\ntwo\nthree\n";
        assert_eq!(&text[tail_start(text, 2)..], b"two\nthree\n");
        assert_eq!(&text[tail_start(text, 5)..], text);
        assert_eq!(tail_start(text, 0), text.len());
        let unterminated = b"a\nb";
        assert_eq!(&unterminated[tail_start(unterminated, 1)..], b"b");
    }

    #[test]
    fn this_process_is_alive_and_has_a_start_tick() {
        assert!(alive(std::process::id()));
        if cfg!(target_os = "linux") {
            assert!(start_tick(std::process::id()).is_some());
        }
    }

    #[test]
    fn a_pid_file_naming_no_live_process_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir {
            path: dir.path().to_path_buf(),
        };
        assert!(run.running().unwrap().is_none());
        // A pid far above any pid_max names no process.
        std::fs::write(run.pid_file(), "2147483646\n").unwrap();
        assert!(run.running().unwrap().is_none());
        run.ensure_free().unwrap();
        let guard = run.claim("memory:", Vec::new()).unwrap();
        let me = run.running().unwrap().expect("this process is running");
        assert_eq!(me.pid, std::process::id());
        assert!(run.ensure_free().is_err());
        drop(guard);
        assert!(!run.pid_file().exists());
    }
}
