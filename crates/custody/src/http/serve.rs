//! The listener and its connections. Every connection takes a place in the connection table
//! (`limits::Connections`: a cap, idle eviction, idle and header-read timeouts) and is served by
//! hyper (HTTP/1.1, and HTTP/2 with prior knowledge); request heads are bounded in size and
//! field count before the router sees them; the accept loop survives running out of file
//! descriptors. Shutdown stops accepting, asks every connection to finish, and ends when all
//! have.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, Request, header};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::ServerLimits;
use crate::limits::conns::{Closed, Conn};
use crate::limits::{Connections, Exceeded, Limit, Limiter, address_key};
use crate::relay::{At, Refusals, RelayError};

/// File descriptors kept for what is not a client connection: upstream connections and
/// processes, the log, issuers' keys.
const RESERVED_FILES: u64 = 256;
/// How long a connection asked to close (evicted, idle) may take to finish.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What the server needs besides the router.
pub struct Serve {
    pub limits: ServerLimits,
    pub conns: Arc<Connections>,
    pub refusals: Arc<Refusals>,
    /// Charged with each refusal before authentication the server itself makes (headers).
    pub limiter: Arc<Limiter>,
}

impl Serve {
    /// A refusal before authentication: charged to the address, counted for the log.
    fn refused(&self, peer: SocketAddr, error: &RelayError) {
        self.limiter.addresses.charge(address_key(peer.ip()));
        self.refusals.unauthenticated(&at(&peer.to_string()), error);
    }
}

/// The connection cap the process's open-file limit allows: the soft limit is raised to the
/// hard one first; `RESERVED_FILES` stay for everything else.
pub fn fit_to_file_limit(max: usize) -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return max;
    };
    let soft = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    let room = usize::try_from(soft.saturating_sub(RESERVED_FILES)).unwrap_or(usize::MAX);
    if room < max {
        let fitted = room.max(16);
        tracing::warn!(
            "server.max_connections is {max}, but this process may open only {soft} files; holding at most {fitted} connections ({RESERVED_FILES} files kept for upstreams and the log). Raise the limit (ulimit -n, LimitNOFILE=) to hold more"
        );
        fitted
    } else {
        max
    }
}

/// Accepts and serves connections until `stop`, then waits for them to finish.
pub async fn run(listener: TcpListener, router: Router, serve: Serve, stop: CancellationToken) {
    let serve = Arc::new(serve);
    let tracker = TaskTracker::new();
    let reaper = {
        let conns = serve.conns.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(conns.reap_every());
            loop {
                tokio::select! {
                    _ = tick.tick() => { conns.reap(); }
                    () = stop.cancelled() => break,
                }
            }
        })
    };
    let mut out_of_files = false;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = stop.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => {
                if out_of_files {
                    out_of_files = false;
                    tracing::info!("accepting connections again");
                }
                a
            }
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors (or memory): make room by closing the connection
                // idle longest, and wait a little rather than spin on the error.
                let evicted = serve.conns.evict_one();
                if !out_of_files {
                    out_of_files = true;
                    tracing::error!(
                        "couldn't accept a connection: {e}; closing idle connections and retrying (server.max_connections may be above what the file limit allows)"
                    );
                }
                let pause = if evicted { 10 } else { 100 };
                tokio::time::sleep(Duration::from_millis(pause)).await;
                continue;
            }
        };
        let slot = match serve.conns.open() {
            Ok(slot) => slot,
            Err(exceeded) => {
                refuse_connection(&serve, &stream, peer, exceeded);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let serve = serve.clone();
        let router = router.clone();
        let stop = stop.clone();
        tracker.spawn(async move {
            let conn = slot.conn().clone();
            connection(stream, peer, conn, router, &serve, stop).await;
            drop(slot);
        });
    }
    reaper.abort();
    tracker.close();
    tracker.wait().await;
}

fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

fn at(peer: &str) -> At<'_> {
    static GATEWAY: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from(""));
    At {
        endpoint: &GATEWAY,
        address: peer,
        http_method: "",
        session: None,
    }
}

/// A connection over the cap with none idle to close: a 503 written straight to the socket
/// (without a task, a parser or a buffer), then closed.
fn refuse_connection(serve: &Serve, stream: &TcpStream, peer: SocketAddr, exceeded: Exceeded) {
    let error = RelayError::Limit(exceeded);
    let body = error.to_json(None).to_string();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: {}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        error.retry_after().unwrap_or(1),
        body.len()
    );
    let _ = stream.try_write(format!("{head}{body}").as_bytes());
    serve
        .refusals
        .unauthenticated(&at(&peer.to_string()), &error);
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    conn: Arc<Conn>,
    router: Router,
    serve: &Arc<Serve>,
    stop: CancellationToken,
) {
    let io = TokioIo::new(Watched {
        inner: stream,
        conn: conn.clone(),
    });
    let limits = serve.limits;
    let service = {
        let conn = conn.clone();
        let serve = serve.clone();
        hyper::service::service_fn(move |mut req: Request<Incoming>| {
            let in_progress = conn.begin();
            req.extensions_mut().insert(ConnectInfo(peer));
            let router = router.clone();
            let serve = serve.clone();
            async move {
                let resp = match check_head(&req, &serve.limits) {
                    Ok(()) => match router.oneshot(req.map(Body::new)).await {
                        Ok(r) => r,
                        Err(never) => match never {},
                    },
                    Err(error) => {
                        serve.refused(peer, &error);
                        head_refused(&error)
                    }
                };
                Ok::<_, Infallible>(resp.map(|b| Body::new(Guarded::new(b, in_progress))))
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The connection table times out heads and idle connections (hyper's own timer
        // would also end idle keep-alive connections at the header timeout).
        .header_read_timeout(None)
        .max_headers(limits.max_headers * 2)
        .max_buf_size((limits.max_header_bytes * 2).max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes * 2).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);
    let served = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(served);
    let closing = conn.closing().clone();
    let result = tokio::select! {
        r = served.as_mut() => r,
        () = closing.cancelled() => {
            if conn.closed() == Some(Closed::HeaderTimeout) {
                // A head that never finishes: nothing to finish gracefully.
                let error = RelayError::Limit(Exceeded::new(
                    Limit::HeaderTime,
                    limits.connections.header_read_timeout.as_secs(),
                ));
                serve.refused(peer, &error);
                return;
            }
            served.as_mut().graceful_shutdown();
            tokio::time::timeout(CLOSE_GRACE, served.as_mut()).await.unwrap_or(Ok(()))
        }
        () = stop.cancelled() => {
            served.as_mut().graceful_shutdown();
            served.as_mut().await
        }
    };
    if let Err(e) = result {
        // hyper answers a head past its buffer (twice max_header_bytes) with a bare 431.
        let too_large = e
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_parse_too_large);
        if too_large {
            let error = RelayError::Limit(Exceeded::new(
                Limit::HeaderBytes,
                limits.max_header_bytes as u64,
            ));
            serve.refused(peer, &error);
        } else {
            tracing::debug!(%peer, "connection ended: {e}");
        }
    }
}

/// Refuses a request head over `server.max_header_bytes` or `server.max_headers`.
fn check_head(req: &Request<Incoming>, limits: &ServerLimits) -> Result<(), RelayError> {
    let headers = req.headers();
    if headers.len() > limits.max_headers {
        return Err(RelayError::Limit(Exceeded::new(
            Limit::HeaderCount,
            limits.max_headers as u64,
        )));
    }
    // The head as it was sent: request line, and `name: value\r\n` per field.
    let line = req.method().as_str().len() + req.uri().to_string().len() + 12;
    let size = headers
        .iter()
        .fold(line, |n, (k, v)| n + k.as_str().len() + v.len() + 4);
    if size > limits.max_header_bytes {
        return Err(RelayError::Limit(Exceeded::new(
            Limit::HeaderBytes,
            limits.max_header_bytes as u64,
        )));
    }
    Ok(())
}

fn head_refused(error: &RelayError) -> Response {
    let mut resp = (
        error.status(),
        [(header::CONTENT_TYPE, "application/json")],
        error.to_json(None).to_string(),
    )
        .into_response();
    // The connection's state after an oversized head is not worth keeping.
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

pin_project! {
    /// A response body that holds something (a request's place on its connection, a
    /// principal's place among its requests in progress) until it ends or is dropped.
    pub struct Guarded<G> {
        #[pin]
        inner: Body,
        _guard: G,
    }
}

impl<G> Guarded<G> {
    pub fn new(inner: Body, guard: G) -> Self {
        Self {
            inner,
            _guard: guard,
        }
    }
}

impl<G> hyper::body::Body for Guarded<G> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// The socket, telling the connection table when bytes arrive (so it can tell a slow head
    /// from an idle connection).
    struct Watched {
        #[pin]
        inner: TcpStream,
        conn: Arc<Conn>,
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.conn.note_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
