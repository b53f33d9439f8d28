//! `custody demo-server`: the built-in MCP server.

use std::net::SocketAddr;

use anyhow::Context;
use custody_mcp_server::{Catalog, Engine};

pub async fn run(conformance: bool, http: Option<SocketAddr>) -> anyhow::Result<()> {
    let catalog = if conformance {
        Catalog::Conformance
    } else {
        Catalog::Demo
    };
    let engine = Engine::new(catalog);
    match http {
        Some(addr) => {
            tracing::info!(
                "{} serving Streamable HTTP at http://{addr}/mcp",
                catalog.name()
            );
            custody_mcp_server::http::serve(engine, addr)
                .await
                .with_context(|| format!("serving on {addr}"))
        }
        None => custody_mcp_server::stdio::serve(engine)
            .await
            .context("serving stdio"),
    }
}
