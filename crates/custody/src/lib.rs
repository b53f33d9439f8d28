//! custody: a gateway in the data path between CI/CD pipelines and MCP servers.
//!
//! The parts, in the order a call meets them (see `docs/architecture.md`):
//! [`http`] receives and checks a request, [`identity`] says who sent it, [`relay`] runs the per-endpoint pipeline, [`mcp`]
//! knows the protocol and talks to upstream servers, [`config`] says what to serve.

#![forbid(unsafe_code)]

pub mod approval;
pub mod audit;
pub mod cli;
pub mod config;
pub mod connect;
pub mod credentials;
pub mod data_dir;
pub mod explorer;
pub mod export;
pub mod http;
pub mod identity;
pub mod limits;
pub mod mask;
pub mod mcp;
pub mod metrics;
pub mod net;
pub mod policy;
pub mod relay;
pub mod signals;
pub mod store;
pub mod telemetry;
pub mod tiles;
pub mod ui;
pub mod witness;
