//! The stdio transport: newline-delimited JSON-RPC on stdin and stdout, one session.

use std::sync::Arc;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::engine::{Engine, Outbox, Outgoing, Session};
use crate::rpc::{RpcError, code};

/// Serves one client on stdin/stdout until stdin closes.
///
/// # Errors
/// I/O errors on stdin or stdout.
pub async fn serve(engine: Arc<Engine>) -> std::io::Result<()> {
    let (out, mut rx) = Outbox::channel();
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(item) = rx.recv().await {
            if let Outgoing::Message { message, .. } = item {
                let mut line = message.to_string().into_bytes();
                line.push(b'\n');
                if stdout.write_all(&line).await.is_err() || stdout.flush().await.is_err() {
                    break;
                }
            }
        }
    });
    let session = Session::new(out.clone());
    let mut initialized = false;
    let mut receive = |msg: Value| {
        // Without an `initialize` on this connection, every request must be a valid stateless
        // one (2026-07-28): check its `_meta` before dispatching it.
        if msg.get("method").and_then(Value::as_str) == Some("initialize") {
            initialized = true;
        } else if !initialized
            && msg.get("id").is_some()
            && msg.get("method").is_some()
            && let Err(e) = engine.check_stateless(&msg)
        {
            out.send(None, e.to_response(&msg["id"]));
            return;
        }
        engine.receive(Some(&session), msg, out.clone());
    };
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(&line) {
            Ok(Value::Array(batch)) => batch.into_iter().for_each(&mut receive),
            Ok(msg) => receive(msg),
            Err(e) => out.send(
                None,
                RpcError::new(code::PARSE_ERROR, format!("invalid JSON: {e}"))
                    .to_response(&Value::Null),
            ),
        }
    }
    session.close();
    // The writer ends once every sender is gone: the session's, ours, and those of requests
    // still finishing. Then responses already produced have reached stdout.
    drop(session);
    drop(out);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), writer).await;
    Ok(())
}
