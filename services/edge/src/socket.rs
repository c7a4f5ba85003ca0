//! The edge's client sockets: what `axum::serve` accepts and hyper, then the
//! WebSocket, read from and write to. A thin layer over `TcpStream` that saves
//! system calls on the hot path without holding memory for idle connections:
//!
//! * **Read-ahead.** tungstenite reads at most its read-buffer size per call
//!   (1 KiB here, so that an idle connection costs little: see `http`), which
//!   is five reads for a 4.5 KB offer, and hyper reads the first 24 bytes of a
//!   request on their own to tell HTTP/2 from HTTP/1. Every read here takes
//!   whatever the socket holds (up to [`SCRATCH`]) into a buffer shared by the
//!   thread, hands the reader what it asked for and keeps the rest for its next
//!   reads, in a buffer allocated only while it holds something.
//! * **Upgrade coalescing.** The `101 Switching Protocols` response is held
//!   back and goes out with the first WebSocket frame (the welcome), in one
//!   write and one TCP segment instead of two. Every path after an upgrade
//!   writes a frame: the welcome, a close frame, or, when the room takes more
//!   than 100 ms to take the session, a ping (`connection`).
//! * **`TCP_NODELAY`** is set on every accepted socket: a frame goes out when it
//!   is written. (Set on the listening socket instead, which Linux copies to
//!   the accepted ones, it saved a system call but cost ~0.2 KiB more RSS per
//!   idle connection, measured and not understood.)

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// The most one read takes from a socket (the largest client frame is bounded
/// by `max_message_bytes`, 64 KiB by default; a larger one takes more reads).
const SCRATCH: usize = 64 * 1024;

/// How an upgrade response starts (the only 101 this server sends).
const SWITCHING_PROTOCOLS: &[u8] = b"HTTP/1.1 101 ";

thread_local! {
    /// Where every socket on this thread reads into first.
    static SCRATCH_BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH]);
}

/// The edge's listener: accepts [`ClientSocket`]s.
#[derive(Debug)]
pub(crate) struct ClientListener(pub(crate) TcpListener);

impl Listener for ClientListener {
    type Io = ClientSocket;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (tcp, addr) = Listener::accept(&mut self.0).await;
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "could not set TCP_NODELAY");
        }
        (ClientSocket::new(tcp), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// One client's TCP connection (see the module docs).
#[derive(Debug)]
pub(crate) struct ClientSocket {
    tcp: TcpStream,
    /// Read from the socket, not yet taken by the reader (empty, unallocated,
    /// most of the time).
    ahead: Pending,
    /// The upgrade response, until it goes out with the next write.
    held: Pending,
    /// A 101 was seen: later writes are never held.
    upgraded: bool,
}

impl ClientSocket {
    fn new(tcp: TcpStream) -> Self {
        Self {
            tcp,
            ahead: Pending::default(),
            held: Pending::default(),
            upgraded: false,
        }
    }

    /// Holds the upgrade response, or writes what is held together with
    /// `bufs`; `None` when neither applies and `bufs` are to be written as
    /// they are.
    fn hold_or_flush_held(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Option<Poll<io::Result<usize>>> {
        if !self.upgraded
            && bufs
                .first()
                .is_some_and(|b| b.starts_with(SWITCHING_PROTOCOLS))
        {
            self.upgraded = true;
            for buf in bufs {
                self.held.keep(buf);
            }
            return Some(Poll::Ready(Ok(self.held.len())));
        }
        while !self.held.is_empty() {
            let mut slices = Vec::with_capacity(bufs.len() + 1);
            slices.push(IoSlice::new(self.held.as_slice()));
            slices.extend(bufs.iter().map(|b| IoSlice::new(b)));
            let n = match Pin::new(&mut self.tcp).poll_write_vectored(cx, &slices) {
                Poll::Ready(Ok(n)) => n,
                other => return Some(other),
            };
            if n == 0 {
                return Some(Poll::Ready(Err(io::ErrorKind::WriteZero.into())));
            }
            let held = self.held.len();
            self.held.advance(n.min(held));
            if n > held {
                return Some(Poll::Ready(Ok(n - held)));
            }
        }
        None
    }
}

impl AsyncRead for ClientSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if !this.ahead.is_empty() {
            this.ahead.take_into(buf);
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() >= SCRATCH {
            return Pin::new(&mut this.tcp).poll_read(cx, buf);
        }
        SCRATCH_BUFFER.with_borrow_mut(|scratch| {
            let mut read = ReadBuf::new(scratch);
            ready!(Pin::new(&mut this.tcp).poll_read(cx, &mut read))?;
            let filled = read.filled();
            let now = filled.len().min(buf.remaining());
            buf.put_slice(&filled[..now]);
            this.ahead.keep(&filled[now..]);
            Poll::Ready(Ok(()))
        })
    }
}

impl AsyncWrite for ClientSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.hold_or_flush_held(cx, &[IoSlice::new(buf)]) {
            Some(written) => written,
            None => Pin::new(&mut self.tcp).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.hold_or_flush_held(cx, bufs) {
            Some(written) => written,
            None => Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    /// Does not flush a held upgrade response: the first frame takes it along.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    /// Sends what is held before shutting down.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // With nothing to add, this writes out what is held, if anything.
        if let Some(written) = self.hold_or_flush_held(cx, &[]) {
            ready!(written)?;
        }
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Bytes waiting to be taken, front first. A pointer while empty (most of
/// the time): an idle connection pays 8 bytes for it.
#[derive(Default)]
struct Pending(Option<Box<Stash>>);

/// A client's bytes are not for logs: only their count is shown.
impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pending({} bytes)", self.len())
    }
}

struct Stash {
    bytes: Vec<u8>,
    /// How many of `bytes` are taken already.
    taken: usize,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |b| b.bytes.len() - b.taken)
    }

    fn as_slice(&self) -> &[u8] {
        self.0.as_ref().map_or(&[], |b| &b.bytes[b.taken..])
    }

    fn keep(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let pending = self.0.get_or_insert_with(|| {
            Box::new(Stash {
                bytes: Vec::with_capacity(bytes.len()),
                taken: 0,
            })
        });
        pending.bytes.extend_from_slice(bytes);
    }

    /// Drops the first `n` bytes; frees the buffer once all are taken.
    fn advance(&mut self, n: usize) {
        if let Some(b) = &mut self.0 {
            b.taken += n;
            if b.taken >= b.bytes.len() {
                self.0 = None;
            }
        }
    }

    fn take_into(&mut self, buf: &mut ReadBuf<'_>) {
        let n = self.len().min(buf.remaining());
        buf.put_slice(&self.as_slice()[..n]);
        self.advance(n);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A connected pair over loopback: our side wrapped, the client's a
    /// plain blocking socket (its reads are real system calls).
    async fn pair() -> (ClientSocket, std::net::TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"));
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (server, _) = accepted.expect("accept");
        let client = client.expect("connect").into_std().expect("std socket");
        client.set_nonblocking(false).expect("blocking");
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        (ClientSocket::new(server), client)
    }

    /// The client reads exactly `len` bytes (or fails after its timeout).
    fn receive(client: &mut std::net::TcpStream, len: usize) -> Vec<u8> {
        let mut got = vec![0; len];
        std::io::Read::read_exact(client, &mut got).expect("bytes in time");
        got
    }

    /// Whether the client has anything to read, without waiting.
    fn has_received(client: &std::net::TcpStream) -> bool {
        client.set_nonblocking(true).expect("nonblocking");
        let got = match client.peek(&mut [0; 1]) {
            Ok(n) => n > 0,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => false,
            Err(err) => panic!("read failed: {err}"),
        };
        client.set_nonblocking(false).expect("blocking");
        got
    }

    /// Our side reads exactly `len` bytes, or fails after a deadline.
    async fn read_exactly(server: &mut ClientSocket, len: usize) -> Vec<u8> {
        let mut got = vec![0; len];
        tokio::time::timeout(Duration::from_secs(5), server.read_exact(&mut got))
            .await
            .expect("bytes in time")
            .expect("read");
        got
    }

    #[tokio::test]
    async fn a_small_read_takes_all_that_waits_and_keeps_the_rest() {
        let (mut server, mut client) = pair().await;
        let sent: Vec<u8> = (0..3000u32).map(|n| (n % 251) as u8).collect();
        std::io::Write::write_all(&mut client, &sent).expect("write");

        let first = read_exactly(&mut server, 1024).await;
        assert_eq!(first, sent[..1024]);
        // one read from the socket took everything; the rest waits here
        assert_eq!(server.ahead.len(), sent.len() - 1024);
        let rest = read_exactly(&mut server, sent.len() - 1024).await;
        assert_eq!(rest, sent[1024..]);
        assert!(server.ahead.is_empty(), "the buffer is freed once taken");

        std::io::Write::write_all(&mut client, b"more").expect("write");
        assert_eq!(read_exactly(&mut server, 4).await, b"more");
    }

    #[tokio::test]
    async fn the_upgrade_response_leaves_with_the_first_frame() {
        let (mut server, mut client) = pair().await;
        let response = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n";
        server.write_all(response).await.expect("write");
        server.flush().await.expect("flush");
        assert_eq!(server.held.len(), response.len());
        assert!(!has_received(&client), "the 101 is held");

        server.write_all(b"\x81\x02hi").await.expect("write");
        let got = receive(&mut client, response.len() + 4);
        assert_eq!(&got[..response.len()], response);
        assert_eq!(&got[response.len()..], b"\x81\x02hi");
        assert!(server.held.is_empty());

        // later writes are not held, even one that looks like a 101
        server.write_all(response).await.expect("write");
        assert_eq!(receive(&mut client, response.len()), response);
    }

    #[tokio::test]
    async fn a_held_response_and_a_large_frame_arrive_whole_and_in_order() {
        let (mut server, mut client) = pair().await;
        let response = b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec();
        server.write_all(&response).await.expect("write");
        // far more than the socket buffers take at once: written in parts
        let frame: Vec<u8> = (0..4_000_000u32).map(|n| (n % 253) as u8).collect();
        let writer = tokio::spawn({
            let frame = frame.clone();
            async move {
                server.write_all(&frame).await.expect("write");
                server.flush().await.expect("flush");
                server
            }
        });
        let total = response.len() + frame.len();
        let got = tokio::task::spawn_blocking(move || receive(&mut client, total))
            .await
            .expect("reader");
        assert_eq!(&got[..response.len()], response);
        assert!(
            got[response.len()..] == frame[..],
            "the frame arrives intact"
        );
        writer.await.expect("writer");
    }

    #[tokio::test]
    async fn any_other_response_is_written_at_once() {
        let (mut server, mut client) = pair().await;
        let response = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n";
        server.write_all(response).await.expect("write");
        assert_eq!(receive(&mut client, response.len()), response);
    }

    #[tokio::test]
    async fn a_held_response_is_sent_before_shutting_down() {
        let (mut server, mut client) = pair().await;
        let response = b"HTTP/1.1 101 Switching Protocols\r\n\r\n";
        server.write_all(response).await.expect("write");
        assert!(!has_received(&client));
        server.shutdown().await.expect("shutdown");
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut client, &mut got).expect("read");
        assert_eq!(got, response);
    }
}
