//! The `fake` BMC driver: machines that live in this process's memory.
//!
//! Each fake machine is keyed by its BMC address (or the node id when there is
//! none) and records its power state, next boot device and every command it
//! received, so tests can check what racklift asked of the "hardware". Faults
//! are scripted through the node's BMC settings, so they work through the API:
//!
//! - password `wrong`: the credentials are refused (not retried);
//! - address starting with `unreachable`: every command times out (retried, then fails);
//! - address starting with `flaky`: every other command times out (retries succeed);
//! - address containing `refuses-KIND`: every command of that kind is refused
//!   (not retried); `refuses-KIND-atN`: only the Nth one of this process;
//! - address containing `slow-KIND`: each command of that kind takes 2 s.
//!
//! The kinds: `power-state`, `power-on`, `power-off`, `power-reset`,
//! `power-softoff`, `boot-pxe`, `boot-disk`, `boot-cd`, `boot-uefihttp`, `power-cycle`, `bios`,
//! `bios-set`, `raid`, `raid-create`, `raid-delete`, `inventory`.
//!
//! A fake machine also has BIOS attributes ([`FAKE_BIOS`]; changes wait until
//! the next power on or reset, like a real BMC's settings object), four disks
//! `disk0`..`disk3` of 480 GB on controller `raid0`, and the RAID volumes
//! created on them.

use super::{
    BiosSettings, BmcDisk, BmcDriver, BmcError, BmcInventory, BmcTarget, BootDevice, BootOverride,
    PowerAction, PowerState, RaidVolume, VolumeSpec,
};
use async_trait::async_trait;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The BIOS attributes a fake machine starts with.
pub const FAKE_BIOS: &[(&str, &str)] = &[
    ("BootMode", "Uefi"),
    ("ProcVirtualization", "Disabled"),
    ("SriovGlobalEnable", "Disabled"),
];

const FAKE_DISK_BYTES: u64 = 480_000_000_000;

/// One fake machine's state.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeMachine {
    pub powered: bool,
    pub boot: Option<(BootDevice, bool)>,
    /// Every command received, in order (`power on`, `boot pxe once`, ...).
    pub commands: Vec<String>,
    pub bios: Map<String, Value>,
    /// Set, not yet applied: applied at the next power on or reset.
    pub bios_pending: Map<String, Value>,
    pub volumes: Vec<RaidVolume>,
    calls: u64,
    /// Commands of each kind received (for `refuses-KIND@N`).
    kinds: HashMap<String, u64>,
    next_volume: u64,
}

impl Default for FakeMachine {
    fn default() -> Self {
        FakeMachine {
            powered: false,
            boot: None,
            commands: Vec::new(),
            bios: FAKE_BIOS
                .iter()
                .map(|(k, v)| (k.to_string(), Value::from(*v)))
                .collect(),
            bios_pending: Map::new(),
            volumes: Vec::new(),
            calls: 0,
            kinds: HashMap::new(),
            next_volume: 0,
        }
    }
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
    /// A command of `kind` on the machine, with the faults its address scripts.
    async fn with<T>(
        &self,
        kind: &str,
        f: impl FnOnce(&mut FakeMachine) -> T,
    ) -> Result<T, BmcError> {
        if self.key.contains(&format!("slow-{kind}")) {
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
        let mut all = self.bmcs.lock();
        let m = all.entry(self.key.clone()).or_default();
        m.calls += 1;
        let n = {
            let n = m.kinds.entry(kind.to_string()).or_default();
            *n += 1;
            *n
        };
        let refused = self.key.split(['.', ',']).any(|part| {
            let Some(r) = part.strip_prefix("refuses-") else {
                return false;
            };
            match r.rsplit_once("-at").map(|(k, at)| (k, at.parse::<u64>())) {
                Some((k, Ok(at))) => k == kind && at == n,
                _ => r == kind,
            }
        });
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
        if refused {
            return Err(BmcError::Refused {
                address: self.key.clone(),
                detail: format!("{kind} refused (a fault scripted in the address)"),
            });
        }
        Ok(f(m))
    }
}

#[async_trait]
impl BmcDriver for FakeDriver {
    async fn power_state(&self) -> Result<PowerState, BmcError> {
        self.with("power-state", |m| {
            if m.powered {
                PowerState::On
            } else {
                PowerState::Off
            }
        })
        .await
    }

    async fn power(&self, action: PowerAction) -> Result<(), BmcError> {
        let kind = format!("power-{action:?}").to_lowercase();
        self.with(&kind, |m| {
            m.powered = !matches!(action, PowerAction::Off | PowerAction::SoftOff);
            m.commands.push(format!("power {action:?}").to_lowercase());
            if m.powered && !m.bios_pending.is_empty() {
                let pending = std::mem::take(&mut m.bios_pending);
                m.commands
                    .push(format!("bios applied: {}", Value::Object(pending.clone())));
                m.bios.extend(pending);
            }
            if m.boot.is_some_and(|(_, persistent)| !persistent) && m.powered {
                m.commands
                    .push("booted once from the one-time device".into());
                m.boot = None;
            }
        })
        .await
    }

    async fn set_boot(&self, boot: BootOverride) -> Result<(), BmcError> {
        let (device, persistent, mode) = (boot.device, boot.persistent, boot.mode);
        let kind = format!("boot-{device:?}").to_lowercase();
        self.with(&kind, |m| {
            m.boot = Some((device, persistent));
            let how = if persistent { "persistent" } else { "once" };
            let mode = mode.map(|m| format!(" {m:?}")).unwrap_or_default();
            m.commands
                .push(format!("boot {device:?} {how}{mode}").to_lowercase());
        })
        .await
    }

    async fn bios(&self) -> Result<BiosSettings, BmcError> {
        self.with("bios", |m| BiosSettings {
            current: m.bios.clone(),
            pending: m.bios_pending.clone(),
        })
        .await
    }

    async fn set_bios(&self, changes: &Map<String, Value>) -> Result<(), BmcError> {
        let key = self.key.clone();
        self.with("bios-set", |m| {
            if let Some(unknown) = changes.keys().find(|k| !m.bios.contains_key(*k)) {
                return Err(BmcError::Refused {
                    address: key,
                    detail: format!("unknown BIOS attribute '{unknown}'"),
                });
            }
            m.bios_pending
                .extend(changes.iter().map(|(k, v)| (k.clone(), v.clone())));
            m.commands
                .push(format!("bios set: {}", Value::Object(changes.clone())));
            Ok(())
        })
        .await?
    }

    async fn raid_volumes(&self) -> Result<Vec<RaidVolume>, BmcError> {
        self.with("raid", |m| m.volumes.clone()).await
    }

    async fn create_volume(&self, spec: &VolumeSpec) -> Result<RaidVolume, BmcError> {
        spec.check()?;
        let level = spec.raid_type()?;
        let key = self.key.clone();
        self.with("raid-create", |m| {
            let refused = |detail: String| BmcError::Refused {
                address: key.clone(),
                detail,
            };
            let disks = fake_disks();
            for d in &spec.drives {
                if !disks.iter().any(|x| &x.id == d) {
                    return Err(refused(format!("no disk '{d}'")));
                }
                if m.volumes.iter().any(|v| v.drives.contains(d)) {
                    return Err(refused(format!("disk '{d}' already belongs to a volume")));
                }
            }
            m.next_volume += 1;
            let v = RaidVolume {
                id: format!("volume{}", m.next_volume),
                name: spec.name.clone(),
                level: Some(level.clone()),
                capacity_bytes: spec
                    .capacity_bytes
                    .or(Some(FAKE_DISK_BYTES * spec.drives.len().max(1) as u64)),
                drives: spec.drives.clone(),
                storage: "raid0".into(),
            };
            m.commands.push(format!(
                "raid create {} {level} {}",
                v.id,
                spec.drives.join(",")
            ));
            m.volumes.push(v.clone());
            Ok(v)
        })
        .await?
    }

    async fn delete_volume(&self, id: &str) -> Result<(), BmcError> {
        let key = self.key.clone();
        self.with("raid-delete", |m| {
            let before = m.volumes.len();
            m.volumes.retain(|v| v.id != id);
            if m.volumes.len() == before {
                return Err(BmcError::NoVolume {
                    address: key,
                    id: id.to_string(),
                    known: m.volumes.iter().map(|v| v.id.clone()).collect(),
                });
            }
            m.commands.push(format!("raid delete {id}"));
            Ok(())
        })
        .await?
    }

    async fn inventory(&self) -> Result<BmcInventory, BmcError> {
        let key = self.key.clone();
        self.with("inventory", |_| BmcInventory {
            manufacturer: Some("racklift".into()),
            model: Some("fake machine".into()),
            serial: Some(format!("FAKE-{key}")),
            disks: fake_disks(),
            ..Default::default()
        })
        .await
    }
}

fn fake_disks() -> Vec<BmcDisk> {
    (0..4)
        .map(|i| BmcDisk {
            id: format!("disk{i}"),
            name: Some(format!("Disk {i}")),
            model: Some("FAKE-SSD".into()),
            serial: Some(format!("FAKESN{i}")),
            capacity_bytes: Some(FAKE_DISK_BYTES),
            media: Some("SSD".into()),
            storage: Some("raid0".into()),
        })
        .collect()
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
        let mut bios = Map::new();
        bios.insert("ProcVirtualization".into(), "Enabled".into());
        d.set_bios(&bios).await.unwrap();
        let b = d.bios().await.unwrap();
        assert_eq!(b.pending, bios, "pending until the next boot");
        assert_eq!(b.current["ProcVirtualization"], "Disabled");
        d.power(PowerAction::Reset).await.unwrap();
        let b = d.bios().await.unwrap();
        assert!(b.pending.is_empty());
        assert!(super::super::bios_mismatches(&bios, &b.current).is_empty());
        bios.insert("NoSuchThing".into(), "1".into());
        assert!(d.set_bios(&bios).await.is_err());
        let v = d
            .create_volume(&VolumeSpec {
                level: "1".into(),
                drives: vec!["disk0".into(), "disk1".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(v.level.as_deref(), Some("RAID1"));
        assert_eq!(d.raid_volumes().await.unwrap(), vec![v.clone()]);
        d.delete_volume(&v.id).await.unwrap();
        assert!(d.raid_volumes().await.unwrap().is_empty());

        let flaky = bmcs.driver(&target("flaky-1", "pw"));
        assert!(flaky.power_state().await.is_err());
        assert!(flaky.power_state().await.is_ok());
    }
}
