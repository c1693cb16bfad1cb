//! Durable queues, as a layer of keys over the same keyspace.
//!
//! A message is `q` id → its record, plus an index entry `r` ready-at id. Leasing a message
//! is a commit that moves its index entry to `now + visibility timeout` and stamps the
//! record with a lease token (the lease's own commit version). So:
//!
//! * an expired lease needs no timer: the message simply becomes ready again;
//! * ack and nack name the token, and fail with [`crate::EngineError::LeaseLost`] if the
//!   message was leased again meanwhile;
//! * everything, leases included, survives a restart, and no lease outlives its timeout.
//!
//! Every delivery counts as an attempt. A message is delivered at most
//! `backoff_schedule.len() + 1` times; a nack waits out the next backoff step; when the
//! schedule is exhausted (by nacks or by expired leases) the payload is written to the
//! dead-letter keys in a commit and the message is removed.

use std::fmt;

use crate::value::{Encoding, Value};

/// The delays between attempts when an enqueue names none, in ms.
pub const DEFAULT_BACKOFF: [u32; 5] = [100, 1000, 5000, 30000, 60000];

/// A message's identity: the versionstamp of the commit that enqueued it, then its index.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(pub [u8; 12]);

impl MessageId {
    /// The `index`-th message enqueued by the commit stamped `vs`.
    pub fn new(vs: crate::Versionstamp, index: u16) -> Self {
        let mut id = [0u8; 12];
        id[..10].copy_from_slice(&vs.0);
        id[10..].copy_from_slice(&index.to_be_bytes());
        MessageId(id)
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 24 || !s.is_ascii() {
            return None;
        }
        let mut b = [0u8; 12];
        for (i, out) in b.iter_mut().enumerate() {
            *out = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()?;
        }
        Some(MessageId(b))
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", self.to_hex())
    }
}

/// A leased message. Ack or nack it with its `lease` before `lease_expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    pub id: MessageId,
    pub payload: Value,
    /// 1 on first delivery.
    pub attempt: u32,
    /// Proof of the lease for ack and nack.
    pub lease: u64,
    /// ms since the epoch when the message becomes ready again unless acked.
    pub lease_expires_at: u64,
}

/// A queued message as a copy or import carries it (see [`crate::Database::restore`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreMessage {
    pub payload: Value,
    /// When it becomes deliverable, ms since the epoch.
    pub ready_at: u64,
    /// Deliveries already made.
    pub attempts: u32,
    pub dead_letter_keys: Vec<Vec<u8>>,
    pub backoff_schedule: Vec<u32>,
    /// A dead letter: when the queue gave up on it (ms since the epoch). It is restored to
    /// the dead letters, not to the queue.
    pub given_up_at: Option<u64>,
}

/// A message as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MessageRecord {
    pub ready_at: u64,
    pub attempts: u32,
    pub lease: u64,
    pub payload: Value,
    pub dead_letter_keys: Vec<Vec<u8>>,
    pub backoff: Vec<u32>,
}

const FORMAT: u8 = 1;

impl MessageRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(32 + self.payload.data.len());
        b.push(FORMAT);
        b.extend_from_slice(&self.ready_at.to_be_bytes());
        b.extend_from_slice(&self.attempts.to_be_bytes());
        b.extend_from_slice(&self.lease.to_be_bytes());
        b.push(self.payload.encoding.tag());
        b.extend_from_slice(&(self.backoff.len() as u16).to_be_bytes());
        for d in &self.backoff {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend_from_slice(&(self.dead_letter_keys.len() as u16).to_be_bytes());
        for k in &self.dead_letter_keys {
            b.extend_from_slice(&(k.len() as u32).to_be_bytes());
            b.extend_from_slice(k);
        }
        b.extend_from_slice(&self.payload.data);
        b
    }

    pub(crate) fn decode(b: &[u8]) -> Option<Self> {
        let mut r = Reader(b);
        if r.take(1)?[0] != FORMAT {
            return None;
        }
        let ready_at = u64::from_be_bytes(r.take(8)?.try_into().ok()?);
        let attempts = u32::from_be_bytes(r.take(4)?.try_into().ok()?);
        let lease = u64::from_be_bytes(r.take(8)?.try_into().ok()?);
        let encoding = Encoding::from_tag(r.take(1)?[0])?;
        let nb = u16::from_be_bytes(r.take(2)?.try_into().ok()?) as usize;
        let mut backoff = Vec::with_capacity(nb);
        for _ in 0..nb {
            backoff.push(u32::from_be_bytes(r.take(4)?.try_into().ok()?));
        }
        let nd = u16::from_be_bytes(r.take(2)?.try_into().ok()?) as usize;
        let mut dead_letter_keys = Vec::with_capacity(nd);
        for _ in 0..nd {
            let len = u32::from_be_bytes(r.take(4)?.try_into().ok()?) as usize;
            dead_letter_keys.push(r.take(len)?.to_vec());
        }
        Some(MessageRecord {
            ready_at,
            attempts,
            lease,
            payload: Value {
                encoding,
                data: r.0.to_vec(),
            },
            dead_letter_keys,
            backoff,
        })
    }

    /// Whether another delivery is allowed after `attempts` deliveries.
    pub(crate) fn may_deliver_again(&self) -> bool {
        (self.attempts as usize) <= self.backoff.len()
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_records_round_trip() {
        let m = MessageRecord {
            ready_at: 123,
            attempts: 2,
            lease: 9,
            payload: Value::v8(vec![1, 2, 3]),
            dead_letter_keys: vec![b"dlq".to_vec(), vec![]],
            backoff: vec![10, 20],
        };
        assert_eq!(MessageRecord::decode(&m.encode()), Some(m.clone()));
        let enc = m.encode();
        for cut in 0..30 {
            // Truncations never panic.
            let _ = MessageRecord::decode(&enc[..cut.min(enc.len())]);
        }
    }

    #[test]
    fn message_ids_print_as_hex() {
        let id = MessageId([0xab; 12]);
        assert_eq!(MessageId::from_hex(&id.to_hex()), Some(id));
    }
}
