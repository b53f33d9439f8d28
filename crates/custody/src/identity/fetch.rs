//! Fetching an issuer's discovery document and keys: HTTPS (or HTTP to this machine), bounded
//! in time and size.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::Empty;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

/// The largest document read; real JWKS are a few KiB.
const MAX_DOCUMENT: usize = 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(5);

/// A small HTTP client for JSON documents.
#[derive(Clone)]
pub struct Fetcher {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl Default for Fetcher {
    fn default() -> Self {
        Self {
            client: crate::net::client(TIMEOUT),
        }
    }
}

impl Fetcher {
    /// GETs `url` and parses the body as JSON.
    ///
    /// # Errors
    /// A sentence saying what failed: connecting, the status, the size, or the JSON.
    pub async fn json(&self, url: &str) -> Result<serde_json::Value, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|_| format!("{url} is not a valid URL"))?;
        let req = Request::get(uri)
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("custody/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::new())
            .map_err(|e| format!("couldn't build a request for {url}: {e}"))?;
        let fetch = async {
            let (status, body) = crate::net::exchange(&self.client, req, url, MAX_DOCUMENT).await?;
            if status != StatusCode::OK {
                return Err(format!("{url} answered {status}"));
            }
            serde_json::from_slice(&body).map_err(|e| format!("{url} did not return JSON: {e}"))
        };
        tokio::time::timeout(TIMEOUT, fetch)
            .await
            .map_err(|_| format!("{url} did not answer within {}s", TIMEOUT.as_secs()))?
    }
}
