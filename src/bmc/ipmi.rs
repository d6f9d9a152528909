//! The `ipmi` BMC driver: IPMI 2.0 over LAN (RMCP+, "lanplus"), cipher suite 3
//! (RAKP-HMAC-SHA1 authentication, HMAC-SHA1-96 integrity, AES-CBC-128
//! confidentiality), through the `ipmi-rs` crate.
//!
//! Every driver call is one session: activate with the node's user name and
//! password, raise the session to the administrator level, send the command
//! (Get Chassis Status, Chassis Control or Set System Boot Options; see
//! `commands`), close the session. ipmi-rs is blocking, so a session runs in
//! `spawn_blocking`; it does not retransmit, so its packets go through a small
//! `relay` that resends a request whose answer is late (1 s per try, 4 tries
//! by default, [`IpmiSettings`]).
//!
//! Errors are classified for the conductor:
//! - no answer, a closed port, an unresolvable name, "busy"/"initialising"
//!   completion codes, no free session slot: [`BmcError::Transient`];
//! - unknown user or wrong password: [`BmcError::Auth`] (never retried);
//! - any other completion code or protocol refusal: [`BmcError::Refused`], with
//!   the code in words;
//! - what IPMI cannot express (UEFI HTTP boot) or credentials IPMI cannot
//!   carry: [`BmcError::Unsupported`].
//!
//! [`crate::bmc::Drivers`] hands every driver for the same BMC address and port
//! one lock, held for the whole session, so one BMC never sees two of
//! racklift's sessions at once.

mod commands;
mod relay;

pub use commands::{
    BootSelector, ChassisControl, ChassisStatus, CloseSession, GetChassisStatus, SetBootFlags,
    SetSessionPrivilegeLevel,
};

use super::{
    BiosSettings, BmcDriver, BmcError, BmcInventory, BmcTarget, BootDevice, BootOverride,
    PowerAction, PowerState, RaidVolume, VolumeSpec,
};
use async_trait::async_trait;
use ipmi_rs::connection::IpmiCommand;
use ipmi_rs::rmcp::{ActivationError, RakpMessage4ParseError, Rmcp, V2_0ActivationError};
use ipmi_rs::{Ipmi, IpmiError};
use relay::{Failure, Relay, Tries};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

/// The IPMI-over-LAN UDP port.
pub const DEFAULT_PORT: u16 = 623;

/// Which firmware boot path the boot flags ask for (the EFI bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FirmwareBoot {
    #[default]
    Uefi,
    /// PC-compatible (BIOS) boot.
    Legacy,
}

/// How the IPMI driver talks to BMCs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpmiSettings {
    /// How long to wait for each answer before sending the request again.
    pub try_timeout: Duration,
    /// How many times a request is sent before the BMC counts as unreachable.
    pub tries: u32,
    /// The EFI bit of the boot flags.
    pub firmware_boot: FirmwareBoot,
}

impl Default for IpmiSettings {
    fn default() -> Self {
        IpmiSettings {
            try_timeout: Duration::from_secs(1),
            tries: 4,
            firmware_boot: FirmwareBoot::Uefi,
        }
    }
}

/// One lock per BMC (address and port), shared by every driver for it.
#[derive(Clone, Default)]
pub(crate) struct BmcLocks(Arc<std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>);

impl BmcLocks {
    pub(crate) fn get(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Forget locks nobody holds or waits for.
        all.retain(|_, l| Arc::strong_count(l) > 1);
        all.entry(key.to_string()).or_default().clone()
    }
}

/// Where and as whom to open sessions.
#[derive(Clone)]
struct Endpoint {
    host: String,
    port: u16,
    user: String,
    password: Vec<u8>,
    settings: IpmiSettings,
}

impl Endpoint {
    /// `host:port`, as errors name the BMC.
    fn label(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn transient(&self, detail: impl Into<String>) -> BmcError {
        BmcError::Transient {
            address: self.label(),
            detail: detail.into(),
        }
    }

    fn refused(&self, detail: impl Into<String>) -> BmcError {
        BmcError::Refused {
            address: self.label(),
            detail: detail.into(),
        }
    }

    fn auth(&self) -> BmcError {
        BmcError::Auth {
            address: self.label(),
            user: self.user.clone(),
        }
    }

    fn tries(&self) -> Tries {
        Tries {
            timeout: self.settings.try_timeout,
            count: self.settings.tries.max(1),
        }
    }
}

/// The `ipmi` driver for one BMC.
pub struct IpmiDriver {
    endpoint: Endpoint,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for IpmiDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpmiDriver")
            .field("bmc", &self.endpoint.label())
            .field("user", &self.endpoint.user)
            .field("settings", &self.endpoint.settings)
            .finish()
    }
}

impl IpmiDriver {
    /// The lock key of a target: its BMC's address and port.
    pub(super) fn lock_key(target: &BmcTarget) -> String {
        format!(
            "{}:{}",
            target
                .address
                .as_deref()
                .unwrap_or_default()
                .to_ascii_lowercase(),
            target.port.unwrap_or(DEFAULT_PORT)
        )
    }

    /// A driver for `target`; `lock` must be the one lock of its BMC.
    pub(super) fn new(
        target: &BmcTarget,
        settings: IpmiSettings,
        lock: Arc<tokio::sync::Mutex<()>>,
    ) -> Result<IpmiDriver, BmcError> {
        let host = target
            .address
            .clone()
            .ok_or_else(|| BmcError::Unsupported("an IPMI BMC needs an address".into()))?;
        let user = target.username.clone().unwrap_or_default();
        // RAKP carries at most 16 bytes of ASCII without NUL; ipmi-rs would
        // silently truncate or drop anything else.
        if user.len() > 16 || !user.bytes().all(|b| b.is_ascii() && b != 0) {
            return Err(BmcError::Unsupported(format!(
                "IPMI user names are at most 16 ASCII characters; '{user}' is not"
            )));
        }
        let password = target.password.clone().unwrap_or_default().into_bytes();
        if password.len() > 20 {
            return Err(BmcError::Unsupported(format!(
                "IPMI 2.0 passwords are at most 20 bytes; this one has {}",
                password.len()
            )));
        }
        Ok(IpmiDriver {
            endpoint: Endpoint {
                host,
                port: target.port.unwrap_or(DEFAULT_PORT),
                user,
                password,
                settings,
            },
            lock,
        })
    }

    /// Runs `op` in one session, holding the BMC's lock until the session is over.
    async fn run<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut Session<'_>) -> Result<T, BmcError> + Send + 'static,
    ) -> Result<T, BmcError> {
        let guard = self.lock.clone().lock_owned().await;
        let endpoint = self.endpoint.clone();
        let label = endpoint.label();
        let joined = tokio::task::spawn_blocking(move || {
            // Held until the session is closed, even if the caller gives up waiting.
            let _guard = guard;
            session(&endpoint, op)
        })
        .await;
        match joined {
            Ok(r) => r,
            Err(e) => {
                let why = if e.is_panic() {
                    let p = e.into_panic();
                    p.downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown failure".into())
                } else {
                    e.to_string()
                };
                Err(BmcError::Transient {
                    address: label,
                    detail: format!("the IPMI session ended abnormally: {why}"),
                })
            }
        }
    }
}

#[async_trait]
impl BmcDriver for IpmiDriver {
    async fn power_state(&self) -> Result<PowerState, BmcError> {
        self.run(|s| {
            let st = s.call(GetChassisStatus)?;
            Ok(if st.power_on {
                PowerState::On
            } else {
                PowerState::Off
            })
        })
        .await
    }

    async fn power(&self, action: PowerAction) -> Result<(), BmcError> {
        let c = match action {
            PowerAction::On => ChassisControl::PowerUp,
            PowerAction::Off => ChassisControl::PowerDown,
            PowerAction::SoftOff => ChassisControl::SoftShutdown,
            PowerAction::Reset => ChassisControl::HardReset,
            PowerAction::Cycle => ChassisControl::PowerCycle,
        };
        self.run(move |s| s.call(c)).await
    }

    async fn set_boot(&self, boot: BootOverride) -> Result<(), BmcError> {
        let (device, persistent, mode) = (boot.device, boot.persistent, boot.mode);
        let device = match device {
            BootDevice::Pxe => BootSelector::Pxe,
            BootDevice::Disk => BootSelector::Disk,
            BootDevice::Cd => BootSelector::Cd,
            BootDevice::UefiHttp => {
                return Err(BmcError::Unsupported(
                    "IPMI boot flags have no UEFI HTTP boot device; use PXE or the redfish driver"
                        .into(),
                ));
            }
        };
        let flags = SetBootFlags {
            device,
            persistent,
            efi: mode.unwrap_or(self.endpoint.settings.firmware_boot) == FirmwareBoot::Uefi,
        };
        self.run(move |s| s.call(flags)).await
    }

    async fn bios(&self) -> Result<BiosSettings, BmcError> {
        Err(unsupported("BIOS settings are"))
    }

    async fn set_bios(&self, _changes: &Map<String, Value>) -> Result<(), BmcError> {
        Err(unsupported("BIOS settings are"))
    }

    async fn raid_volumes(&self) -> Result<Vec<RaidVolume>, BmcError> {
        Err(unsupported("RAID volumes are"))
    }

    async fn create_volume(&self, _spec: &VolumeSpec) -> Result<RaidVolume, BmcError> {
        Err(unsupported("RAID volumes are"))
    }

    async fn delete_volume(&self, _id: &str) -> Result<(), BmcError> {
        Err(unsupported("RAID volumes are"))
    }

    async fn inventory(&self) -> Result<BmcInventory, BmcError> {
        Err(unsupported("out-of-band inventories are"))
    }
}

/// What IPMI has no standard command for.
fn unsupported(what: &str) -> BmcError {
    BmcError::Unsupported(format!(
        "{what} not supported by IPMI; use the redfish driver for this machine"
    ))
}

/// An open session, inside `spawn_blocking`.
struct Session<'a> {
    ipmi: Ipmi<Rmcp>,
    relay: &'a Relay,
    endpoint: &'a Endpoint,
}

impl Session<'_> {
    /// Sends one command and classifies what went wrong.
    fn call<C>(&mut self, command: C) -> Result<C::Output, BmcError>
    where
        C: IpmiCommand,
        C::Error: std::fmt::Debug,
    {
        let e = match self.ipmi.send_recv(command) {
            Ok(out) => return Ok(out),
            Err(e) => e,
        };
        let ep = self.endpoint;
        if let Some(why) = self.relay.unreachable() {
            return Err(ep.transient(why));
        }
        Err(match e {
            IpmiError::Failed {
                netfn,
                cmd,
                completion_code,
                ..
            }
            | IpmiError::Command {
                netfn,
                cmd,
                completion_code: Some(completion_code),
                ..
            } => {
                let detail = format!(
                    "{}: {}",
                    commands::command_name(netfn, cmd),
                    commands::explain_completion(netfn, cmd, completion_code)
                );
                if commands::completion_is_transient(completion_code) {
                    ep.transient(detail)
                } else {
                    ep.refused(detail)
                }
            }
            IpmiError::Command {
                netfn, cmd, error, ..
            } => ep.refused(format!(
                "{}: unreadable answer ({error:?})",
                commands::command_name(netfn, cmd)
            )),
            // An answer to an earlier, retransmitted request, or a garbled one.
            IpmiError::UnexpectedResponse { .. } | IpmiError::NetFnIsResponse(_) => {
                ep.transient(format!("unexpected answer: {e:?}"))
            }
            IpmiError::Connection(c) => ep.transient(format!("session broken: {c:?}")),
        })
    }

    /// Closes the session (best effort: the BMC also times it out).
    fn close(&mut self) {
        if self.relay.unreachable().is_some() {
            return;
        }
        if let Some(id) = self.relay.session_id() {
            // If the answer to Close Session is lost, the BMC has already
            // forgotten the session and will not answer a retransmission.
            self.relay.limit_next_tries(2);
            if let Err(e) = self.ipmi.send_recv(CloseSession(id)) {
                tracing::debug!(bmc = %self.endpoint.label(), error = ?e, "closing the IPMI session failed");
            }
        }
    }
}

/// How many times a session set-up that went astray (not a silent BMC, not a
/// refusal) is started over within one command.
const SET_UP_ATTEMPTS: u32 = 3;

/// One whole session: resolve, relay, activate, raise privilege, `op`, close.
fn session<T>(
    ep: &Endpoint,
    op: impl FnOnce(&mut Session<'_>) -> Result<T, BmcError>,
) -> Result<T, BmcError> {
    let bmc = resolve(ep)?;
    let mut op = Some(op);
    let mut attempt = 1;
    loop {
        match one_session(ep, bmc, &mut op) {
            Ok(r) => return r,
            Err(why) if attempt < SET_UP_ATTEMPTS => {
                tracing::debug!(bmc = %ep.label(), attempt, why, "starting the IPMI session over");
                attempt += 1;
            }
            Err(why) => {
                return Err(ep.transient(format!(
                    "the session set-up failed {SET_UP_ATTEMPTS} times; last: {why}"
                )));
            }
        }
    }
}

/// Stops the relay however the session ends, so the scope can join it.
struct StopOnDrop<'a>(&'a Relay);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// One session attempt: `Err` asks for a new set-up (and leaves `op` unused).
fn one_session<T, F>(
    ep: &Endpoint,
    bmc: SocketAddr,
    op: &mut Option<F>,
) -> Result<Result<T, BmcError>, String>
where
    F: FnOnce(&mut Session<'_>) -> Result<T, BmcError>,
{
    let relay = match Relay::bind(bmc) {
        Ok(r) => r,
        Err(e) => return Ok(Err(ep.transient(format!("cannot open a UDP socket: {e}")))),
    };
    let tries = ep.tries();
    // ipmi-rs's own timeout is only a backstop: the relay answers or gives up first.
    let backstop = tries.timeout * tries.count + Duration::from_secs(1);
    std::thread::scope(|scope| {
        let _stop = StopOnDrop(&relay);
        scope.spawn(|| relay.run(tries));
        let mut rmcp = match Rmcp::new(relay.local_addr(), backstop) {
            Ok(r) => r,
            Err(e) => return Ok(Err(ep.transient(format!("cannot set up the session: {e}")))),
        };
        if let Err(e) = rmcp.activate(true, Some(&ep.user), Some(&ep.password)) {
            if let Some(Failure::Restart(why)) = relay.failure() {
                return Err(why);
            }
            return Ok(Err(activation_error(ep, &relay, e)));
        }
        let Some(op) = op.take() else {
            return Ok(Err(ep.transient("internal error: the command already ran")));
        };
        let mut s = Session {
            ipmi: Ipmi::new(rmcp),
            relay: &relay,
            endpoint: ep,
        };
        let out = s
            .call(SetSessionPrivilegeLevel::ADMINISTRATOR)
            .and_then(|_| op(&mut s));
        s.close();
        let retransmits = relay.retransmits();
        if retransmits > 0 {
            tracing::info!(bmc = %ep.label(), retransmits, ok = out.is_ok(), "IPMI requests were sent again");
        }
        Ok(out)
    })
}

fn resolve(ep: &Endpoint) -> Result<SocketAddr, BmcError> {
    let mut addrs = (ep.host.as_str(), ep.port)
        .to_socket_addrs()
        .map_err(|e| ep.transient(format!("cannot resolve '{}': {e}", ep.host)))?;
    addrs
        .next()
        .ok_or_else(|| ep.transient(format!("'{}' resolves to no address", ep.host)))
}

/// Classifies a failed session activation.
///
/// ipmi-rs does not export the RMCP+ status code types shared by the open
/// session and RAKP messages, so those are told apart by their names.
fn activation_error(ep: &Endpoint, relay: &Relay, e: ActivationError) -> BmcError {
    if let Some(why) = relay.unreachable() {
        return ep.transient(why);
    }
    if let Some((answer, status)) = relay.rmcpp_status() {
        return rmcpp_status_error(ep, answer, status);
    }
    use RakpMessage4ParseError as P4;
    use V2_0ActivationError as V2;
    match e {
        ActivationError::IpmiNotSupported => {
            ep.refused("the device answers RMCP pings but says it does not support IPMI")
        }
        ActivationError::NoSupportedIpmiLANVersions => {
            ep.refused("the BMC offers neither IPMI 1.5 nor IPMI 2.0 sessions on this channel")
        }
        ActivationError::GetChannelAuthenticationCapabilities(IpmiError::Failed {
            netfn,
            cmd,
            completion_code,
            ..
        }) => ep.refused(format!(
            "{}: {}",
            commands::command_name(netfn, cmd),
            commands::explain_completion(netfn, cmd, completion_code)
        )),
        // Wrong password: the BMC's RAKP message 2 does not prove it knows ours.
        ActivationError::V2_0(V2::ServerAuthenticationFailed) => ep.auth(),
        // RAKP 2 proved the password, so RAKP 4's session keys come from a BMC key (Kg).
        ActivationError::V2_0(V2::RakpMessage4InvalidIntegrityCheckValue) => ep.refused(
            "the BMC's session keys do not match the password: it probably requires a BMC key (Kg), which racklift does not support",
        ),
        ActivationError::V2_0(V2::RakpMessage4Parse(P4::ErrorStatusCode(s))) => {
            ep.refused(format!("the BMC refused RAKP message 3: {s:?}"))
        }
        other => ep.transient(format!("session set-up failed: {other:?}")),
    }
}

/// An RMCP+ status code (IPMI 2.0 table 13-15) from an Open Session Response
/// (payload 11h) or RAKP message 2 (13h) or 4 (15h).
fn rmcpp_status_error(ep: &Endpoint, answer: u8, status: u8) -> BmcError {
    let msg = match answer {
        0x11 => "open a session",
        0x13 => "accept RAKP message 1",
        _ => "accept RAKP message 3",
    };
    match status {
        0x01 | 0x0B => ep.transient(format!(
            "the BMC has no free session (RMCP+ status {status:02X}h)"
        )),
        // Unknown user; wrong password (the BMC checked our RAKP message 3).
        0x0C | 0x0D | 0x0F => ep.auth(),
        0x09 | 0x0A => ep.refused(format!(
            "user '{}' may not open an administrator session (RMCP+ status {status:02X}h)",
            ep.user
        )),
        0x04..=0x07 | 0x10 | 0x11 => ep.refused(format!(
            "the BMC does not accept cipher suite 3 (RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128) (RMCP+ status {status:02X}h)"
        )),
        0x02 | 0x08 => ep.transient(format!(
            "the BMC forgot the session being set up (RMCP+ status {status:02X}h)"
        )),
        0x0E => ep.refused(format!(
            "the BMC did not {msg}: unauthorized GUID (RMCP+ status 0Eh)"
        )),
        0x03 => ep.refused(format!(
            "the BMC did not {msg}: invalid payload type (RMCP+ status 03h)"
        )),
        0x12 => ep.refused(format!(
            "the BMC did not {msg}: illegal or unrecognized parameter (RMCP+ status 12h)"
        )),
        _ => ep.refused(format!("the BMC did not {msg} (RMCP+ status {status:02X}h)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::BmcDriverKind;

    fn target(user: &str, password: &str) -> BmcTarget {
        BmcTarget {
            driver: BmcDriverKind::Ipmi,
            address: Some("BMC-1.example".into()),
            port: None,
            username: Some(user.into()),
            password: Some(password.into()),
            verify_tls: true,
            node_key: "n".into(),
        }
    }

    #[test]
    fn credentials_ipmi_cannot_carry_are_refused_up_front() {
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        let ok = IpmiDriver::new(
            &target("admin", "secret"),
            IpmiSettings::default(),
            lock.clone(),
        );
        assert!(ok.is_ok());
        let long_user = IpmiDriver::new(
            &target("a-very-long-user-name", "x"),
            IpmiSettings::default(),
            lock.clone(),
        )
        .unwrap_err();
        assert!(matches!(long_user, BmcError::Unsupported(_)), "{long_user}");
        let long_pw = IpmiDriver::new(
            &target("admin", "123456789012345678901"),
            IpmiSettings::default(),
            lock.clone(),
        )
        .unwrap_err();
        assert!(
            long_pw.to_string().contains("at most 20 bytes"),
            "{long_pw}"
        );
        let mut no_addr = target("admin", "x");
        no_addr.address = None;
        assert!(IpmiDriver::new(&no_addr, IpmiSettings::default(), lock).is_err());
    }

    #[test]
    fn one_lock_per_bmc_address_and_port() {
        let locks = BmcLocks::default();
        let t = target("admin", "x");
        assert_eq!(IpmiDriver::lock_key(&t), "bmc-1.example:623");
        let a = locks.get(&IpmiDriver::lock_key(&t));
        let b = locks.get("bmc-1.example:623");
        assert!(Arc::ptr_eq(&a, &b));
        let other = locks.get("bmc-1.example:624");
        assert!(!Arc::ptr_eq(&a, &other));
        drop((a, b, other));
        // Unused locks are forgotten.
        let _c = locks.get("x:1");
        assert_eq!(locks.0.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn uefi_http_boot_is_unsupported() {
        let d = IpmiDriver::new(
            &target("admin", "x"),
            IpmiSettings::default(),
            Arc::new(tokio::sync::Mutex::new(())),
        )
        .unwrap();
        let e = d
            .set_boot_device(BootDevice::UefiHttp, false)
            .await
            .unwrap_err();
        assert!(matches!(e, BmcError::Unsupported(_)), "{e}");
    }

    #[tokio::test]
    async fn bios_and_raid_are_refused_as_not_supported_by_ipmi() {
        let d = IpmiDriver::new(
            &target("admin", "x"),
            IpmiSettings::default(),
            Arc::new(tokio::sync::Mutex::new(())),
        )
        .unwrap();
        let e = d.set_bios(&Map::new()).await.unwrap_err();
        assert_eq!(
            e,
            BmcError::Unsupported(
                "BIOS settings are not supported by IPMI; use the redfish driver for this machine"
                    .into()
            )
        );
        let e = d.create_volume(&VolumeSpec::default()).await.unwrap_err();
        assert!(
            e.to_string()
                .starts_with("RAID volumes are not supported by IPMI"),
            "{e}"
        );
        assert!(matches!(d.inventory().await, Err(BmcError::Unsupported(_))));
    }
}
