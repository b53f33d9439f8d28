//! Sending spans: the OTLP/HTTP exporter over the gateway's own HTTP client (hyper, rustls),
//! driven on the gateway's runtime from the SDK's export thread.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

/// The longest one export may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest collector answer read.
const MAX_ANSWER: usize = 64 * 1024;

/// An `opentelemetry_http::HttpClient` on the gateway's runtime.
#[derive(Clone)]
pub struct Exporter {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("custody OTLP/HTTP client")
    }
}

impl Exporter {
    /// A client on the current runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn new() -> Self {
        Self {
            client: crate::net::client(TIMEOUT),
            runtime: tokio::runtime::Handle::current(),
        }
    }
}

impl opentelemetry_http::HttpClient for Exporter {
    fn send_bytes<'life0, 'async_trait>(
        &'life0 self,
        request: http::Request<Bytes>,
    ) -> std::pin::Pin<
        Box<
            dyn Future<Output = Result<http::Response<Bytes>, opentelemetry_http::HttpError>>
                + Send
                + 'async_trait,
        >,
    >
    where
        Self: 'async_trait,
        'life0: 'async_trait,
    {
        let client = self.client.clone();
        let runtime = self.runtime.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let req = http::Request::from_parts(parts, Full::new(body));
            let what = req.uri().to_string();
            // The SDK's export thread has no runtime of its own: the request runs on the
            // gateway's, and this future only waits for it.
            let sent = runtime.spawn(async move {
                tokio::time::timeout(
                    TIMEOUT,
                    crate::net::exchange(&client, req, &what, MAX_ANSWER),
                )
                .await
                .map_err(|_| format!("{what} did not answer within {}s", TIMEOUT.as_secs()))?
            });
            let (status, body) = sent
                .await
                .map_err(|e| -> opentelemetry_http::HttpError { Box::new(e) })?
                .map_err(opentelemetry_http::HttpError::from)?;
            let mut resp = http::Response::new(body);
            *resp.status_mut() = status;
            Ok(resp)
        })
    }
}
