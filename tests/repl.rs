//! The `strata sql` shell driven as a person would: in a pseudo-terminal, typing, and
//! reading the screen (rendered by a terminal emulator).

#![cfg(all(unix, feature = "sql"))]

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Terminal {
    child: Child,
    input: std::fs::File,
    screen: Arc<Mutex<vt100::Parser>>,
}

impl Terminal {
    /// Start `strata` with `args` in a new pseudo-terminal of 300 rows by 160 columns.
    fn start(dir: &std::path::Path, args: &[&str], history: &std::path::Path) -> Terminal {
        let (mut master, mut slave) = (0, 0);
        let size = libc::winsize {
            ws_row: 300,
            ws_col: 160,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes two new descriptors into the integers we pass.
        let r = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(r, 0, "openpty failed");
        // SAFETY: both descriptors were just opened and are owned here.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
        cmd.current_dir(dir)
            .args(args)
            .env("TERM", "xterm")
            .env("STRATA_HISTORY", history)
            .env_remove("STRATA_STORE")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        // SAFETY: between fork and exec, only async-signal-safe calls: a new session with
        // the terminal on stdin as its controlling terminal.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY as _, 0);
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        let screen = Arc::new(Mutex::new(vt100::Parser::new(
            std::num::NonZeroU16::new(300).unwrap(),
            std::num::NonZeroU16::new(160).unwrap(),
            0,
        )));
        let mut output = std::fs::File::from(master.try_clone().unwrap());
        {
            let screen = screen.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = output.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    screen.lock().unwrap().process(&buf[..n]);
                }
            });
        }
        Terminal {
            child,
            input: std::fs::File::from(master),
            screen,
        }
    }

    fn screen(&self) -> String {
        self.screen.lock().unwrap().screen().contents()
    }

    /// Wait until the screen shows `text` (failing, with the screen, if it never does).
    fn expect(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.screen().contains(text) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "the screen never showed {text:?}; it shows:\n{}",
            self.screen()
        );
    }

    /// Type `keys` (a line ends with "\r", as the Enter key sends).
    fn type_keys(&mut self, keys: &str) {
        self.input.write_all(keys.as_bytes()).unwrap();
        self.input.flush().unwrap();
    }

    /// Type a line and wait for the prompt that follows it, `prompts` times in all.
    fn enter(&mut self, line: &str, prompt: &str) {
        let before = self.screen().matches(prompt).count();
        self.type_keys(line);
        self.type_keys("\r");
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.screen().matches(prompt).count() > before {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "no new {prompt:?} prompt after {line:?}; the screen shows:\n{}",
            self.screen()
        );
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_sql_shell_is_usable_at_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history");
    let mut t = Terminal::start(dir.path(), &["--store", "redb:data", "sql"], &history);
    t.expect("default=> ");
    t.enter(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT);",
        "default=> ",
    );
    t.expect("CREATE TABLE");
    // A statement over two lines: the second prompt says it continues.
    t.enter("INSERT INTO t VALUES", "default-> ");
    t.enter("(1, 'ada'), (2, 'grace');", "default=> ");
    t.expect("INSERT 0 2");
    t.enter("SELECT * FROM t ORDER BY id;", "default=> ");
    t.expect(" id | name\n----+-------\n  1 | ada\n  2 | grace\n(2 rows)");
    // An error is shown and the shell goes on.
    t.enter("SELEC 1;", "default=> ");
    t.expect("ERROR:  syntax error");
    t.expect("(SQLSTATE 42601)");
    t.enter("SELECT count(*) AS n FROM t;", "default=> ");
    t.expect(" n\n---\n 2\n(1 row)");
    // Plans print line by line.
    t.enter("EXPLAIN SELECT name FROM t WHERE id = 2;", "default=> ");
    t.expect("plan");
    // Meta-commands.
    t.enter("\\timing", "default=> ");
    t.expect("Timing is on.");
    t.enter("SELECT 41 + 1 AS answer;", "default=> ");
    t.expect("Time: ");
    t.expect("     42");
    t.enter("\\d", "default=> ");
    t.expect(" public | t    | table\n(1 row)");
    t.enter("\\d t", "default=> ");
    t.expect("Table \"t\"");
    t.expect(" name   | text");
    t.expect("CREATE UNIQUE INDEX t_pkey ON public.t USING btree (id)");
    t.enter("\\d nosuch", "default=> ");
    t.expect("Did not find any relation named \"nosuch\".");
    t.enter("CREATE VIEW tv AS SELECT id FROM t;", "default=> ");
    t.enter("CREATE TABLE u (x INTEGER);", "default=> ");
    t.enter("\\dt", "default=> ");
    t.expect(" public | u    | table\n(2 rows)");
    t.enter("\\dv", "default=> ");
    t.expect(" public | tv   | view\n(1 row)");
    t.enter("\\di", "default=> ");
    t.expect(" public | t_pkey | index\n(1 row)");
    t.enter("CREATE DATABASE other;", "default=> ");
    t.enter("\\l", "default=> ");
    t.expect(" other   | strata");
    t.enter("\\c other", "other=> ");
    t.expect("You are now connected to database \"other\".");
    // History: the up arrow brings back the last line, then the ones before it.
    t.type_keys("\x1b[A");
    t.expect("other=> \\c other");
    t.type_keys("\x1b[A\x1b[A");
    t.expect("other=> CREATE DATABASE other;");
    t.type_keys("\x15"); // Ctrl-U clears the line
    t.type_keys("\\q\r");
    let status = t.child.wait().unwrap();
    assert!(status.success());
    let saved = std::fs::read_to_string(&history).unwrap();
    assert!(saved.contains("SELECT count(*) AS n FROM t;"), "{saved}");
}
