//! Typed plans: what each phase of a node's life does, stage by stage.
//!
//! A transient state has one step ([`Phase`]); a step carries out its phase's
//! [`plan`], a fixed list of [`Stage`]s, in order. Each stage is idempotent
//! (running it again after a crash leaves the machine as running it once
//! does), and its result is recorded before the next one starts, so a restart
//! resumes at the first unfinished stage. A stage that changes the machine in
//! a way a failure must undo names a [`Cleanup`]; when a step fails, the
//! cleanups of the stages it reached run in reverse order before the node
//! takes its failed state.
//!
//! This module is pure: it decides what follows what. The conductor performs
//! the stages that are [`Work`] (all but the wait for the agent's report);
//! the store keeps the step's current stage and the stage records.
//! Names are converted to and from text only at the store's edge
//! ([`Stage::as_str`], [`Stage::parse`]).

use crate::state::State;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The names of an enum's variants, as the database and the API write them:
/// `ALL`, `as_str`, `parse` and `Display`.
macro_rules! named {
    ($ty:ident { $($v:ident => $s:literal),+ $(,)? }) => {
        impl $ty {
            /// Every variant.
            pub const ALL: &'static [$ty] = &[$($ty::$v),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$v => $s),+
                }
            }

            /// The variant named `s`, if any.
            pub fn parse(s: &str) -> Option<$ty> {
                Self::ALL.iter().copied().find(|x| x.as_str() == s)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// The phase a step carries out, one per transient state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Verify,
    Inspect,
    Clean,
    Deploy,
    Configure,
}

impl Phase {
    /// The phase of a transient state.
    pub fn of(state: State) -> Option<Phase> {
        match state {
            State::Verifying => Some(Phase::Verify),
            State::Inspecting => Some(Phase::Inspect),
            State::Cleaning => Some(Phase::Clean),
            State::Deploying => Some(Phase::Deploy),
            State::Configuring => Some(Phase::Configure),
            State::Enrolled
            | State::Manageable
            | State::InspectFailed
            | State::CleanFailed
            | State::Available
            | State::DeployFailed
            | State::Active
            | State::ConfigureFailed
            | State::InService => None,
        }
    }

    /// The stages of this phase, in order.
    pub fn plan(self) -> &'static [Stage] {
        use Stage::*;
        match self {
            Phase::Verify => &[ReadPower],
            Phase::Inspect => &[Netboot, AwaitAgent, PowerOff],
            Phase::Clean => &[
                ApplyBios,
                ApplyRaid,
                Netboot,
                AwaitAgent,
                VerifySettings,
                PowerOff,
            ],
            Phase::Deploy => &[Netboot, AwaitAgent, SetBootDisk, BootDisk],
            Phase::Configure => &[ApplyRole],
        }
    }

    /// The stage a new step starts at.
    pub fn first(self) -> Stage {
        self.plan()[0]
    }

    /// The stage after `stage` in this phase's plan; `None` after the last
    /// one (or for a stage not in the plan).
    pub fn after(self, stage: Stage) -> Option<Stage> {
        let plan = self.plan();
        let i = plan.iter().position(|s| *s == stage)?;
        plan.get(i + 1).copied()
    }

    /// Where `stage` is in this phase's plan.
    pub fn position(self, stage: Stage) -> Option<usize> {
        self.plan().iter().position(|s| *s == stage)
    }

    /// The cleanups owed when a step of this phase fails at `stage`: those
    /// of the stages up to and including it, the latest first.
    pub fn cleanups_at(self, stage: Stage) -> Vec<(Stage, Cleanup)> {
        let plan = self.plan();
        let upto = plan.iter().position(|s| *s == stage).map_or(0, |i| i + 1);
        plan[..upto]
            .iter()
            .rev()
            .filter_map(|s| s.cleanup().map(|c| (*s, c)))
            .collect()
    }

    /// Whether the agent's boot is over for a step of this phase at `stage`
    /// (`failed`: the step keeps a failure): the agent has reported or the
    /// step failed, so no token is handed out for it and the agent is told
    /// to power off.
    pub fn boot_over(self, stage: Stage, failed: bool) -> bool {
        failed
            || match (self.position(stage), self.position(Stage::AwaitAgent)) {
                (Some(at), Some(wait)) => at > wait,
                _ => false,
            }
    }
}

named!(Phase {
    Verify => "verify",
    Inspect => "inspect",
    Clean => "clean",
    Deploy => "deploy",
    Configure => "configure",
});

/// One stage of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Read the power state through the BMC (which proves the credentials).
    ReadPower,
    /// Apply the BIOS attributes of the node's profile (in force at the next boot).
    ApplyBios,
    /// Create the RAID volume of the node's profile, unless one of its level exists.
    ApplyRaid,
    /// A new agent boot: set a one-time network boot and power on (or reset).
    Netboot,
    /// Wait for the agent's report (an inventory, or a result).
    AwaitAgent,
    /// Check that the profile's BIOS and RAID settings are in force.
    VerifySettings,
    /// Power the machine off.
    PowerOff,
    /// Make the disk the persistent boot device.
    SetBootDisk,
    /// Reset the machine into its installed system.
    BootDisk,
    /// Apply the node's role to the installed host.
    ApplyRole,
}

/// A stage the conductor performs itself: every [`Stage`] but the one that
/// waits for a report, so that what is performed cannot be a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Work {
    ReadPower,
    ApplyBios,
    ApplyRaid,
    Netboot,
    VerifySettings,
    PowerOff,
    SetBootDisk,
    BootDisk,
    ApplyRole,
}

impl Stage {
    /// What the conductor performs at this stage; `None` for a stage that
    /// waits for a report from outside (the step is `waiting` until it comes).
    pub fn work(self) -> Option<Work> {
        Some(match self {
            Stage::ReadPower => Work::ReadPower,
            Stage::ApplyBios => Work::ApplyBios,
            Stage::ApplyRaid => Work::ApplyRaid,
            Stage::Netboot => Work::Netboot,
            Stage::AwaitAgent => return None,
            Stage::VerifySettings => Work::VerifySettings,
            Stage::PowerOff => Work::PowerOff,
            Stage::SetBootDisk => Work::SetBootDisk,
            Stage::BootDisk => Work::BootDisk,
            Stage::ApplyRole => Work::ApplyRole,
        })
    }

    /// Whether the stage waits for a report from outside rather than
    /// running in the conductor (it has no [`Work`]).
    pub fn awaits(self) -> bool {
        self.work().is_none()
    }

    /// What undoes this stage when its step fails.
    pub fn cleanup(self) -> Option<Cleanup> {
        match self {
            // A machine left running the ramdisk would go on serving a boot
            // whose step has ended.
            Stage::Netboot => Some(Cleanup::PowerOff),
            // A failed deployment must not boot a half-installed disk.
            Stage::SetBootDisk => Some(Cleanup::BootFromNetwork),
            Stage::ReadPower
            | Stage::ApplyBios
            | Stage::ApplyRaid
            | Stage::AwaitAgent
            | Stage::VerifySettings
            | Stage::PowerOff
            | Stage::BootDisk
            | Stage::ApplyRole => None,
        }
    }
}

named!(Stage {
    ReadPower => "read_power",
    ApplyBios => "apply_bios",
    ApplyRaid => "apply_raid",
    Netboot => "netboot",
    AwaitAgent => "await_agent",
    VerifySettings => "verify_settings",
    PowerOff => "power_off",
    SetBootDisk => "set_boot_disk",
    BootDisk => "boot_disk",
    ApplyRole => "apply_role",
});

/// What undoes a stage of a failed step. Every cleanup is idempotent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cleanup {
    /// Power the machine off.
    PowerOff,
    /// Make the network the persistent boot device again.
    BootFromNetwork,
}

named!(Cleanup {
    PowerOff => "power_off",
    BootFromNetwork => "boot_from_network",
});

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Due to run (from `run_after`).
    Pending,
    /// Held by a conductor worker under a lease.
    Running,
    /// At a stage that waits for a report.
    Waiting,
    Done,
    Failed,
    /// Replaced by an operator's action (abort, a new phase).
    Cancelled,
}

named!(StepStatus {
    Pending => "pending",
    Running => "running",
    Waiting => "waiting",
    Done => "done",
    Failed => "failed",
    Cancelled => "cancelled",
});

impl StepStatus {
    /// Whether the step is still under way (at most one per node).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            StepStatus::Pending | StepStatus::Running | StepStatus::Waiting
        )
    }
}

/// How one stage run (or cleanup) ended, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageResult {
    Done,
    Failed,
    /// A transient failure; the stage runs again after a delay.
    Retried,
}

named!(StageResult {
    Done => "done",
    Failed => "failed",
    Retried => "retried",
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Phase::ALL {
            assert_eq!(Phase::parse(p.as_str()), Some(*p));
        }
        for s in Stage::ALL {
            assert_eq!(Stage::parse(s.as_str()), Some(*s));
        }
        for s in StepStatus::ALL {
            assert_eq!(StepStatus::parse(s.as_str()), Some(*s));
        }
        assert_eq!(Stage::parse("start"), None);
    }

    #[test]
    fn every_stage_is_in_a_plan_and_plans_have_no_repeats() {
        for s in Stage::ALL {
            assert!(
                Phase::ALL.iter().any(|p| p.plan().contains(s)),
                "{s} is in no plan"
            );
        }
        for p in Phase::ALL {
            let plan = p.plan();
            for (i, s) in plan.iter().enumerate() {
                assert!(!plan[i + 1..].contains(s), "{s} twice in {p}");
            }
            // A phase that boots an agent waits for it right after.
            if let Some(i) = p.position(Stage::Netboot) {
                assert_eq!(plan[i + 1], Stage::AwaitAgent);
            }
        }
    }

    #[test]
    fn every_stage_but_the_wait_is_work() {
        let waits: Vec<_> = Stage::ALL.iter().filter(|s| s.awaits()).collect();
        assert_eq!(waits, [&Stage::AwaitAgent]);
        // Each performed stage is its own work.
        let mut works: Vec<Work> = Stage::ALL.iter().filter_map(|s| s.work()).collect();
        works.dedup();
        assert_eq!(works.len(), Stage::ALL.len() - 1);
    }

    #[test]
    fn stages_follow_each_other() {
        assert_eq!(Phase::Inspect.first(), Stage::Netboot);
        assert_eq!(
            Phase::Inspect.after(Stage::Netboot),
            Some(Stage::AwaitAgent)
        );
        assert_eq!(Phase::Inspect.after(Stage::PowerOff), None);
        assert_eq!(Phase::Verify.after(Stage::Netboot), None);
        assert!(Phase::Clean.boot_over(Stage::VerifySettings, false));
        assert!(!Phase::Clean.boot_over(Stage::AwaitAgent, false));
        assert!(Phase::Clean.boot_over(Stage::AwaitAgent, true));
        assert!(!Phase::Clean.boot_over(Stage::ApplyBios, false));
        assert!(!Phase::Verify.boot_over(Stage::ReadPower, false));
    }

    #[test]
    fn cleanups_undo_what_was_reached_latest_first() {
        assert!(Phase::Clean.cleanups_at(Stage::ApplyRaid).is_empty());
        assert_eq!(
            Phase::Clean.cleanups_at(Stage::Netboot),
            [(Stage::Netboot, Cleanup::PowerOff)]
        );
        assert_eq!(
            Phase::Deploy.cleanups_at(Stage::BootDisk),
            [
                (Stage::SetBootDisk, Cleanup::BootFromNetwork),
                (Stage::Netboot, Cleanup::PowerOff)
            ]
        );
        assert!(Phase::Verify.cleanups_at(Stage::ReadPower).is_empty());
    }
}
