//! Where an approval is in its life, the votes cast, and what the held call learns.

/// One approver's decision.
#[derive(Debug, Clone)]
pub struct Vote {
    pub approver: String,
    pub reason: Option<String>,
    pub time_ns: u64,
    /// The approver's issuer and subject: the same person votes once.
    pub(super) who: (Option<String>, String),
}

/// Where an approval is in its life.
#[derive(Debug, Clone)]
pub enum State {
    Pending { votes: Vec<Vote> },
    Granted { votes: Vec<Vote> },
    Denied { vote: Vote },
    Expired,
    Cancelled { reason: String },
    Abandoned { reason: String },
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Pending { .. } => "pending",
            State::Granted { .. } => "granted",
            State::Denied { .. } => "denied",
            State::Expired => "expired",
            State::Cancelled { .. } => "cancelled",
            State::Abandoned { .. } => "abandoned",
        }
    }
}

/// What the held call learns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Granted {
        approvers: Vec<String>,
    },
    Denied {
        approver: String,
        reason: String,
    },
    /// Ended without a decision.
    Ended {
        ending: Ending,
        reason: String,
    },
}

impl Resolution {
    /// How the wait ended, in a word.
    pub fn name(&self) -> &'static str {
        match self {
            Resolution::Granted { .. } => "granted",
            Resolution::Denied { .. } => "denied",
            Resolution::Ended { ending, .. } => match ending {
                Ending::Expired => "expired",
                Ending::Cancelled => "cancelled",
                Ending::Abandoned => "abandoned",
            },
        }
    }
}

/// How an approval ended without a decision, for [`Approvals::end`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Expired,
    Cancelled,
    Abandoned,
}
