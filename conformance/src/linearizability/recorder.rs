//! Recording a history while clients run: take the time before a call leaves, take it again
//! when its answer (or its failure) arrives, and keep the operation.

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::history::{Call, History, Operation, Outcome, Output};

/// The clock every time of one history is read from.
#[derive(Clone, Copy, Debug)]
enum Clock {
    /// Nanoseconds since the recorder was made: exact and monotonic, one process only.
    Monotonic(Instant),
    /// Nanoseconds since the Unix epoch: comparable across the processes of one machine
    /// (provided nobody steps the clock while the history is recorded).
    System,
}

/// An operation that was dropped because it provably had no effect, kept for diagnosis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropped {
    pub client: u64,
    pub invoked: u64,
    pub completed: u64,
    pub call: Call,
    /// Why the client considered it failed.
    pub reason: String,
}

#[derive(Default)]
struct Recorded {
    ops: Vec<Operation>,
    dropped: Vec<Dropped>,
}

/// Collects the operations of concurrent clients into one [`History`]. Cheap to clone; every
/// clone records into the same history.
#[derive(Clone)]
pub struct Recorder {
    clock: Clock,
    recorded: Arc<Mutex<Recorded>>,
}

impl Recorder {
    /// A recorder for clients of this process, timed by a monotonic clock.
    pub fn monotonic() -> Self {
        Recorder {
            clock: Clock::Monotonic(Instant::now()),
            recorded: Arc::default(),
        }
    }

    /// A recorder whose times are system-clock nanoseconds, for one part of a history that
    /// several processes record and a parent merges.
    pub fn system_clock() -> Self {
        Recorder {
            clock: Clock::System,
            recorded: Arc::default(),
        }
    }

    /// The current time on this recorder's clock, in nanoseconds.
    pub fn now(&self) -> u64 {
        match self.clock {
            Clock::Monotonic(start) => {
                u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
            }
            Clock::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
                .unwrap_or(0),
        }
    }

    /// `client` is about to make `call`: call this before the request leaves, and settle the
    /// returned [`Pending`] when the answer is in.
    pub fn invoke(&self, client: u64, call: Call) -> Pending {
        Pending {
            recorder: self.clone(),
            client,
            invoked: self.now(),
            call: Some(call),
        }
    }

    /// Add an operation recorded elsewhere.
    pub fn record(&self, op: Operation) {
        self.lock().ops.push(op);
    }

    /// Everything recorded so far.
    pub fn history(&self) -> History {
        History::from(self.lock().ops.clone())
    }

    /// The operations dropped as failed (not part of [`Recorder::history`]).
    pub fn dropped(&self) -> Vec<Dropped> {
        self.lock().dropped.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recorded> {
        // A client that panicked while holding the lock left whole operations behind: the
        // data is still good.
        self.recorded.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A call in flight. Settle it with [`Pending::ok`], [`Pending::unknown`] or
/// [`Pending::failed`]; one dropped unsettled (a cancelled task, a panic) is recorded as
/// [`Outcome::Unknown`], since it may have taken effect.
pub struct Pending {
    recorder: Recorder,
    client: u64,
    invoked: u64,
    call: Option<Call>,
}

impl Pending {
    /// It returned `output`.
    pub fn ok(mut self, output: Output) {
        self.settle(Outcome::Ok(output));
    }

    /// Its outcome is unknown: it may or may not have taken effect.
    pub fn unknown(mut self) {
        self.settle(Outcome::Unknown);
    }

    /// It failed and provably had no effect (a conflict, a rejected request, a read that
    /// returned an error): it is not part of the history. Kept aside, with `reason`, in
    /// [`Recorder::dropped`].
    pub fn failed(mut self, reason: impl std::fmt::Display) {
        if let Some(call) = self.call.take() {
            let completed = self.recorder.now();
            self.recorder.lock().dropped.push(Dropped {
                client: self.client,
                invoked: self.invoked,
                completed,
                call,
                reason: reason.to_string(),
            });
        }
    }

    fn settle(&mut self, outcome: Outcome) {
        if let Some(call) = self.call.take() {
            let completed = self.recorder.now();
            self.recorder.record(Operation {
                client: self.client,
                invoked: self.invoked,
                completed,
                call,
                outcome,
            });
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.settle(Outcome::Unknown);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_calls_are_recorded_in_order_of_completion() {
        let r = Recorder::monotonic();
        let a = r.invoke(1, Call::Get { key: b"k".to_vec() });
        let b = r.clone().invoke(
            2,
            Call::Set {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            },
        );
        b.ok(Output::Written);
        a.ok(Output::Read(Some(b"v".to_vec())));
        let h = r.history();
        assert_eq!(h.len(), 2);
        assert_eq!(h.ops()[0].client, 2);
        assert!(h.ops()[1].invoked <= h.ops()[0].invoked);
        assert!(h.ops().iter().all(|o| o.invoked <= o.completed));
        assert!(h.validate().is_ok());
    }

    #[test]
    fn failed_calls_are_dropped_and_abandoned_ones_unknown() {
        let r = Recorder::system_clock();
        r.invoke(1, Call::Delete { key: b"k".to_vec() })
            .failed("conflict");
        drop(r.invoke(2, Call::Delete { key: b"k".to_vec() }));
        let h = r.history();
        assert_eq!(h.len(), 1);
        assert_eq!(h.ops()[0].client, 2);
        assert_eq!(h.ops()[0].outcome, Outcome::Unknown);
        assert_eq!(r.dropped().len(), 1);
        assert_eq!(r.dropped()[0].reason, "conflict");
        // System-clock times are since the epoch.
        assert!(h.ops()[0].invoked > 1_600_000_000 * 1_000_000_000);
    }
}
