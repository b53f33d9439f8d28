//! A plain proxy hop, the floor the relay benchmark compares custody with: the same stack
//! (tokio, hyper's HTTP/1, mimalloc, as many worker threads as cores), each request's body read
//! whole and forwarded over a pool of kept-alive connections, the answer read whole and
//! returned. Nothing parsed, checked or recorded: what any gateway pays for one more hop.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

type Pool = Client<HttpConnector, Full<Bytes>>;

/// Serves on `addr`, forwarding every request to `upstream` (same path and query).
///
/// # Errors
/// The listener cannot be bound.
pub(crate) async fn serve(addr: SocketAddr, upstream: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let pool: Pool = Client::builder(TokioExecutor::new()).build_http();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let pool = pool.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let pool = pool.clone();
                async move { Ok::<_, Infallible>(forward(&pool, upstream, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn forward(
    pool: &Pool,
    upstream: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let failed = |why: String| {
        let mut r = Response::new(Full::new(Bytes::from(why)));
        *r.status_mut() = StatusCode::BAD_GATEWAY;
        r
    };
    let (mut parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return failed(format!("reading the request: {e}")),
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", hyper::http::uri::PathAndQuery::as_str);
    parts.uri = match format!("http://{upstream}{path}").parse() {
        Ok(u) => u,
        Err(e) => return failed(format!("the upstream URI: {e}")),
    };
    for h in [
        hyper::header::HOST,
        hyper::header::TRANSFER_ENCODING,
        hyper::header::CONTENT_LENGTH,
    ] {
        parts.headers.remove(h);
    }
    let answer = match pool
        .request(Request::from_parts(parts, Full::new(body)))
        .await
    {
        Ok(a) => a,
        Err(e) => return failed(format!("the upstream: {e}")),
    };
    let (mut parts, body) = answer.into_parts();
    // hyper frames the whole body itself.
    parts.headers.remove(hyper::header::TRANSFER_ENCODING);
    parts.headers.remove(hyper::header::CONTENT_LENGTH);
    match body.collect().await {
        Ok(b) => Response::from_parts(parts, Full::new(b.to_bytes())),
        Err(e) => failed(format!("reading the answer: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{Conn, latencies_of};

    /// The hop relays a real `tools/call` to the conformance fixture and back (the load
    /// generator checks the answer is a JSON-RPC result), and an upstream that is gone is a
    /// 502 that says so, not a hang.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn relays_a_call_and_reports_a_missing_upstream() {
        let up = crate::relay::free_addr().unwrap();
        let engine = custody_mcp_server::Engine::new(custody_mcp_server::Catalog::Conformance);
        tokio::spawn(custody_mcp_server::http::serve(engine, up));
        let hop = crate::relay::free_addr().unwrap();
        tokio::spawn(serve(hop, up));
        crate::relay::wait_listening(up).await.unwrap();
        crate::relay::wait_listening(hop).await.unwrap();

        let lat = latencies_of(&[(up, "/mcp"), (hop, "/mcp")], 2, 150)
            .await
            .unwrap();
        assert_eq!(lat.len(), 2);
        assert!(lat.iter().all(|l| l.len() == 150));

        let gone = crate::relay::free_addr().unwrap();
        let hop2 = crate::relay::free_addr().unwrap();
        tokio::spawn(serve(hop2, gone));
        crate::relay::wait_listening(hop2).await.unwrap();
        let err = Conn::open(hop2, "/mcp")
            .await
            .unwrap()
            .call()
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("502") && err.contains("the upstream"), "{err}");
    }
}
