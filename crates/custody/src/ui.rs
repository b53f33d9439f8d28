//! The explorer's web page at `/ui/`: server-rendered HTML over the explorer and approvals
//! APIs, for the people the log exists for (incident responders, auditors, approvers).
//!
//! What a page shows, it reads through the same functions as the API, with the same permission
//! checks and the same `log_read` entries; this module only keeps who is signed in and turns
//! what the API returns into HTML. Everything shown is escaped (payloads are hostile input); the
//! page loads nothing from elsewhere (a strict Content-Security-Policy), and its one script
//! checks a receipt in the browser (WebCrypto) against a verifier key the person pinned.

pub mod assets;
pub mod oidc;
pub mod pages;
pub mod sessions;

pub use sessions::{COOKIE, Session, Sessions};

/// The Content-Security-Policy of every page: nothing from elsewhere, no inline script or style.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
