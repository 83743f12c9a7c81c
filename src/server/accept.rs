//! The accept loop and the per-connection HTTP settings: HTTP/1 and HTTP/2
//! (h2c prior knowledge) on one port, the header-read timeout, and graceful
//! shutdown of every connection. Hand-rolled on hyper-util instead of
//! `axum::serve`, which sets no timer and so cannot time out a client that
//! never finishes its request head (slow-loris).
//! With TLS (`server::tls`) the handshake comes first, bounded by the same
//! header-read timeout; HTTP/1 or HTTP/2 then follows ALPN's choice.
//! A plain connection's protocol is decided on its first bytes peeked (not
//! read) where they settle it, so HTTP/1 starts with all of them in one
//! read buffer that keeps its initial size.
//! It serves whatever router it is given; it knows nothing about requests
//! beyond telling each one its peer's address ([`ClientAddress`]).

use super::tls::ListenerTls;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::time::Sleep;

/// The shortest wait for an HTTP/2 ping's ack: a healthy client on a busy
/// machine can take longer than a tight `header_read_timeout` to answer,
/// and dropping it fails every request on its connection at once.
const H2_PING_ACK_FLOOR: Duration = Duration::from_secs(2);

/// The address of the peer that sent a request, in its extensions (the
/// load balancer's, behind one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub std::net::IpAddr);

/// What a connection is allowed, from the validated config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnLimits {
    pub header_read_timeout: Duration,
    /// A write to the client that makes no progress this long fails, and
    /// hyper closes the connection.
    pub write_timeout: Duration,
    /// `SO_SNDBUF` of each accepted socket.
    pub send_buffer: usize,
    /// hyper's head buffer (see `head_limit::transport_ceiling`).
    pub max_head_buffer: usize,
    /// Connections served at once; one more gets [`OVERLOADED`] and is closed.
    pub max_connections: u32,
}

/// The connection slots of one port, shared by every thread accepting on it
/// (one `SO_REUSEPORT` listener per thread), so `max_connections` bounds the
/// process, not each thread.
pub(crate) type ConnectionSlots = std::sync::Arc<tokio::sync::Semaphore>;

/// The answer to a connection beyond `max_connections`: an HTTP/1 503 in
/// OpenAI's error shape, then the connection is closed. Written once the
/// request head is in (clients reject an answer that comes before their
/// request), without parsing it.
const OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 145\r\n\r\n{\"error\":{\"message\":\"the gateway is serving its maximum number of connections (server.max_connections)\",\"type\":\"overloaded\",\"code\":\"overloaded\"}}";

/// How much of a refused connection's request head is read at most.
const REFUSAL_READ_LIMIT: usize = 16 << 10;

/// Tells a connection over the limit so, within a second, and closes it.
fn refuse(mut tcp: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let mut head = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            while head.len() < REFUSAL_READ_LIMIT
                && memchr::memmem::find(&head, b"\r\n\r\n").is_none()
            {
                match tcp.read(&mut chunk).await {
                    Ok(n) if n > 0 => head.extend_from_slice(&chunk[..n]),
                    _ => break,
                }
            }
            let _ = tcp.write_all(OVERLOADED).await;
            let _ = tcp.shutdown().await;
            // Drain what the client still sends until it closes: closing
            // with unread bytes would reset the connection and lose the answer.
            while matches!(tcp.read(&mut chunk).await, Ok(n) if n > 0) {}
        })
        .await;
    });
}

/// Accepts until `stop` resolves, then stops accepting and returns a handle
/// that finishes every open connection gracefully. With `tls`, each
/// connection first completes a TLS handshake with the listener's config
/// current at its accept, within the header-read timeout.
pub(crate) async fn accept_until(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    slots: ConnectionSlots,
    tls: Option<Arc<ListenerTls>>,
    stop: impl Future<Output = ()>,
) -> GracefulShutdown {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_head_buffer);
    // The HTTP/2 counterpart: a peer that stops answering pings (a client
    // that sent the preface and went silent) is dropped. Pings go out every
    // header-read timeout; the ack may take up to H2_PING_ACK_FLOOR more.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.header_read_timeout)
        .keep_alive_timeout(limits.header_read_timeout.max(H2_PING_ACK_FLOOR))
        .max_header_list_size(u32::try_from(limits.max_head_buffer).unwrap_or(u32::MAX));
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Typically fd exhaustion: back off instead of spinning
                    // until connections close.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                        () = &mut stop => break,
                    }
                }
            },
            () = &mut stop => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(
                max_connections = limits.max_connections,
                "connection refused: at max_connections"
            );
            // A TLS client could not read a plain answer; it is closed.
            if tls.is_none() {
                refuse(tcp);
            }
            continue;
        };
        // Small SSE events must not wait for Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        // A fixed send buffer instead of the kernel's autotuning (up to
        // `tcp_wmem`'s 4 MiB): a client that stops reading can make the
        // kernel hold, and the gateway produce, only this much for it.
        let _ = socket2::SockRef::from(&tcp).set_send_buffer_size(limits.send_buffer);
        let acceptor = tls
            .as_ref()
            .map(|t| tokio_rustls::TlsAcceptor::from(t.config()));
        let connection = Accepted {
            tcp: write_stall_limited(tcp, limits.write_timeout),
            client: ClientAddress(peer.ip()),
            slot,
            acceptor,
        };
        let timeout = limits.header_read_timeout;
        spawn_connection(connection, &app, &builder, graceful.watcher(), timeout);
    }
    graceful
}

/// An accepted socket, its writes bounded ([`write_stall_limited`]).
type Tcp = Pin<Box<tokio_io_timeout::TimeoutStream<tokio::net::TcpStream>>>;

/// A connection taken in, with its slot, about to be served.
struct Accepted {
    tcp: Tcp,
    client: ClientAddress,
    slot: tokio::sync::OwnedSemaphorePermit,
    /// The listener's TLS, as current when the connection arrived.
    acceptor: Option<tokio_rustls::TlsAcceptor>,
}

/// Serves `conn` on a task of its own until it ends (or, once `watcher`
/// says so, gracefully): the TLS handshake first when the listener has
/// TLS, then HTTP/1 or HTTP/2 with the protocol sniffed within `timeout`.
fn spawn_connection(
    conn: Accepted,
    app: &Router,
    builder: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
    timeout: Duration,
) {
    let Accepted {
        tcp,
        client,
        slot,
        acceptor,
    } = conn;
    let app = app.clone();
    let service = hyper::service::service_fn(move |mut request| {
        request.extensions_mut().insert(client);
        // A router is always ready; hyper-util's adapter also clones per call.
        tower::Service::call(&mut app.clone(), request)
    });
    let builder = builder.clone();
    let task = async move {
        let _slot = slot;
        let result = match acceptor {
            None => serve_plain(tcp, service, builder, watcher, timeout).await,
            // Boxed: a TLS connection's handshake and stream would make
            // every connection's task this much larger.
            Some(acceptor) => {
                Box::pin(serve_tls(acceptor, tcp, service, builder, watcher, timeout)).await
            }
        };
        if let Err(e) = result {
            // Clients vanishing, timing out or speaking garbage is routine.
            tracing::trace!(error = %e, "connection ended with an error");
        }
    };
    tokio::spawn(task);
}

type ConnResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Serves a plain connection. Its protocol is decided on bytes peeked, not
/// read, where they suffice: hyper-util's own sniffing hands HTTP/1 the
/// bytes it read apart from the rest, and hyper's read buffer then grows
/// from 8 to 16 KiB on its second read. Measured: ~3.7 KiB less resident
/// memory per held stream (`BENCHMARKS.md`, "Memory per held stream").
async fn serve_plain<S>(
    tcp: Tcp,
    service: S,
    builder: auto::Builder<TokioExecutor>,
    watcher: Watcher,
    timeout: Duration,
) -> ConnResult
where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut io = SniffDeadline::new(tcp, timeout);
    let builder = match io.peek_protocol().await? {
        Some(Protocol::Http1) => builder.http1_only(),
        Some(Protocol::Http2) => builder.http2_only(),
        _ => builder,
    };
    watcher
        .watch(builder.serve_connection(TokioIo::new(io), service))
        .await
}

/// Serves a TLS connection: the handshake, then the protocol sniffed.
async fn serve_tls<S>(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: Tcp,
    service: S,
    builder: auto::Builder<TokioExecutor>,
    watcher: Watcher,
    timeout: Duration,
) -> ConnResult
where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let Some(tls) = handshake(acceptor, tcp, timeout).await else {
        return Ok(());
    };
    let io = TokioIo::new(SniffDeadline::new(tls, timeout));
    watcher.watch(builder.serve_connection(io, service)).await
}

/// The TLS handshake of `tcp`, bounded by `timeout` (the header-read
/// timeout: a client that opens a connection and stalls in the handshake is
/// a slow-loris too). `None`: it failed or timed out (routine, traced).
async fn handshake<T: AsyncRead + AsyncWrite + Unpin>(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: T,
    timeout: Duration,
) -> Option<tokio_rustls::server::TlsStream<T>> {
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake not finished within the header-read timeout");
            None
        }
    }
}

/// `tcp` with its writes bounded: one that stays pending for `limit` fails
/// with `TimedOut`. A client that stops reading fills its socket's buffers;
/// hyper then waits on the write and no longer polls the response body, so
/// the relay's own write timeout can free the upstream but never reaches the
/// connection: without this the socket, its kernel buffers (megabytes on
/// loopback) and hyper's write buffer stayed until the client went away.
fn write_stall_limited(tcp: tokio::net::TcpStream, limit: Duration) -> Tcp {
    let mut tcp = tokio_io_timeout::TimeoutStream::new(tcp);
    tcp.set_write_timeout(Some(limit));
    Box::pin(tcp)
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol a connection's first bytes settle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// What `first` (a connection's first bytes) settles: a byte off the
/// HTTP/2 preface means HTTP/1, the whole preface HTTP/2; `None` while
/// they still match a part of it (or there are none).
fn sniffed(first: &[u8]) -> Option<Protocol> {
    let common = first.len().min(H2_PREFACE.len());
    if first[..common] != H2_PREFACE[..common] {
        Some(Protocol::Http1)
    } else if common == H2_PREFACE.len() {
        Some(Protocol::Http2)
    } else {
        None
    }
}

/// Fails a connection's reads once its deadline passes while the protocol
/// is still undecided. hyper-util tells HTTP/1 from HTTP/2 by reading until
/// the bytes stop matching the HTTP/2 preface, without a timeout of its own,
/// and hyper's HTTP/1 header timer only starts after that: without this, a
/// client that connects and sends nothing (or the preface a byte a minute)
/// would hold its socket forever. Disarmed for good once the protocol is
/// known, so it costs nothing afterwards.
struct SniffDeadline<T> {
    inner: T,
    deadline: Option<Pin<Box<Sleep>>>,
    /// Bytes read so far, all matching the preface.
    matched: usize,
}

impl<T> SniffDeadline<T> {
    fn new(inner: T, limit: Duration) -> Self {
        SniffDeadline {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(limit))),
            matched: 0,
        }
    }

    /// Whether the bytes read so far settle the protocol (the same rule as
    /// hyper-util's sniffing: a mismatch, the whole preface, or EOF).
    fn decided_by(&mut self, new: &[u8]) -> bool {
        if new.is_empty() {
            return true;
        }
        let expected = H2_PREFACE.get(self.matched..).unwrap_or_default();
        if expected.iter().zip(new).any(|(a, b)| a != b) || new.len() >= expected.len() {
            return true;
        }
        self.matched += new.len();
        false
    }
}

impl SniffDeadline<Tcp> {
    /// The protocol the first bytes the client sent settle, peeked without
    /// consuming them, once some arrived; `None` when they do not settle it
    /// (hyper-util's reads then do). Fails at the deadline.
    async fn peek_protocol(&mut self) -> io::Result<Option<Protocol>> {
        let mut first = [0u8; H2_PREFACE.len()];
        let Some(deadline) = self.deadline.as_ref().map(|d| d.deadline()) else {
            return Ok(None);
        };
        match tokio::time::timeout_at(deadline, self.inner.get_ref().peek(&mut first)).await {
            Ok(peeked) => Ok(sniffed(&first[..peeked?])),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no request within the header-read timeout",
            )),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SniffDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let Some(deadline) = self.deadline.as_mut() else {
            return poll;
        };
        match poll {
            Poll::Ready(Ok(())) => {
                let new = buf.filled().get(before..).unwrap_or_default();
                if self.decided_by(new) {
                    self.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if deadline.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request within the header-read timeout",
                )))
            }
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SniffDeadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn sniffer() -> SniffDeadline<tokio::io::Empty> {
        SniffDeadline::new(tokio::io::empty(), Duration::from_secs(1))
    }

    #[test]
    fn peeked_bytes_decide_like_the_sniffer() {
        assert_eq!(sniffed(b"POST /v1/chat"), Some(Protocol::Http1));
        assert_eq!(sniffed(b"GET"), Some(Protocol::Http1));
        assert_eq!(sniffed(b"P"), None, "POST and PRI share a P");
        assert_eq!(sniffed(b"PRI * HTTP/2.0"), None);
        assert_eq!(sniffed(b""), None, "nothing yet");
        assert_eq!(sniffed(H2_PREFACE), Some(Protocol::Http2));
        let mut more = H2_PREFACE.to_vec();
        more.extend_from_slice(b"\0\0");
        assert_eq!(sniffed(&more), Some(Protocol::Http2));
    }

    #[tokio::test]
    async fn protocol_is_decided_like_hyper_util() {
        let mut s = sniffer();
        assert!(s.decided_by(b"GET / HTTP/1.1\r\n"), "HTTP/1 at once");
        let mut s = sniffer();
        assert!(!s.decided_by(b"P"), "POST and PRI share a P");
        assert!(s.decided_by(b"O"), "POST");
        let mut s = sniffer();
        for &b in H2_PREFACE.iter().take(H2_PREFACE.len() - 1) {
            assert!(!s.decided_by(&[b]), "undecided inside the preface");
        }
        assert!(s.decided_by(b"\n"), "the whole preface");
        let mut s = sniffer();
        assert!(!s.decided_by(b"PRI * HTTP/2.0"));
        assert!(s.decided_by(b""), "EOF");
        let mut s = sniffer();
        assert!(s.decided_by(H2_PREFACE), "preface in one read");
    }

    #[tokio::test(start_paused = true)]
    async fn silent_connection_times_out() {
        let (client, server) = tokio::io::duplex(64);
        let mut s = SniffDeadline::new(server, Duration::from_secs(5));
        let mut buf = [0u8; 8];
        let err = s.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn decided_connection_never_times_out() {
        use tokio::io::AsyncWriteExt;
        let (mut client, server) = tokio::io::duplex(64);
        let mut s = SniffDeadline::new(server, Duration::from_secs(5));
        client.write_all(b"GET").await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(s.read(&mut buf).await.unwrap(), 3);
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            client.write_all(b" /").await.unwrap();
            client
        });
        assert_eq!(s.read(&mut buf).await.unwrap(), 2);
        drop(late.await.unwrap());
    }
}
