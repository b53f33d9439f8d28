//! Witnesses (C2SP tlog-witness): parties outside the operator's reach that cosign the log's
//! checkpoints only when they extend every checkpoint they cosigned before, so history cannot
//! be rewritten and re-signed without every witness refusing.
//!
//! Two sides, sharing nothing but `tlog`:
//!
//! * [`client`]: the gateway asks the witnesses of its `[witness]` policy to cosign each new
//!   checkpoint, with the consistency proof from the size each one last cosigned, and says
//!   which cosignatures verified, whether the quorum was met, and which witness saw a fork.
//! * [`server`]: `custody witness serve`, a witness anyone can run in another trust domain:
//!   its own key ([`keys`]), the logs it accepts, its state per log ([`state`]) persisted
//!   before it answers.

pub mod client;
pub mod keys;
pub mod server;
pub mod state;
