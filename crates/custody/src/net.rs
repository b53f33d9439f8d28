//! Outbound HTTP for the gateway's own requests (issuer keys, webhooks, the CLI talking to a
//! gateway): HTTPS with the web PKI roots, or plain HTTP where the caller allows it.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A client over HTTP/1.1 (TLS or not) whose connections time out after `connect`.
pub fn client<B>(connect: Duration) -> Client<HttpsConnector<HttpConnector>, B>
where
    B: hyper::body::Body + Send,
    B::Data: Send,
{
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(https)
}

/// The chain of causes of an error, joined: hyper's own message is rarely enough.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Sends `req` and reads at most `limit` bytes of the answer. `what` names the other side in
/// errors ("GitHub's OIDC token service", "the OAuth token endpoint https://…").
///
/// # Errors
/// A sentence: it could not be reached, or its answer could not be read.
pub async fn exchange<B>(
    client: &Client<HttpsConnector<HttpConnector>, B>,
    req: http::Request<B>,
    what: &str,
    limit: usize,
) -> Result<(http::StatusCode, Bytes), String>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = exchange_parts(client, req, what, limit).await?;
    Ok((parts.status, body))
}

/// [`exchange`], with the answer's status and headers.
///
/// # Errors
/// As [`exchange`].
pub async fn exchange_parts<B>(
    client: &Client<HttpsConnector<HttpConnector>, B>,
    req: http::Request<B>,
    what: &str,
    limit: usize,
) -> Result<(http::response::Parts, Bytes), String>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let resp = client
        .request(req)
        .await
        .map_err(|e| format!("couldn't reach {what}: {}", error_chain(&e)))?;
    let (parts, body) = resp.into_parts();
    let body = Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| format!("couldn't read the answer of {what}: {e}"))?
        .to_bytes();
    Ok((parts, body))
}
