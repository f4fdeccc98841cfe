//! The HTTP listener with limits: at most `http.max_connections` connections at once (the
//! next waits in the kernel's backlog until one closes), and a connection that sends nothing
//! for `http.idle_timeout_ms` (an idle keep-alive, a client that never finishes its headers or
//! its body) is closed. Without them, idle or slow clients hold descriptors until the process
//! runs out and stops answering everyone.
//!
//! With TLS (`http.tls_cert`), every connection is a TLS one: its handshake runs beside the
//! accept loop (a slow client does not hold up the others) within `http.idle_timeout_ms`, with
//! its connection slot taken, so a client that never finishes the handshake is closed and
//! frees its slot like an idle one.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A TLS handshake under way: the stream once done, or why it failed; the peer either way.
type Handshake =
    Pin<Box<dyn Future<Output = (Result<TlsStream<LimitedStream>, String>, SocketAddr)> + Send>>;

/// A TCP listener handing out [`ApiStream`]s: plain, or TLS once the handshake is done.
pub struct LimitedListener {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    idle: Duration,
    /// When the last accept error was logged (errors are logged at most every 10 s).
    last_error_log: Option<Instant>,
    tls: Option<TlsAcceptor>,
    handshakes: FuturesUnordered<Handshake>,
}

impl fmt::Debug for LimitedListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitedListener")
            .field("inner", &self.inner)
            .field("idle", &self.idle)
            .field("tls", &self.tls.is_some())
            .field("handshakes", &self.handshakes.len())
            .finish_non_exhaustive()
    }
}

impl LimitedListener {
    /// Limits on `inner`.
    pub fn new(inner: TcpListener, max_connections: usize, idle: Duration) -> Self {
        Self {
            inner,
            slots: Arc::new(Semaphore::new(max_connections.max(1))),
            idle,
            last_error_log: None,
            tls: None,
            handshakes: FuturesUnordered::new(),
        }
    }

    /// Serve TLS only, with this configuration; a handshake must finish within the idle time.
    pub fn with_tls(mut self, config: Arc<tokio_rustls::rustls::ServerConfig>) -> Self {
        self.tls = Some(TlsAcceptor::from(config));
        self
    }
}

/// Wait for a free slot, then accept a TCP connection (retrying failed accepts).
async fn accept_tcp(
    inner: &TcpListener,
    slots: &Arc<Semaphore>,
    idle: Duration,
    last_error_log: &mut Option<Instant>,
) -> (LimitedStream, SocketAddr) {
    loop {
        // A closed semaphore cannot happen (it is never closed); waiting here leaves new
        // connections in the backlog until a slot frees.
        let Ok(permit) = Arc::clone(slots).acquire_owned().await else {
            std::future::pending::<()>().await;
            continue;
        };
        match inner.accept().await {
            Ok((stream, addr)) => {
                let _ = stream.set_nodelay(true);
                return (LimitedStream::new(stream, permit, idle), addr);
            }
            Err(e) => {
                // Out of descriptors, typically: back off, and log once per interval.
                let now = Instant::now();
                if last_error_log.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10)) {
                    tracing::error!(error = %e, "HTTP listener cannot accept connections; retrying");
                    *last_error_log = Some(now);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = ApiStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Self {
                inner,
                slots,
                idle,
                last_error_log,
                tls,
                handshakes,
            } = &mut *self;
            // Both branches are cancel-safe: a connection accepted is returned or handed to a
            // handshake before the next await; a handshake lives in `handshakes`.
            tokio::select! {
                Some((done, addr)) = handshakes.next(), if !handshakes.is_empty() => match done {
                    Ok(stream) => return (ApiStream::Tls(Box::new(stream)), addr),
                    Err(e) => tracing::debug!(peer = %addr, error = %e, "TLS handshake failed; connection closed"),
                },
                (stream, addr) = accept_tcp(inner, slots, *idle, last_error_log) => match tls {
                    None => return (ApiStream::Plain(stream), addr),
                    Some(acceptor) => {
                        let handshake = acceptor.accept(stream);
                        let limit = *idle;
                        handshakes.push(Box::pin(async move {
                            let done = match tokio::time::timeout(limit, handshake).await {
                                Ok(Ok(stream)) => Ok(stream),
                                Ok(Err(e)) => Err(e.to_string()),
                                Err(_) => Err("not finished within http.idle_timeout_ms".to_owned()),
                            };
                            (done, addr)
                        }));
                    }
                },
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection of the API: plain, or TLS over it.
#[derive(Debug)]
pub enum ApiStream {
    /// Plain HTTP.
    Plain(LimitedStream),
    /// HTTPS.
    Tls(Box<TlsStream<LimitedStream>>),
}

impl AsyncRead for ApiStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ApiStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// A connection that fails its reads after `idle` without a byte either way, and frees its
/// slot when dropped.
#[derive(Debug)]
pub struct LimitedStream {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl LimitedStream {
    fn new(stream: TcpStream, slot: OwnedSemaphorePermit, idle: Duration) -> Self {
        Self {
            stream,
            _slot: slot,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    let next = Instant::now() + self.idle;
                    self.deadline.as_mut().reset(next);
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                ready!(self.deadline.as_mut().poll(cx));
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no data from the client within http.idle_timeout_ms",
                )))
            }
        }
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = ready!(Pin::new(&mut self.stream).poll_write(cx, buf));
        // A connection the client is reading a stream on (`/api/events`) is not idle: the
        // client took bytes. One that neither sends nor takes anything still times out.
        if matches!(written, Ok(n) if n > 0) {
            let next = Instant::now() + self.idle;
            self.deadline.as_mut().reset(next);
        }
        Poll::Ready(written)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = ready!(Pin::new(&mut self.stream).poll_write_vectored(cx, bufs));
        if matches!(written, Ok(n) if n > 0) {
            let next = Instant::now() + self.idle;
            self.deadline.as_mut().reset(next);
        }
        Poll::Ready(written)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// A client's address, as handlers and the audit log see it
/// (`ConnectInfo<ClientAddr>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, LimitedListener>>
    for ClientAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, LimitedListener>) -> Self {
        Self(*stream.remote_addr())
    }
}
