//! MCP as the gateway sees it: messages as JSON values with typed views where it inspects,
//! the two protocol generations, the headers Streamable HTTP mirrors from bodies, server-sent
//! events, and clients for the upstream servers.

pub mod headers;
pub mod message;
pub mod sse;
pub mod upstream;
pub mod version;

pub use message::{Body, Kind, Message};
