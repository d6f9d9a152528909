//! The node lifecycle: states, events, and the one pure [`transition`] function.
//!
//! Every state change of a node goes through [`transition`]; nothing else decides
//! whether a node may move. The function has no wildcard arm: adding a state or an
//! event forces every pair to be considered again.
//!
//! ```text
//! enrolled -manage-> verifying -done-> manageable
//! manageable -inspect-> inspecting -done-> manageable      (fail/abort: inspect_failed)
//! manageable -provide-> cleaning -done-> available          (fail/abort: clean_failed)
//! available -deploy-> deploying -done-> active              (fail/abort: deploy_failed)
//! active -configure-> configuring -done-> in_service        (fail/abort: configure_failed)
//! active | in_service | *_failed -reprovision-> cleaning    (then deploy and configure again)
//! active | in_service | deploy_failed | configure_failed -undeploy-> cleaning -> available
//! ```
//!
//! Maintenance is a flag on the node, not a state: it pauses automatic work in any
//! state and is handled outside this function.
//!
//! What follows what is decided here too, as pure functions beside
//! [`transition`]: [`target_of`] (where an operator action means the node to
//! end up: deploy goes on to configure for a node with a role) and
//! [`continuation`] (after a step, which event starts the next one and what
//! target stays), and [`target_on_arrival`] (the target kept as the node
//! enters a state, the next step's included). The store only persists what
//! they decide.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use utoipa::ToSchema;

/// Where a node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Known to racklift, BMC not yet verified.
    Enrolled,
    /// Checking the BMC credentials and power state.
    Verifying,
    /// Verified and idle; ready for inspection or cleaning.
    Manageable,
    /// Booted into the inventory ramdisk, waiting for its inventory.
    Inspecting,
    /// Inspection failed; see `last_error`.
    InspectFailed,
    /// Disk wipe, BIOS and RAID configuration.
    Cleaning,
    /// Cleaning failed; see `last_error`.
    CleanFailed,
    /// Clean and ready to deploy.
    Available,
    /// Operating system being installed.
    Deploying,
    /// Installation failed; see `last_error`.
    DeployFailed,
    /// Operating system installed and booted.
    Active,
    /// Roles being applied to the installed host.
    Configuring,
    /// Applying roles failed; see `last_error`.
    ConfigureFailed,
    /// Installed, configured, serving its role.
    InService,
}

/// What can happen to a node: operator actions and the outcome of its current step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// Operator: verify the BMC and take the node under management.
    Manage,
    /// Operator: boot the inventory ramdisk and record the hardware.
    Inspect,
    /// Operator: clean the node and make it available.
    Provide,
    /// Operator: install the operating system.
    Deploy,
    /// Operator: apply the node's roles.
    Configure,
    /// Operator: clean and install again (keeps hostname and addresses).
    Reprovision,
    /// Operator: remove the installation (through cleaning) and make the node available.
    Undeploy,
    /// Operator: stop the step under way; the node goes to the phase's failed state.
    Abort,
    /// The current step finished successfully.
    Done,
    /// The current step failed (error, timeout, lost worker).
    Fail,
}

/// Every state, for exhaustive iteration.
pub const ALL_STATES: [State; 14] = [
    State::Enrolled,
    State::Verifying,
    State::Manageable,
    State::Inspecting,
    State::InspectFailed,
    State::Cleaning,
    State::CleanFailed,
    State::Available,
    State::Deploying,
    State::DeployFailed,
    State::Active,
    State::Configuring,
    State::ConfigureFailed,
    State::InService,
];

/// Every event, for exhaustive iteration.
pub const ALL_EVENTS: [Event; 10] = [
    Event::Manage,
    Event::Inspect,
    Event::Provide,
    Event::Deploy,
    Event::Configure,
    Event::Reprovision,
    Event::Undeploy,
    Event::Abort,
    Event::Done,
    Event::Fail,
];

/// An event that is not allowed in a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("'{event}' is not allowed in state '{state}'")]
pub struct InvalidTransition {
    pub state: State,
    pub event: Event,
}

/// The lifecycle: the state a node moves to when `event` happens in `state`.
pub fn transition(state: State, event: Event) -> Result<State, InvalidTransition> {
    use Event as E;
    use State as S;
    let next = match (state, event) {
        (S::Enrolled, E::Manage) => Some(S::Verifying),
        (
            S::Enrolled,
            E::Inspect
            | E::Provide
            | E::Deploy
            | E::Configure
            | E::Reprovision
            | E::Undeploy
            | E::Abort
            | E::Done
            | E::Fail,
        ) => None,

        (S::Verifying, E::Done) => Some(S::Manageable),
        (S::Verifying, E::Fail | E::Abort) => Some(S::Enrolled),
        (
            S::Verifying,
            E::Manage
            | E::Inspect
            | E::Provide
            | E::Deploy
            | E::Configure
            | E::Reprovision
            | E::Undeploy,
        ) => None,

        (S::Manageable, E::Inspect) => Some(S::Inspecting),
        (S::Manageable, E::Provide) => Some(S::Cleaning),
        (S::Manageable, E::Manage) => Some(S::Verifying),
        (
            S::Manageable,
            E::Deploy | E::Configure | E::Reprovision | E::Undeploy | E::Abort | E::Done | E::Fail,
        ) => None,

        (S::Inspecting, E::Done) => Some(S::Manageable),
        (S::Inspecting, E::Fail | E::Abort) => Some(S::InspectFailed),
        (
            S::Inspecting,
            E::Manage
            | E::Inspect
            | E::Provide
            | E::Deploy
            | E::Configure
            | E::Reprovision
            | E::Undeploy,
        ) => None,

        (S::InspectFailed, E::Inspect) => Some(S::Inspecting),
        (S::InspectFailed, E::Manage) => Some(S::Manageable),
        (S::InspectFailed, E::Reprovision) => Some(S::Cleaning),
        (
            S::InspectFailed,
            E::Provide | E::Deploy | E::Configure | E::Undeploy | E::Abort | E::Done | E::Fail,
        ) => None,

        (S::Cleaning, E::Done) => Some(S::Available),
        (S::Cleaning, E::Fail | E::Abort) => Some(S::CleanFailed),
        (
            S::Cleaning,
            E::Manage
            | E::Inspect
            | E::Provide
            | E::Deploy
            | E::Configure
            | E::Reprovision
            | E::Undeploy,
        ) => None,

        (S::CleanFailed, E::Manage) => Some(S::Manageable),
        (S::CleanFailed, E::Provide | E::Reprovision) => Some(S::Cleaning),
        (
            S::CleanFailed,
            E::Inspect | E::Deploy | E::Configure | E::Undeploy | E::Abort | E::Done | E::Fail,
        ) => None,

        (S::Available, E::Deploy) => Some(S::Deploying),
        (S::Available, E::Manage) => Some(S::Manageable),
        (
            S::Available,
            E::Inspect
            | E::Provide
            | E::Configure
            | E::Reprovision
            | E::Undeploy
            | E::Abort
            | E::Done
            | E::Fail,
        ) => None,

        (S::Deploying, E::Done) => Some(S::Active),
        (S::Deploying, E::Fail | E::Abort) => Some(S::DeployFailed),
        (
            S::Deploying,
            E::Manage
            | E::Inspect
            | E::Provide
            | E::Deploy
            | E::Configure
            | E::Reprovision
            | E::Undeploy,
        ) => None,

        (S::DeployFailed, E::Deploy) => Some(S::Deploying),
        (S::DeployFailed, E::Reprovision | E::Undeploy) => Some(S::Cleaning),
        (
            S::DeployFailed,
            E::Manage | E::Inspect | E::Provide | E::Configure | E::Abort | E::Done | E::Fail,
        ) => None,

        (S::Active, E::Configure) => Some(S::Configuring),
        (S::Active, E::Reprovision | E::Undeploy) => Some(S::Cleaning),
        (
            S::Active,
            E::Manage | E::Inspect | E::Provide | E::Deploy | E::Abort | E::Done | E::Fail,
        ) => None,

        (S::Configuring, E::Done) => Some(S::InService),
        (S::Configuring, E::Fail | E::Abort) => Some(S::ConfigureFailed),
        (
            S::Configuring,
            E::Manage
            | E::Inspect
            | E::Provide
            | E::Deploy
            | E::Configure
            | E::Reprovision
            | E::Undeploy,
        ) => None,

        (S::ConfigureFailed, E::Configure) => Some(S::Configuring),
        (S::ConfigureFailed, E::Reprovision | E::Undeploy) => Some(S::Cleaning),
        (
            S::ConfigureFailed,
            E::Manage | E::Inspect | E::Provide | E::Deploy | E::Abort | E::Done | E::Fail,
        ) => None,

        (S::InService, E::Configure) => Some(S::Configuring),
        (S::InService, E::Reprovision | E::Undeploy) => Some(S::Cleaning),
        (
            S::InService,
            E::Manage | E::Inspect | E::Provide | E::Deploy | E::Abort | E::Done | E::Fail,
        ) => None,
    };
    next.ok_or(InvalidTransition { state, event })
}

/// The state an operator action means the node to end up in: the step
/// chain keeps going until it is reached (deploy continues to configure
/// when the node has a role). `None` for events that end a step.
pub fn target_of(event: Event, has_role: bool) -> Option<State> {
    match event {
        Event::Manage | Event::Inspect => Some(State::Manageable),
        Event::Provide | Event::Undeploy => Some(State::Available),
        Event::Deploy | Event::Reprovision if has_role => Some(State::InService),
        Event::Deploy | Event::Reprovision => Some(State::Active),
        Event::Configure => Some(State::InService),
        Event::Abort | Event::Done | Event::Fail => None,
    }
}

/// What follows a step that ended with `event` (done or fail), moving the
/// node to `to`, on the way to `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Continuation {
    /// The event that starts the next step (deploy after cleaning, configure
    /// after deploying), or `None` when the chain stops here.
    pub next: Option<Event>,
    /// The target kept on the node once `to` is reached: cleared when
    /// reached, and on failure.
    pub target: Option<State>,
}

/// The lifecycle's continuation rule: a node with a target keeps going
/// (unless it is in maintenance, which pauses automatic work) and a failure
/// ends the chain.
pub fn continuation(
    event: Event,
    to: State,
    target: Option<State>,
    maintenance: bool,
) -> Continuation {
    let next = match (event, to, target) {
        (Event::Done, State::Available, Some(State::Active | State::InService)) => {
            Some(Event::Deploy)
        }
        (Event::Done, State::Active, Some(State::InService)) => Some(Event::Configure),
        _ => None,
    }
    .filter(|_| !maintenance);
    let target = match (event, next) {
        (Event::Fail, _) => None,
        (_, Some(_)) => target,
        (_, None) => target_on_arrival(to, target),
    };
    Continuation { next, target }
}

/// The target a node keeps on arriving in `to`: cleared once reached, kept
/// otherwise (as when the continuation's event starts the next step).
pub fn target_on_arrival(to: State, target: Option<State>) -> Option<State> {
    target.filter(|&t| t != to)
}

impl Event {
    /// Whether an operator may ask for this event (the others come from steps).
    pub fn is_operator_action(self) -> bool {
        !matches!(self, Event::Done | Event::Fail)
    }

    /// The event's name as used in the API and in event rows.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Manage => "manage",
            Event::Inspect => "inspect",
            Event::Provide => "provide",
            Event::Deploy => "deploy",
            Event::Configure => "configure",
            Event::Reprovision => "reprovision",
            Event::Undeploy => "undeploy",
            Event::Abort => "abort",
            Event::Done => "done",
            Event::Fail => "fail",
        }
    }
}

impl State {
    /// The state's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Enrolled => "enrolled",
            State::Verifying => "verifying",
            State::Manageable => "manageable",
            State::Inspecting => "inspecting",
            State::InspectFailed => "inspect_failed",
            State::Cleaning => "cleaning",
            State::CleanFailed => "clean_failed",
            State::Available => "available",
            State::Deploying => "deploying",
            State::DeployFailed => "deploy_failed",
            State::Active => "active",
            State::Configuring => "configuring",
            State::ConfigureFailed => "configure_failed",
            State::InService => "in_service",
        }
    }

    /// A state in which a step is under way (the node is not at rest).
    pub fn is_transient(self) -> bool {
        transition(self, Event::Done).is_ok()
    }

    /// A failed state (an operator must act, or reprovisioning takes over).
    pub fn is_failed(self) -> bool {
        ALL_STATES
            .iter()
            .any(|&s| transition(s, Event::Fail) == Ok(self) && s != State::Verifying)
    }

    /// The operator actions allowed in this state, derived from [`transition`].
    pub fn allowed_actions(self) -> Vec<Event> {
        ALL_EVENTS
            .iter()
            .copied()
            .filter(|e| e.is_operator_action() && transition(self, *e).is_ok())
            .collect()
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a known state or event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} '{name}'; expected one of: {expected}")]
pub struct UnknownName {
    pub what: &'static str,
    pub name: String,
    pub expected: String,
}

impl FromStr for State {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL_STATES
            .iter()
            .copied()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "state",
                name: s.to_string(),
                expected: ALL_STATES.map(State::as_str).join(", "),
            })
    }
}

impl FromStr for Event {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL_EVENTS
            .iter()
            .copied()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "event",
                name: s.to_string(),
                expected: ALL_EVENTS.map(Event::as_str).join(", "),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use State as S;

    #[test]
    fn a_deploy_goes_on_to_configure_only_with_a_role() {
        assert_eq!(target_of(Event::Deploy, false), Some(S::Active));
        assert_eq!(target_of(Event::Deploy, true), Some(S::InService));
        assert_eq!(target_of(Event::Reprovision, true), Some(S::InService));
        assert_eq!(target_of(Event::Provide, true), Some(S::Available));
        for e in [Event::Abort, Event::Done, Event::Fail] {
            assert_eq!(target_of(e, true), None, "{e}");
        }
    }

    #[test]
    fn continuation_follows_the_target_and_stops_on_failure_or_maintenance() {
        let c = |e, to, t, m| continuation(e, to, t, m);
        // Cleaned on the way to in_service: deploy next, target kept.
        assert_eq!(
            c(Event::Done, S::Available, Some(S::InService), false),
            Continuation {
                next: Some(Event::Deploy),
                target: Some(S::InService)
            }
        );
        // Deployed on the way to in_service: configure next.
        assert_eq!(
            c(Event::Done, S::Active, Some(S::InService), false).next,
            Some(Event::Configure)
        );
        // Reached: nothing next, the target is cleared.
        assert_eq!(
            c(Event::Done, S::Active, Some(S::Active), false),
            Continuation {
                next: None,
                target: None
            }
        );
        // Maintenance pauses the chain but keeps the target.
        assert_eq!(
            c(Event::Done, S::Available, Some(S::Active), true),
            Continuation {
                next: None,
                target: Some(S::Active)
            }
        );
        // A failure ends the chain and drops the target.
        assert_eq!(
            c(Event::Fail, S::CleanFailed, Some(S::InService), false),
            Continuation {
                next: None,
                target: None
            }
        );
        // Every continuation is a move transition allows.
        for to in [S::Available, S::Active] {
            for t in [S::Active, S::InService] {
                if let Some(e) = c(Event::Done, to, Some(t), false).next {
                    assert!(transition(to, e).is_ok(), "{to} -{e}->");
                }
            }
        }
    }

    #[test]
    fn the_target_is_kept_until_the_node_arrives_in_it() {
        // The next step starts on the way: the target stays.
        assert_eq!(
            target_on_arrival(S::Deploying, Some(S::InService)),
            Some(S::InService)
        );
        assert_eq!(
            target_on_arrival(S::Configuring, Some(S::InService)),
            Some(S::InService)
        );
        // Arrived: cleared.
        assert_eq!(target_on_arrival(S::Active, Some(S::Active)), None);
        assert_eq!(target_on_arrival(S::Active, None), None);
        // Every event a continuation starts keeps the target it continues toward.
        for to in [S::Available, S::Active] {
            for t in [S::Active, S::InService] {
                let c = continuation(Event::Done, to, Some(t), false);
                if let Some(e) = c.next {
                    let after = transition(to, e).unwrap();
                    assert_eq!(target_on_arrival(after, c.target), Some(t), "{to} -{e}->");
                }
            }
        }
    }

    /// The whole table, written out independently of `transition`: every pair not
    /// listed here must be refused.
    const ALLOWED: &[(State, Event, State)] = &[
        (S::Enrolled, Event::Manage, S::Verifying),
        (S::Verifying, Event::Done, S::Manageable),
        (S::Verifying, Event::Fail, S::Enrolled),
        (S::Verifying, Event::Abort, S::Enrolled),
        (S::Manageable, Event::Inspect, S::Inspecting),
        (S::Manageable, Event::Provide, S::Cleaning),
        (S::Manageable, Event::Manage, S::Verifying),
        (S::Inspecting, Event::Done, S::Manageable),
        (S::Inspecting, Event::Fail, S::InspectFailed),
        (S::Inspecting, Event::Abort, S::InspectFailed),
        (S::InspectFailed, Event::Inspect, S::Inspecting),
        (S::InspectFailed, Event::Manage, S::Manageable),
        (S::InspectFailed, Event::Reprovision, S::Cleaning),
        (S::Cleaning, Event::Done, S::Available),
        (S::Cleaning, Event::Fail, S::CleanFailed),
        (S::Cleaning, Event::Abort, S::CleanFailed),
        (S::CleanFailed, Event::Manage, S::Manageable),
        (S::CleanFailed, Event::Provide, S::Cleaning),
        (S::CleanFailed, Event::Reprovision, S::Cleaning),
        (S::Available, Event::Deploy, S::Deploying),
        (S::Available, Event::Manage, S::Manageable),
        (S::Deploying, Event::Done, S::Active),
        (S::Deploying, Event::Fail, S::DeployFailed),
        (S::Deploying, Event::Abort, S::DeployFailed),
        (S::DeployFailed, Event::Deploy, S::Deploying),
        (S::DeployFailed, Event::Reprovision, S::Cleaning),
        (S::DeployFailed, Event::Undeploy, S::Cleaning),
        (S::Active, Event::Configure, S::Configuring),
        (S::Active, Event::Reprovision, S::Cleaning),
        (S::Active, Event::Undeploy, S::Cleaning),
        (S::Configuring, Event::Done, S::InService),
        (S::Configuring, Event::Fail, S::ConfigureFailed),
        (S::Configuring, Event::Abort, S::ConfigureFailed),
        (S::ConfigureFailed, Event::Configure, S::Configuring),
        (S::ConfigureFailed, Event::Reprovision, S::Cleaning),
        (S::ConfigureFailed, Event::Undeploy, S::Cleaning),
        (S::InService, Event::Configure, S::Configuring),
        (S::InService, Event::Reprovision, S::Cleaning),
        (S::InService, Event::Undeploy, S::Cleaning),
    ];

    #[test]
    fn every_pair_matches_the_table() {
        let mut checked = 0;
        for s in ALL_STATES {
            for e in ALL_EVENTS {
                let expected = ALLOWED
                    .iter()
                    .find(|(fs, fe, _)| *fs == s && *fe == e)
                    .map(|(_, _, to)| *to);
                match expected {
                    Some(to) => assert_eq!(transition(s, e), Ok(to), "{s} --{e}-->"),
                    None => assert_eq!(
                        transition(s, e),
                        Err(InvalidTransition { state: s, event: e }),
                        "{s} --{e}--> should be refused"
                    ),
                }
                checked += 1;
            }
        }
        assert_eq!(checked, ALL_STATES.len() * ALL_EVENTS.len());
    }

    #[test]
    fn reprovision_from_active_in_service_and_every_failed_state() {
        for s in ALL_STATES {
            let expect = s == S::Active || s == S::InService || s.is_failed();
            assert_eq!(transition(s, Event::Reprovision).is_ok(), expect, "{s}");
        }
        let failed: Vec<_> = ALL_STATES.iter().filter(|s| s.is_failed()).collect();
        assert_eq!(
            failed,
            [
                &S::InspectFailed,
                &S::CleanFailed,
                &S::DeployFailed,
                &S::ConfigureFailed
            ]
        );
    }

    #[test]
    fn abort_and_fail_are_allowed_exactly_in_waiting_states() {
        for s in ALL_STATES {
            assert_eq!(transition(s, Event::Abort).is_ok(), s.is_transient(), "{s}");
            assert_eq!(transition(s, Event::Fail).is_ok(), s.is_transient(), "{s}");
        }
        let transient: Vec<_> = ALL_STATES.iter().filter(|s| s.is_transient()).collect();
        assert_eq!(
            transient,
            [
                &S::Verifying,
                &S::Inspecting,
                &S::Cleaning,
                &S::Deploying,
                &S::Configuring
            ]
        );
    }

    #[test]
    fn every_state_is_reachable_from_enrolled_and_can_reach_in_service() {
        let reach = |from: State| {
            let mut seen = vec![from];
            let mut i = 0;
            while i < seen.len() {
                for e in ALL_EVENTS {
                    if let Ok(n) = transition(seen[i], e)
                        && !seen.contains(&n)
                    {
                        seen.push(n);
                    }
                }
                i += 1;
            }
            seen
        };
        assert_eq!(reach(S::Enrolled).len(), ALL_STATES.len());
        for s in ALL_STATES {
            assert!(reach(s).contains(&S::InService), "{s} is a dead end");
        }
    }

    #[test]
    fn names_round_trip() {
        for s in ALL_STATES {
            assert_eq!(s.as_str().parse::<State>(), Ok(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for e in ALL_EVENTS {
            assert_eq!(e.as_str().parse::<Event>(), Ok(e));
        }
        let err = "bogus".parse::<Event>().unwrap_err();
        assert!(err.to_string().contains("manage, inspect"), "{err}");
    }

    #[test]
    fn allowed_actions_lists_only_operator_actions() {
        assert_eq!(S::Enrolled.allowed_actions(), vec![Event::Manage]);
        assert_eq!(
            S::Active.allowed_actions(),
            vec![Event::Configure, Event::Reprovision, Event::Undeploy]
        );
        assert_eq!(S::Inspecting.allowed_actions(), vec![Event::Abort]);
    }
}
