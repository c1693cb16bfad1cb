//! A check of every frontend message's framing before the protocol library decodes it.
//!
//! The library's decoders trust a message's declared length and read its fields without
//! bounds checks, so a truncated or lying message could make a decoder panic. This layer
//! sits between the socket and the decoder: it reads whole messages, checks each against
//! the layout the protocol documents (lengths, counts, terminated strings), and releases
//! only checked messages. A message that fails the check, or is longer than the limit,
//! ends the connection with an error instead; nothing of it reaches a decoder.
//!
//! It also coalesces the answers. The protocol library flushes after every message it
//! sends; a prepared statement's round trip (Bind, Describe, Execute, Sync) would cost four
//! writes, and the client four wake-ups. Here writes collect in a buffer that goes out in
//! one write when the server next waits for the client (a read that has to go to the
//! socket), when it grows past [`OUT_HIGH`], and when the connection closes — so every
//! answer a client waits for is on the wire before the server waits in turn.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest message a client may send (a query text, a Bind with its values).
pub const MAX_MESSAGE: usize = 64 << 20;
/// The largest startup message (PostgreSQL's own limit).
const MAX_STARTUP: usize = 10_000;
/// Answers are written out once this many bytes wait (and whenever the server waits).
pub const OUT_HIGH: usize = 64 << 10;

/// Why a message was refused.
#[derive(Debug)]
pub struct Refused {
    pub sqlstate: &'static str,
    pub message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refused {}

fn refuse(sqlstate: &'static str, message: impl Into<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        Refused {
            sqlstate,
            message: message.into(),
        },
    )
}

/// A socket whose reads yield only whole, well-formed frontend messages.
pub struct Guarded<S> {
    inner: S,
    buf: BytesMut,
    /// Bytes at the front of `buf` already checked, to hand out.
    checked: usize,
    /// Past the startup message: every message now starts with its type byte.
    typed: bool,
    /// Answers not yet written to `inner`.
    out: BytesMut,
}

impl<S> Guarded<S> {
    /// `pending` are bytes already read from `inner` (and not yet checked).
    pub fn new(inner: S, pending: BytesMut) -> Guarded<S> {
        Guarded {
            inner,
            buf: pending,
            checked: 0,
            typed: false,
            out: BytesMut::new(),
        }
    }

    /// Check the message at the front of the unchecked bytes, if it is all there.
    fn check_next(&mut self) -> io::Result<bool> {
        let rest = &self.buf[self.checked..];
        let (header, limit) = if self.typed {
            (5, MAX_MESSAGE)
        } else {
            (4, MAX_STARTUP)
        };
        if rest.len() < header {
            return Ok(false);
        }
        let len_at = header - 4;
        let declared = i32::from_be_bytes([
            rest[len_at],
            rest[len_at + 1],
            rest[len_at + 2],
            rest[len_at + 3],
        ]);
        let min = if self.typed { 4 } else { 8 };
        if declared < min {
            return Err(refuse(
                "08P01",
                format!("invalid message length {declared}"),
            ));
        }
        let declared = declared as usize;
        if declared > limit {
            return Err(refuse(
                "54000",
                format!("message of {declared} bytes exceeds the limit of {limit} bytes"),
            ));
        }
        let total = len_at + declared;
        if rest.len() < total {
            return Ok(false);
        }
        let body = &rest[header..total];
        if self.typed {
            check_typed(rest[0], body)?;
        } else {
            check_startup(body)?;
            self.typed = true;
        }
        self.checked += total;
        Ok(true)
    }
}

/// The body of a typed message, by its type.
fn check_typed(ty: u8, body: &[u8]) -> io::Result<()> {
    let mut r = Reader { b: body };
    let ok = match ty {
        b'Q' | b'f' => r.cstr() && r.end(),
        b'P' => {
            r.cstr() && r.cstr() && {
                let n = r.i16();
                n.is_some_and(|n| n >= 0 && (0..n).all(|_| r.i32().is_some())) && r.end()
            }
        }
        b'B' => {
            r.cstr()
                && r.cstr()
                && r.i16s()
                && match r.i16() {
                    Some(n) if n >= 0 => (0..n).all(|_| match r.i32() {
                        Some(-1) => true,
                        Some(len) if len >= 0 => r.skip(len as usize),
                        _ => false,
                    }),
                    _ => false,
                }
                && r.i16s()
                && r.end()
        }
        b'E' => r.cstr() && r.i32().is_some() && r.end(),
        b'D' | b'C' => matches!(r.u8(), Some(b'S' | b'P')) && r.cstr() && r.end(),
        b'S' | b'H' | b'X' | b'c' => r.end(),
        // Password, SASL initial response and SASL response share the type; their
        // content is checked by the authentication exchange.
        b'p' | b'd' => true,
        _ => {
            return Err(refuse(
                "08P01",
                format!("invalid frontend message type {:?}", ty as char),
            ))
        }
    };
    if ok {
        Ok(())
    } else {
        Err(refuse(
            "08P01",
            format!("malformed {:?} message", ty as char),
        ))
    }
}

/// A startup message (protocol version and name/value pairs), or a cancel, SSL or GSS
/// request.
fn check_startup(body: &[u8]) -> io::Result<()> {
    let mut r = Reader { b: body };
    let ok = match r.i32() {
        // Cancel: process id and secret key (4 bytes in protocol 3.0, up to 256 in 3.2).
        Some(80877102) => body.len() >= 8,
        Some(80877103) | Some(80877104) => r.end(),
        Some(v) if v >> 16 == 3 => {
            // Pairs of strings, then a terminating NUL.
            let mut fine = true;
            while fine && r.b.len() > 1 {
                fine = r.cstr() && r.cstr();
            }
            fine && r.b == [0]
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(refuse("08P01", "invalid startup packet layout"))
    }
}

struct Reader<'a> {
    b: &'a [u8],
}

impl Reader<'_> {
    fn cstr(&mut self) -> bool {
        match self.b.iter().position(|c| *c == 0) {
            Some(n) => {
                self.b = &self.b[n + 1..];
                true
            }
            None => false,
        }
    }
    fn u8(&mut self) -> Option<u8> {
        let (first, rest) = self.b.split_first()?;
        self.b = rest;
        Some(*first)
    }
    fn i16(&mut self) -> Option<i16> {
        let v = self.b.get(..2)?;
        let v = i16::from_be_bytes([v[0], v[1]]);
        self.b = &self.b[2..];
        Some(v)
    }
    fn i32(&mut self) -> Option<i32> {
        let v = self.b.get(..4)?;
        let v = i32::from_be_bytes([v[0], v[1], v[2], v[3]]);
        self.b = &self.b[4..];
        Some(v)
    }
    /// A count, then that many int16s.
    fn i16s(&mut self) -> bool {
        match self.i16() {
            Some(n) if n >= 0 => (0..n).all(|_| self.i16().is_some()),
            _ => false,
        }
    }
    fn skip(&mut self, n: usize) -> bool {
        if self.b.len() < n {
            return false;
        }
        self.b = &self.b[n..];
        true
    }
    fn end(&self) -> bool {
        self.b.is_empty()
    }
}

impl<S: AsyncWrite + Unpin> Guarded<S> {
    /// Write every waiting answer to the socket and flush it.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.out) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the client stopped reading",
                    )))
                }
                Poll::Ready(Ok(n)) => self.out.advance(n),
            }
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.checked > 0 {
                let n = this.checked.min(out.remaining());
                out.put_slice(&this.buf[..n]);
                this.buf.advance(n);
                this.checked -= n;
                return Poll::Ready(Ok(()));
            }
            if this.check_next()? {
                continue;
            }
            // The server is about to wait for the client: everything it answered goes out
            // first.
            if !this.out.is_empty() {
                match this.poll_drain(cx) {
                    Poll::Ready(Ok(())) => {}
                    other => return other,
                }
            }
            // Need more bytes.
            this.buf.reserve(8192);
            let spare = this.buf.spare_capacity_mut();
            let mut read = ReadBuf::uninit(spare);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let n = read.filled().len();
                    if n == 0 {
                        // End of input; a message cut short there is dropped.
                        return Poll::Ready(Ok(()));
                    }
                    // SAFETY: `n` bytes of the spare capacity were initialised by the read.
                    unsafe { this.buf.set_len(this.buf.len() + n) };
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.out.len() >= OUT_HIGH {
            match this.poll_drain(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        this.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    /// Writes out only past [`OUT_HIGH`]; the rest waits for the next read (see the module
    /// comment) or the close.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.out.len() >= OUT_HIGH {
            return this.poll_drain(cx);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_messages_pass_and_broken_ones_do_not() {
        let parse = [
            b"s\0SELECT $1\0".as_slice(),
            &1i16.to_be_bytes(),
            &20i32.to_be_bytes(),
        ]
        .concat();
        assert!(check_typed(b'P', &parse).is_ok());
        assert!(check_typed(b'P', &parse[..parse.len() - 1]).is_err());
        assert!(check_typed(b'P', b"s\0SELECT 1").is_err());
        let bind = [
            b"\0s\0".as_slice(),
            &0i16.to_be_bytes(),
            &1i16.to_be_bytes(),
            &3i32.to_be_bytes(),
            b"abc",
            &0i16.to_be_bytes(),
        ]
        .concat();
        assert!(check_typed(b'B', &bind).is_ok());
        let mut lying = bind.clone();
        lying[7..11].copy_from_slice(&300i32.to_be_bytes());
        assert!(check_typed(b'B', &lying).is_err());
        assert!(check_typed(b'E', b"\0\0\0\0\0").is_ok());
        assert!(check_typed(b'E', b"\0\0\0").is_err());
        assert!(check_typed(b'D', b"Sx\0").is_ok());
        assert!(check_typed(b'D', b"Zx\0").is_err());
        assert!(check_typed(b'S', b"").is_ok());
        assert!(check_typed(b'S', b"x").is_err());
        assert!(check_typed(b'Z', b"").is_err());
        let startup = [196608i32.to_be_bytes().as_slice(), b"user\0u\0\0"].concat();
        assert!(check_startup(&startup).is_ok());
        assert!(check_startup(&startup[..startup.len() - 1]).is_err());
        assert!(check_startup(&80877103i32.to_be_bytes()).is_ok());
    }

    /// A socket that keeps each write it is given, with nothing to read.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        shut: bool,
    }

    impl AsyncRead for Recorder {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.shut = true;
            Poll::Ready(Ok(()))
        }
    }

    fn write(g: &mut Guarded<Recorder>, cx: &mut Context<'_>, bytes: &[u8]) {
        assert!(matches!(
            Pin::new(&mut *g).poll_write(cx, bytes),
            Poll::Ready(Ok(n)) if n == bytes.len()
        ));
        assert!(matches!(
            Pin::new(&mut *g).poll_flush(cx),
            Poll::Ready(Ok(()))
        ));
    }

    #[test]
    fn answers_wait_for_the_next_read_or_the_limit_or_the_close() {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut g = Guarded::new(Recorder::default(), BytesMut::new());
        // Three answers, each flushed: nothing reaches the socket yet...
        for m in [b"1\0\0\0\x04".as_slice(), b"2\0\0\0\x04", b"Z\0\0\0\x05I"] {
            write(&mut g, &mut cx, m);
        }
        assert!(g.inner.writes.is_empty());
        // ...until the server waits for the client: then all of them, in one write.
        let mut space = [0u8; 16];
        let mut buf = ReadBuf::new(&mut space);
        assert!(Pin::new(&mut g).poll_read(&mut cx, &mut buf).is_pending());
        assert_eq!(
            g.inner.writes,
            vec![b"1\0\0\0\x042\0\0\0\x04Z\0\0\0\x05I".to_vec()]
        );
        // A large answer goes out once the limit is reached, without waiting for a read.
        write(&mut g, &mut cx, &vec![b'D'; OUT_HIGH]);
        assert_eq!(g.inner.writes.len(), 2);
        assert_eq!(g.inner.writes[1].len(), OUT_HIGH);
        // What is left goes out at the close.
        write(&mut g, &mut cx, b"C");
        assert_eq!(g.inner.writes.len(), 2);
        assert!(matches!(
            Pin::new(&mut g).poll_shutdown(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(g.inner.writes.last().unwrap(), b"C");
        assert!(g.inner.shut);
    }
}
