//! What the server and racklift-agent say to each other, in one place that
//! depends on neither side (only serde): the inventory document, its eDeploy
//! facts, the agent's reports and the server's commands, and the bounds the
//! server holds them to.
//!
//! - [`inventory`]: the inventory document the agent posts;
//! - [`fact`]: one `(class, type, key, value)` fact and its JSON form;
//! - [`facts`]: an inventory flattened into facts, and the changes between two;
//! - here: the bodies of `POST /v1/agent/status`, `/v1/agent/log` and the
//!   heartbeat's answer, and their limits.
//!
//! The agent builds with this module and [`crate::agent`] alone (the
//! `server` feature off); the API documents these types in its OpenAPI
//! schema when the feature is on.

pub mod fact;
pub mod facts;
pub mod inventory;

pub use fact::Fact;
pub use inventory::Inventory;

use serde::{Deserialize, Serialize};

/// An agent's step result message, in characters.
pub const AGENT_MESSAGE: usize = 2000;
/// One line of an agent's log, in characters.
pub const AGENT_LOG_LINE: usize = 1000;
/// Lines in one agent log request.
pub const AGENT_LOG_LINES: usize = 200;

/// `POST /v1/agent/status`: the agent's result for the boot's step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StatusReport {
    pub ok: bool,
    /// At most [`AGENT_MESSAGE`] characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `POST /v1/agent/log`: lines of the agent's console, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LogLines {
    /// At most [`AGENT_LOG_LINES`] lines of [`AGENT_LOG_LINE`] characters.
    pub lines: Vec<String>,
}

/// What the server tells the agent to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Command {
    /// Keep heartbeating.
    Wait,
    /// The report is in: the step is finishing, or the discovered machine is
    /// enrolled.
    #[serde(rename = "poweroff")]
    PowerOff,
    /// Restart the machine.
    Reboot,
}

/// The answer to `POST /v1/agent/heartbeat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Heartbeat {
    pub command: Command,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_keep_their_wire_names() {
        for (c, text) in [
            (Command::Wait, r#"{"command":"wait"}"#),
            (Command::PowerOff, r#"{"command":"poweroff"}"#),
            (Command::Reboot, r#"{"command":"reboot"}"#),
        ] {
            assert_eq!(
                serde_json::to_string(&Heartbeat { command: c }).unwrap(),
                text
            );
            assert_eq!(serde_json::from_str::<Heartbeat>(text).unwrap().command, c);
        }
        assert!(serde_json::from_str::<Heartbeat>(r#"{"command":"dance"}"#).is_err());
    }

    #[test]
    fn reports_refuse_unknown_fields() {
        let e = serde_json::from_str::<StatusReport>(r#"{"ok":true,"msg":"x"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `msg`"), "{e}");
        let r: StatusReport = serde_json::from_str(r#"{"ok":false}"#).unwrap();
        assert_eq!(r.message, None);
    }
}
