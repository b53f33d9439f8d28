//! A plain proxy hop, the floor the relay benchmark compares custody with: custody's own stack
//! (tokio, hyper's HTTP/1, mimalloc, as many worker threads as cores), each request's body read
//! whole and forwarded over a pool of kept-alive connections, the answer read whole and
//! returned. Nothing parsed, checked or recorded: what a gateway built this way pays for one
//! more hop (a leaner design, such as a single-threaded runtime, might pay less).

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

/// Headers that belong to one connection, not to the message (RFC 9110, section 7.6.1):
/// never forwarded, so a client's `Connection: close` cannot close the pooled upstream
/// connection.
const HOP_BY_HOP: [hyper::header::HeaderName; 8] = [
    hyper::header::CONNECTION,
    hyper::header::HeaderName::from_static("keep-alive"),
    hyper::header::PROXY_AUTHENTICATE,
    hyper::header::PROXY_AUTHORIZATION,
    hyper::header::TE,
    hyper::header::TRAILER,
    hyper::header::TRANSFER_ENCODING,
    hyper::header::UPGRADE,
];

/// Drops what hyper frames itself or what belongs to one connection.
fn strip(headers: &mut hyper::HeaderMap) {
    for h in &HOP_BY_HOP {
        headers.remove(h);
    }
    headers.remove(hyper::header::CONTENT_LENGTH);
}

/// Serves on `addr`, forwarding every request to `upstream` (same path and query).
///
/// # Errors
/// The listener cannot be bound.
pub(crate) async fn serve(addr: SocketAddr, upstream: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    // As custody's upstream client: kept-alive connections, no Nagle delay.
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let pool: Pool = Client::builder(TokioExecutor::new()).build(connector);
    let authority: hyper::http::uri::Authority = upstream.to_string().parse()?;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (pool, authority) = (pool.clone(), authority.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (pool, authority) = (pool.clone(), authority.clone());
                async move { Ok::<_, Infallible>(forward(&pool, authority, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn forward(
    pool: &Pool,
    authority: hyper::http::uri::Authority,
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
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.scheme = Some(hyper::http::uri::Scheme::HTTP);
    uri.authority = Some(authority);
    if uri.path_and_query.is_none() {
        uri.path_and_query = Some(hyper::http::uri::PathAndQuery::from_static("/"));
    }
    parts.uri = match hyper::Uri::from_parts(uri) {
        Ok(u) => u,
        Err(e) => return failed(format!("the upstream URI: {e}")),
    };
    strip(&mut parts.headers);
    parts.headers.remove(hyper::header::HOST);
    let answer = match pool
        .request(Request::from_parts(parts, Full::new(body)))
        .await
    {
        Ok(a) => a,
        Err(e) => return failed(format!("the upstream: {e}")),
    };
    let (mut parts, body) = answer.into_parts();
    strip(&mut parts.headers);
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

        // The upstream's status and headers come back as it sent them.
        let (status, content_type) = post(hop, "/mcp").await;
        assert_eq!(status, 200);
        assert!(
            content_type.starts_with("application/json"),
            "{content_type}"
        );
        let (status, _) = post(hop, "/nowhere").await;
        assert_eq!(status, 404, "the upstream's 404 is the client's");

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

    /// A `tools/call` POSTed to `path` through `addr` with `Connection: close` (which the hop
    /// must not pass on): the status and `Content-Type` of the answer.
    async fn post(addr: SocketAddr, path: &str) -> (u16, String) {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = crate::load::tools_call(path, crate::load::tools_call_body()).unwrap();
        req.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
        let answer = sender.send_request(req).await.unwrap();
        let content_type = answer
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (answer.status().as_u16(), content_type)
    }
}
