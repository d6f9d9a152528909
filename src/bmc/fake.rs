//! The `fake` BMC driver: machines that live in this process's memory.
//!
//! Each fake machine is keyed by its BMC address (or the node id when there is
//! none) and records its power state, next boot device and every command it
//! received, so tests can check what racklift asked of the "hardware". Faults
//! are scripted through the node's BMC settings, so they work through the API:
//!
//! - password `wrong`: the credentials are refused (not retried);
//! - address starting with `unreachable`: every command times out (retried, then fails);
//! - address starting with `flaky`: every other command times out (retries succeed).

use super::{BmcDriver, BmcError, BmcTarget, BootDevice, PowerAction, PowerState};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One fake machine's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeMachine {
    pub powered: bool,
    pub boot: Option<(BootDevice, bool)>,
    /// Every command received, in order (`power on`, `boot pxe once`, ...).
    pub commands: Vec<String>,
    calls: u64,
}

/// The fake machines of this process.
#[derive(Clone, Default)]
pub struct FakeBmcs {
    machines: Arc<Mutex<HashMap<String, FakeMachine>>>,
}

impl FakeBmcs {
    /// A snapshot of the machine behind `key` (BMC address or node id).
    pub fn machine(&self, key: &str) -> Option<FakeMachine> {
        self.lock().get(key).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, FakeMachine>> {
        self.machines.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn driver(&self, t: &BmcTarget) -> FakeDriver {
        FakeDriver {
            bmcs: self.clone(),
            key: t.address.clone().unwrap_or_else(|| t.node_key.clone()),
            user: t.username.clone().unwrap_or_default(),
            wrong_password: t.password.as_deref() == Some("wrong"),
        }
    }
}

pub(super) struct FakeDriver {
    bmcs: FakeBmcs,
    key: String,
    user: String,
    wrong_password: bool,
}

impl FakeDriver {
    fn with<T>(&self, f: impl FnOnce(&mut FakeMachine) -> T) -> Result<T, BmcError> {
        let mut all = self.bmcs.lock();
        let m = all.entry(self.key.clone()).or_default();
        m.calls += 1;
        let timeout = || BmcError::Transient {
            address: self.key.clone(),
            detail: "timed out after 5 s".into(),
        };
        if self.key.starts_with("unreachable") {
            return Err(timeout());
        }
        if self.key.starts_with("flaky") && m.calls % 2 == 1 {
            return Err(timeout());
        }
        if self.wrong_password {
            return Err(BmcError::Auth {
                address: self.key.clone(),
                user: self.user.clone(),
            });
        }
        Ok(f(m))
    }
}

#[async_trait]
impl BmcDriver for FakeDriver {
    async fn power_state(&self) -> Result<PowerState, BmcError> {
        self.with(|m| {
            if m.powered {
                PowerState::On
            } else {
                PowerState::Off
            }
        })
    }

    async fn power(&self, action: PowerAction) -> Result<(), BmcError> {
        self.with(|m| {
            m.powered = !matches!(action, PowerAction::Off | PowerAction::SoftOff);
            m.commands.push(format!("power {action:?}").to_lowercase());
            if m.boot.is_some_and(|(_, persistent)| !persistent) && m.powered {
                m.commands
                    .push("booted once from the one-time device".into());
                m.boot = None;
            }
        })
    }

    async fn set_boot_device(&self, device: BootDevice, persistent: bool) -> Result<(), BmcError> {
        self.with(|m| {
            m.boot = Some((device, persistent));
            let how = if persistent { "persistent" } else { "once" };
            m.commands
                .push(format!("boot {device:?} {how}").to_lowercase());
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::BmcDriverKind;

    fn target(addr: &str, pw: &str) -> BmcTarget {
        BmcTarget {
            driver: BmcDriverKind::Fake,
            address: Some(addr.into()),
            port: None,
            username: Some("admin".into()),
            password: Some(pw.into()),
            verify_tls: true,
            node_key: "n".into(),
        }
    }

    #[tokio::test]
    async fn records_commands_and_scripted_faults() {
        let bmcs = FakeBmcs::default();
        let d = bmcs.driver(&target("10.0.0.1", "pw"));
        assert_eq!(d.power_state().await, Ok(PowerState::Off));
        d.set_boot_device(BootDevice::Pxe, false).await.unwrap();
        d.power(PowerAction::On).await.unwrap();
        assert_eq!(d.power_state().await, Ok(PowerState::On));
        let m = bmcs.machine("10.0.0.1").unwrap();
        assert_eq!(
            m.commands,
            [
                "boot pxe once",
                "power on",
                "booted once from the one-time device"
            ]
        );
        assert_eq!(m.boot, None);

        let bad = bmcs.driver(&target("10.0.0.2", "wrong"));
        let e = bad.power_state().await.unwrap_err();
        assert!(
            !e.is_transient() && e.to_string().contains("refused the credentials"),
            "{e}"
        );
        let down = bmcs.driver(&target("unreachable-1", "pw"));
        assert!(down.power_state().await.unwrap_err().is_transient());
        let flaky = bmcs.driver(&target("flaky-1", "pw"));
        assert!(flaky.power_state().await.is_err());
        assert!(flaky.power_state().await.is_ok());
    }
}
