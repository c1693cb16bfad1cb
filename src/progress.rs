//! A progress line for long commands (`strata copy`, `strata sql import`): redrawn in place
//! on a terminal, printed every two seconds otherwise (logs and CI stay readable).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    label: String,
    unit: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    last: Instant,
    tty: bool,
    /// Extra text after the figures (for example the rows an import has committed).
    note: String,
}

impl Progress {
    /// A bar for `total` units of work (`unit` names them: "entries", "bytes").
    pub fn new(label: String, total: u64, unit: &'static str) -> Self {
        let now = Instant::now();
        Progress {
            label,
            unit,
            total,
            done: 0,
            started: now,
            last: now - Duration::from_secs(10),
            tty: std::io::stderr().is_terminal(),
            note: String::new(),
        }
    }

    pub fn advance(&mut self, n: u64) {
        self.set(self.done + n);
    }

    /// Move to `done` units, redrawing when enough time has passed or the work is complete.
    pub fn set(&mut self, done: u64) {
        self.done = done;
        let every = if self.tty {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(2)
        };
        if self.last.elapsed() >= every || self.done == self.total {
            self.last = Instant::now();
            self.draw();
        }
    }

    pub fn note(&mut self, note: String) {
        self.note = note;
    }

    pub fn draw(&self) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = self.done as f64 / secs;
        let left = self.total.saturating_sub(self.done) as f64 / rate.max(1e-9);
        let pct = if self.total == 0 {
            100.0
        } else {
            (self.done as f64 * 100.0 / self.total as f64).min(100.0)
        };
        let width = 30;
        let filled = ((pct / 100.0) * width as f64) as usize;
        let bar: String = "#".repeat(filled.min(width)) + &"-".repeat(width - filled.min(width));
        let note = if self.note.is_empty() {
            String::new()
        } else {
            format!(" {}", self.note)
        };
        let line = format!(
            "{} [{bar}] {}/{} {} {:>5.1}% {:.0}/s ETA {:.0}s{note}",
            self.label, self.done, self.total, self.unit, pct, rate, left
        );
        let mut err = std::io::stderr();
        if self.tty {
            let _ = write!(err, "\r{line}\x1b[K");
            if self.done >= self.total {
                let _ = writeln!(err);
            }
        } else {
            let _ = writeln!(err, "{line}");
        }
    }
}
