//! One MCP server process and the routing of its messages.
//!
//! Lock ownership: `routes` is the only lock; it is held for map updates and channel sends
//! (unbounded, never blocking), never across an `.await`.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;

mod inbound;
mod lines;
mod routes;

use routes::{Pending, Routes, progress_key};

use super::lock;
use crate::config::{MessageLimits, StdioUpstreamConfig};
use crate::credentials::Scrub;
use crate::mcp::message::{Message, id_key};
use crate::mcp::upstream::{Event, EventStream, UpstreamError};

/// Unsolicited messages kept for a session until its client opens a GET stream.
const BACKLOG: usize = 1000;
/// Time a process gets to exit after stdin closes, and again after SIGTERM.
const STOP_STEP: Duration = Duration::from_secs(2);
/// Environment passed to processes that do not inherit the gateway's.
const BASE_ENV: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"];

type Tx = mpsc::UnboundedSender<Result<Event, UpstreamError>>;

pub struct Child {
    endpoint: Arc<str>,
    pid: Option<u32>,
    stdin: mpsc::Sender<Bytes>,
    routes: Mutex<Routes>,
    next_id: AtomicU64,
    request_timeout: Duration,
    started: Instant,
    /// Milliseconds since `started` of the last request or answer.
    last_active: AtomicU64,
    /// Cancelled once the process has exited.
    gone: CancellationToken,
    /// Cancelled to ask the process to stop.
    stopping: CancellationToken,
    /// The credentials the gateway holds (the process's environment among them): scrubbed
    /// from what the process writes before the gateway's log sees it.
    scrub: Scrub,
    /// Where a pooled process's requests to the client go: stateless clients cannot take them,
    /// so the gateway answers them itself (recorded), and the call goes on.
    server_requests: Option<mpsc::Sender<ServerRequest>>,
}

/// A request a pooled process sent to "the client" (sampling, elicitation, roots): the gateway
/// records it and its answer, then writes the answer back with [`ServerRequest::answer`].
pub struct ServerRequest {
    pub message: Message,
    reply: mpsc::Sender<Bytes>,
}

impl ServerRequest {
    /// Writes `answer` (already recorded) to the process.
    pub async fn answer(&self, answer: &Message) {
        let mut line = answer.to_bytes().to_vec();
        line.push(b'\n');
        let _ = self.reply.send(Bytes::from(line)).await;
    }
}

impl Child {
    pub(super) fn spawn(
        endpoint: Arc<str>,
        cfg: &StdioUpstreamConfig,
        env: &std::collections::BTreeMap<String, String>,
        scrub: Scrub,
        messages: MessageLimits,
        permit: crate::limits::Permit,
        server_requests: Option<mpsc::Sender<ServerRequest>>,
    ) -> Result<Arc<Self>, UpstreamError> {
        let mut cmd = tokio::process::Command::new(&cfg.command);
        cmd.args(&cfg.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group: a Ctrl-C meant for the gateway does not reach it directly;
            // the gateway stops it in order.
            .process_group(0);
        if !cfg.inherit_env {
            cmd.env_clear();
            for key in BASE_ENV {
                if let Some(v) = std::env::var_os(key) {
                    cmd.env(key, v);
                }
            }
        }
        cmd.envs(env);
        if let Some(dir) = &cfg.cwd {
            cmd.current_dir(dir);
        }
        let mut proc = cmd
            .spawn()
            .map_err(|e| UpstreamError::Spawn(format!("`{}`: {e}", cfg.command.display())))?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (proc.stdin.take(), proc.stdout.take(), proc.stderr.take())
        else {
            return Err(UpstreamError::Spawn(
                "the process has no stdio pipes".into(),
            ));
        };
        let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(256);
        let child = Arc::new(Self {
            endpoint: endpoint.clone(),
            pid: proc.id(),
            stdin: stdin_tx,
            routes: Mutex::new(Routes::default()),
            next_id: AtomicU64::new(1),
            request_timeout: cfg.request_timeout,
            started: Instant::now(),
            last_active: AtomicU64::new(0),
            gone: CancellationToken::new(),
            stopping: CancellationToken::new(),
            scrub: scrub.clone(),
            server_requests,
        });
        tracing::info!(endpoint = %endpoint, pid = ?child.pid, command = %cfg.command.display(), "started upstream process");

        tokio::spawn(write_stdin(stdin, stdin_rx, child.stopping.clone()));
        tokio::spawn(log_stderr(stderr, endpoint, child.pid, scrub));
        let reader = tokio::spawn(lines::read_stdout(child.clone(), stdout, messages));
        tokio::spawn(supervise(child.clone(), proc, reader, permit));
        Ok(child)
    }

    pub fn is_alive(&self) -> bool {
        lock(&self.routes).dead.is_none()
    }

    /// Requests in flight (not counting listen streams).
    pub fn load(&self) -> usize {
        lock(&self.routes)
            .pending
            .values()
            .filter(|p| !p.long_lived)
            .count()
    }

    /// How long the process has had nothing to do.
    pub fn idle_for(&self) -> Duration {
        if self.load() > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_active.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active.store(ms, Ordering::Relaxed);
    }

    /// Sends a request; the stream yields what the process sends for it and ends after the
    /// answer. `shared` marks a pooled process; there, dropping the stream cancels the request
    /// (the stateless generation's rule), while on a session's own process a dropped stream
    /// detaches and later messages go to the session's GET stream.
    ///
    /// # Errors
    /// [`UpstreamError::Closed`] when the process is gone.
    pub async fn request(
        self: &Arc<Self>,
        msg: Message,
        shared: bool,
    ) -> Result<EventStream, UpstreamError> {
        self.send_request(msg, shared, false).await
    }

    /// As [`Child::request`] on a pooled process, for a client that can be asked for input
    /// (multi round-trip requests): a request the process sends to the client while this is
    /// the one request it is working on comes on this stream, for the relay to translate.
    /// Otherwise such a request goes to the relay's answering task, as for any other call.
    ///
    /// # Errors
    /// [`UpstreamError::Closed`] when the process is gone.
    pub async fn request_asking(
        self: &Arc<Self>,
        msg: Message,
    ) -> Result<EventStream, UpstreamError> {
        self.send_request(msg, true, true).await
    }

    async fn send_request(
        self: &Arc<Self>,
        mut msg: Message,
        shared: bool,
        asks: bool,
    ) -> Result<EventStream, UpstreamError> {
        let internal = self.next_id.fetch_add(1, Ordering::Relaxed);
        let client_id = msg.id().cloned().unwrap_or(Value::Null);
        let long_lived = msg.method() == Some("subscriptions/listen");
        let asked = msg.meta("progressToken").cloned();
        let (tx, rx) = mpsc::unbounded_channel();
        let mut client_token = None;
        let mut token = None;
        let mut rewrite = None;
        {
            let mut r = lock(&self.routes);
            if let Some(why) = &r.dead {
                return Err(UpstreamError::Closed(why.clone()));
            }
            // The process sees the client's own progress token, unless another request in
            // flight on this process already uses it (clients sharing a pooled process may
            // pick the same one): only then does this request get a token of the gateway's.
            // A session's tokens are unique within it (the spec requires so).
            if let Some(t) = &asked {
                let key = progress_key(t);
                if shared && r.progress.contains_key(&key) {
                    let ours = format!("custody-{internal}");
                    client_token = Some(t.clone());
                    rewrite = Some(ours.clone());
                    token = Some(ours);
                } else {
                    token = Some(key);
                }
            }
            r.order += 1;
            let order = r.order;
            if let Some(t) = &token {
                r.progress.insert(t.clone(), internal);
            }
            if !shared {
                r.client_ids.insert(id_key(&client_id), internal);
            }
            r.pending.insert(
                internal,
                Pending {
                    client_id,
                    client_token,
                    token,
                    tx,
                    order,
                    detached: false,
                    shared,
                    long_lived,
                    asks,
                },
            );
        }
        // A process is not told the trace: custody does not rewrite a message it has recorded.
        let span = crate::telemetry::upstream_call(None);
        // The route is in place: edit the message outside the lock (re-serialising it costs its
        // size).
        msg.edit(|value| {
            value["id"] = json!(internal);
            if let (Some(ours), Some(t)) =
                (&rewrite, value.pointer_mut("/params/_meta/progressToken"))
            {
                *t = json!(ours);
            }
        });
        self.touch();
        if let Err(e) = self.write(&msg).await {
            self.forget(internal);
            return Err(e);
        }
        let guard = RequestGuard {
            child: self.clone(),
            internal,
            cancel: shared,
            _span: span,
        };
        // A listen stream is silent for as long as nothing changes: no timeout.
        let timeout = if long_lived {
            Duration::MAX
        } else {
            self.request_timeout
        };
        Ok(Box::pin(futures_util::stream::unfold(
            Some((rx, guard)),
            move |state| async move {
                let (mut rx, mut guard) = state?;
                match tokio::time::timeout(timeout, rx.recv()).await {
                    Ok(Some(item)) => Some((item, Some((rx, guard)))),
                    Ok(None) => None,
                    Err(_) => {
                        // The client gets an error now; the process must not keep working.
                        guard.cancel = true;
                        Some((Err(UpstreamError::Timeout(timeout)), None))
                    }
                }
            },
        )))
    }

    /// Sends a notification or a response (to a request of the process) from the client.
    ///
    /// # Errors
    /// [`UpstreamError::Closed`] when the process is gone.
    pub async fn send(&self, mut msg: Message) -> Result<(), UpstreamError> {
        if msg.method() == Some("notifications/cancelled") {
            let target = msg
                .params()
                .and_then(|p| p.get("requestId"))
                .map(id_key)
                .and_then(|k| lock(&self.routes).client_ids.get(&k).copied());
            if let Some(internal) = target {
                msg.edit(|v| v["params"]["requestId"] = json!(internal));
            }
        }
        if let Some(why) = &lock(&self.routes).dead {
            return Err(UpstreamError::Closed(why.clone()));
        }
        self.touch();
        self.write(&msg).await
    }

    /// The stream of messages that belong to no request (the session's GET stream). Messages
    /// kept while no stream was open come first.
    pub fn standalone(&self) -> Result<EventStream, UpstreamError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut r = lock(&self.routes);
        if let Some(why) = &r.dead {
            return Err(UpstreamError::Closed(why.clone()));
        }
        for m in r.backlog.drain(..) {
            let _ = tx.send(Ok(Event::message(m)));
        }
        r.standalone = Some(tx);
        drop(r);
        Ok(Box::pin(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
        ))
    }

    async fn write(&self, msg: &Message) -> Result<(), UpstreamError> {
        let mut line = msg.to_bytes().to_vec();
        line.push(b'\n');
        self.stdin.send(Bytes::from(line)).await.map_err(|_| {
            UpstreamError::Closed(
                lock(&self.routes)
                    .dead
                    .clone()
                    .unwrap_or_else(|| "the upstream process's stdin is closed".into()),
            )
        })
    }

    fn forget(&self, internal: u64) -> Option<Pending> {
        let mut r = lock(&self.routes);
        let p = r.pending.remove(&internal)?;
        if let Some(t) = &p.token {
            r.progress.remove(t);
        }
        if !p.shared {
            r.client_ids.remove(&id_key(&p.client_id));
        }
        Some(p)
    }

    /// Asks the process to stop: close stdin, then SIGTERM, then SIGKILL, a step apart.
    pub async fn stop(&self) {
        self.stopping.cancel();
        let _ = tokio::time::timeout(STOP_STEP * 3, self.gone.cancelled()).await;
    }

    fn fail_all(&self, err: &UpstreamError) {
        let mut r = lock(&self.routes);
        if r.dead.is_none() {
            r.dead = Some(err.to_string());
        }
        for (_, p) in r.pending.drain() {
            let _ = p.tx.send(Err(err.clone()));
        }
        r.progress.clear();
        r.client_ids.clear();
        if let Some(tx) = r.standalone.take() {
            let _ = tx.send(Err(err.clone()));
        }
    }
}

/// Cancels or detaches a request whose stream was dropped before its answer.
struct RequestGuard {
    child: Arc<Child>,
    internal: u64,
    cancel: bool,
    /// The call's client span, when traced: it ends with the request's stream.
    _span: Option<crate::telemetry::Child>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if self.cancel {
            if self.child.forget(self.internal).is_some() {
                let note = json!({ "jsonrpc": "2.0", "method": "notifications/cancelled",
                    "params": { "requestId": self.internal, "reason": "the client went away or timed out" } });
                let mut line = note.to_string().into_bytes();
                line.push(b'\n');
                let _ = self.child.stdin.try_send(Bytes::from(line));
            }
        } else if let Some(p) = lock(&self.child.routes).pending.get_mut(&self.internal) {
            p.detached = true;
        }
    }
}

async fn write_stdin(
    mut stdin: tokio::process::ChildStdin,
    mut rx: mpsc::Receiver<Bytes>,
    stopping: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stopping.cancelled() => break,
            line = rx.recv() => {
                let Some(line) = line else { break };
                if stdin.write_all(&line).await.is_err() || stdin.flush().await.is_err() {
                    break;
                }
            }
        }
    }
    // Dropping stdin closes it: the first step of a stdio server's shutdown.
}

/// Writes what the process says on stderr to the gateway's log, one line at a time, with the
/// credentials the gateway holds scrubbed (a server that prints its environment must not put
/// its API key in the gateway's log).
async fn log_stderr(
    stderr: tokio::process::ChildStderr,
    endpoint: Arc<str>,
    pid: Option<u32>,
    scrub: Scrub,
) {
    let mut lines = FramedRead::new(stderr, LinesCodec::new_with_max_length(16 * 1024));
    while let Some(line) = lines.next().await {
        match line {
            Ok(mut line) => {
                scrub.redact(&mut line);
                tracing::info!(target: "custody::upstream::stderr", endpoint = %endpoint, pid = ?pid, "{line}")
            }
            Err(LinesCodecError::MaxLineLengthExceeded) => {
                tracing::info!(target: "custody::upstream::stderr", endpoint = %endpoint, pid = ?pid, "(a stderr line over 16 KiB was skipped)");
            }
            Err(_) => break,
        }
    }
}

async fn supervise(
    child: Arc<Child>,
    mut proc: tokio::process::Child,
    reader: tokio::task::JoinHandle<()>,
    // The process's place in its endpoint's count, given back once it has exited.
    _permit: crate::limits::Permit,
) {
    let status = tokio::select! {
        status = proc.wait() => status,
        () = child.stopping.cancelled() => {
            match tokio::time::timeout(STOP_STEP, proc.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    if let Some(pid) = child.pid.and_then(|p| i32::try_from(p).ok()) {
                        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
                    }
                    match tokio::time::timeout(STOP_STEP, proc.wait()).await {
                        Ok(status) => status,
                        Err(_) => {
                            let _ = proc.start_kill();
                            proc.wait().await
                        }
                    }
                }
            }
        }
    };
    // Let the reader deliver what the process wrote before it exited.
    let _ = tokio::time::timeout(Duration::from_secs(1), reader).await;
    let how = match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("unknown status ({e})"),
    };
    let stopping = child.stopping.is_cancelled();
    if stopping {
        tracing::info!(endpoint = %child.endpoint, pid = ?child.pid, "upstream process stopped ({how})");
    } else {
        tracing::warn!(endpoint = %child.endpoint, pid = ?child.pid, "upstream process exited ({how})");
    }
    child.fail_all(&UpstreamError::Closed(format!(
        "the upstream process exited ({how})"
    )));
    child.gone.cancel();
}
