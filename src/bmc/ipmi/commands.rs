//! The IPMI commands racklift sends, on ipmi-rs's [`IpmiCommand`] trait, with
//! the byte layouts of the IPMI 2.0 specification (rev. 1.1), and completion
//! codes put into words.
//!
//! | command | NetFn / cmd | spec |
//! |---|---|---|
//! | Get Chassis Status | Chassis 01h | 28.2 |
//! | Chassis Control | Chassis 02h | 28.3 |
//! | Set System Boot Options, parameter 5 (boot flags) | Chassis 08h | 28.12, table 28-14 |
//! | Set Session Privilege Level | App 3Bh | 22.18 |
//! | Close Session | App 3Ch | 22.19 |

use ipmi_rs::connection::{CompletionErrorCode, IpmiCommand, Message, NetFn};

/// A success response too short to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShortResponse {
    pub got: usize,
    pub want: usize,
}

fn need(data: &[u8], want: usize) -> Result<(), ShortResponse> {
    if data.len() < want {
        Err(ShortResponse {
            got: data.len(),
            want,
        })
    } else {
        Ok(())
    }
}

const GET_CHASSIS_STATUS: u8 = 0x01;
const CHASSIS_CONTROL: u8 = 0x02;
const SET_SYSTEM_BOOT_OPTIONS: u8 = 0x08;
const SET_SESSION_PRIVILEGE_LEVEL: u8 = 0x3B;
const CLOSE_SESSION: u8 = 0x3C;

/// Chassis Control: byte 1, bits 3:0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChassisControl {
    PowerDown = 0x0,
    PowerUp = 0x1,
    PowerCycle = 0x2,
    HardReset = 0x3,
    /// Soft shutdown through ACPI, by emulating a fatal over-temperature.
    SoftShutdown = 0x5,
}

impl From<ChassisControl> for Message {
    fn from(c: ChassisControl) -> Message {
        Message::new_request(NetFn::Chassis, CHASSIS_CONTROL, vec![c as u8])
    }
}

impl IpmiCommand for ChassisControl {
    type Output = ();
    type Error = ShortResponse;
    fn parse_success_response(_data: &[u8]) -> Result<(), ShortResponse> {
        Ok(())
    }
}

/// Get Chassis Status (no request data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetChassisStatus;

/// The "current power state" byte of Get Chassis Status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChassisStatus {
    /// Bit 0: system power is on.
    pub power_on: bool,
    /// Bit 1: power overload.
    pub power_overload: bool,
    /// Bit 2: an interlock is active.
    pub interlock: bool,
    /// Bit 3: fault in the main power subsystem.
    pub power_fault: bool,
    /// Bit 4: the power control did not change the power state.
    pub power_control_fault: bool,
}

impl From<GetChassisStatus> for Message {
    fn from(_: GetChassisStatus) -> Message {
        Message::new_request(NetFn::Chassis, GET_CHASSIS_STATUS, Vec::new())
    }
}

impl IpmiCommand for GetChassisStatus {
    type Output = ChassisStatus;
    type Error = ShortResponse;
    /// The specification lists three mandatory bytes; only the first is needed here.
    fn parse_success_response(data: &[u8]) -> Result<ChassisStatus, ShortResponse> {
        need(data, 1)?;
        let b = data[0];
        Ok(ChassisStatus {
            power_on: b & 0x01 != 0,
            power_overload: b & 0x02 != 0,
            interlock: b & 0x04 != 0,
            power_fault: b & 0x08 != 0,
            power_control_fault: b & 0x10 != 0,
        })
    }
}

/// The boot device selector of the boot flags (data 2, bits 5:2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootSelector {
    Pxe = 0b0001,
    /// The default hard drive.
    Disk = 0b0010,
    /// The default CD/DVD drive.
    Cd = 0b0101,
    BiosSetup = 0b0110,
}

/// Set System Boot Options, parameter 5: the boot flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetBootFlags {
    pub device: BootSelector,
    /// All future boots (data 1 bit 6) rather than the next one only.
    pub persistent: bool,
    /// EFI boot (data 1 bit 5) rather than PC-compatible (legacy) boot.
    pub efi: bool,
}

impl SetBootFlags {
    /// The request data: the parameter selector, then the five bytes of parameter 5.
    pub fn request_data(&self) -> [u8; 6] {
        // Byte 1: bit 7 clear = mark the parameter valid (unlocked); bits 6:0 = parameter 5.
        let selector = 0x05;
        // Data 1: bit 7 = the boot flags are valid; bit 6 = persistent; bit 5 = EFI.
        let mut d1 = 0x80;
        if self.persistent {
            d1 |= 0x40;
        }
        if self.efi {
            d1 |= 0x20;
        }
        // Data 2: device selector in bits 5:2; CMOS clear, keyboard lock, screen
        // blank and reset-button lock-out all off.
        let d2 = (self.device as u8) << 2;
        // Data 3: no lock-outs, default verbosity, console redirection as the
        // firmware is set; data 4: no BIOS mux override; data 5: device instance 0.
        [selector, d1, d2, 0x00, 0x00, 0x00]
    }
}

impl From<SetBootFlags> for Message {
    fn from(f: SetBootFlags) -> Message {
        Message::new_request(
            NetFn::Chassis,
            SET_SYSTEM_BOOT_OPTIONS,
            f.request_data().to_vec(),
        )
    }
}

impl IpmiCommand for SetBootFlags {
    type Output = ();
    type Error = ShortResponse;
    fn parse_success_response(_data: &[u8]) -> Result<(), ShortResponse> {
        Ok(())
    }
}

/// Set Session Privilege Level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetSessionPrivilegeLevel(pub u8);

impl SetSessionPrivilegeLevel {
    pub const ADMINISTRATOR: SetSessionPrivilegeLevel = SetSessionPrivilegeLevel(0x04);
}

impl From<SetSessionPrivilegeLevel> for Message {
    fn from(p: SetSessionPrivilegeLevel) -> Message {
        Message::new_request(NetFn::App, SET_SESSION_PRIVILEGE_LEVEL, vec![p.0 & 0x0f])
    }
}

impl IpmiCommand for SetSessionPrivilegeLevel {
    /// The new privilege level.
    type Output = u8;
    type Error = ShortResponse;
    fn parse_success_response(data: &[u8]) -> Result<u8, ShortResponse> {
        need(data, 1)?;
        Ok(data[0] & 0x0f)
    }
}

/// Close Session, by the session ID the BMC assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseSession(pub u32);

impl From<CloseSession> for Message {
    fn from(c: CloseSession) -> Message {
        Message::new_request(NetFn::App, CLOSE_SESSION, c.0.to_le_bytes().to_vec())
    }
}

impl IpmiCommand for CloseSession {
    type Output = ();
    type Error = ShortResponse;
    fn parse_success_response(_data: &[u8]) -> Result<(), ShortResponse> {
        Ok(())
    }
}

/// The command's name, for messages.
pub fn command_name(netfn: NetFn, cmd: u8) -> String {
    match (netfn, cmd) {
        (NetFn::Chassis, GET_CHASSIS_STATUS) => "Get Chassis Status".into(),
        (NetFn::Chassis, CHASSIS_CONTROL) => "Chassis Control".into(),
        (NetFn::Chassis, SET_SYSTEM_BOOT_OPTIONS) => "Set System Boot Options".into(),
        (NetFn::App, SET_SESSION_PRIVILEGE_LEVEL) => "Set Session Privilege Level".into(),
        (NetFn::App, CLOSE_SESSION) => "Close Session".into(),
        (NetFn::App, 0x38) => "Get Channel Authentication Capabilities".into(),
        (n, c) => format!("command {c:02X}h of NetFn {:02X}h", n.request_value()),
    }
}

/// The completion code's byte on the wire.
pub fn completion_byte(code: CompletionErrorCode) -> u8 {
    use CompletionErrorCode::*;
    match code {
        NodeBusy => 0xC0,
        InvalidCommand => 0xC1,
        InvalidCommandForLun => 0xC2,
        ProcessingTimeout => 0xC3,
        OutOfSpace => 0xC4,
        ReservationCancelledOrInvalidId => 0xC5,
        RequestDataTruncated => 0xC6,
        RequestDataLenInvalid => 0xC7,
        RequestDataLengthLimitExceeded => 0xC8,
        ParameterOutOfRange => 0xC9,
        CannotReturnNumOfRequestedBytes => 0xCA,
        RequestedDatapointNotPresent => 0xCB,
        InvalidDataFieldInRequest => 0xCC,
        CommandIllegalForSensorOrRecord => 0xCD,
        // ipmi-rs does not export the reason's type: tell the four apart by name.
        ResponseUnavailable { reason } => match format!("{reason:?}").as_str() {
            "SDRInUpdate" => 0xD0,
            "DeviceInFwUpdate" => 0xD1,
            "BMCInitializing" => 0xD2,
            _ => 0xCE,
        },
        CannotExecuteDuplicateRequest => 0xCF,
        DestinationUnavailable => 0xD3,
        InsufficientPrivilege => 0xD4,
        CannotExecuteCommandInCurrentState => 0xD5,
        SubFunctionDisabled => 0xD6,
        Unspecified => 0xFF,
        Oem(b) | CommandSpecific(b) | Reserved(b) => b,
    }
}

/// Whether the BMC means "not now": busy, timed out inside, initialising,
/// updating. Retrying later can help; anything else is a refusal.
pub fn completion_is_transient(code: CompletionErrorCode) -> bool {
    matches!(
        code,
        CompletionErrorCode::NodeBusy
            | CompletionErrorCode::ProcessingTimeout
            | CompletionErrorCode::ResponseUnavailable { .. }
    )
}

/// A completion code in words, with its value: "insufficient privilege level (completion code D4h)".
pub fn explain_completion(netfn: NetFn, cmd: u8, code: CompletionErrorCode) -> String {
    let b = completion_byte(code);
    let text: String = match (netfn, cmd, b) {
        (NetFn::Chassis, SET_SYSTEM_BOOT_OPTIONS, 0x80) => {
            "boot option parameter not supported".into()
        }
        (NetFn::Chassis, SET_SYSTEM_BOOT_OPTIONS, 0x81) => {
            "another client is setting the boot options ('set in progress')".into()
        }
        (NetFn::Chassis, SET_SYSTEM_BOOT_OPTIONS, 0x82) => {
            "the boot option parameter is read-only".into()
        }
        (NetFn::App, SET_SESSION_PRIVILEGE_LEVEL, 0x80) => {
            "the administrator level is not available to this user".into()
        }
        (NetFn::App, SET_SESSION_PRIVILEGE_LEVEL, 0x81) => {
            "the administrator level exceeds this user's or this channel's privilege limit".into()
        }
        (NetFn::App, CLOSE_SESSION, 0x87) => "invalid session ID".into(),
        (NetFn::App, CLOSE_SESSION, 0x88) => "invalid session handle".into(),
        (_, _, 0xC0) => "the BMC is busy".into(),
        (_, _, 0xC1) => "the BMC does not support this command".into(),
        (_, _, 0xC2) => "command invalid for this LUN".into(),
        (_, _, 0xC3) => "the BMC timed out while processing the command".into(),
        (_, _, 0xC4) => "the BMC is out of space".into(),
        (_, _, 0xC5) => "reservation cancelled or invalid".into(),
        (_, _, 0xC6) => "request data truncated".into(),
        (_, _, 0xC7) => "request data length invalid".into(),
        (_, _, 0xC8) => "request data field length limit exceeded".into(),
        (_, _, 0xC9) => "parameter out of range".into(),
        (_, _, 0xCA) => "cannot return the number of requested data bytes".into(),
        (_, _, 0xCB) => "requested sensor, data or record not present".into(),
        (_, _, 0xCC) => "invalid data field in the request".into(),
        (_, _, 0xCD) => "command illegal for this sensor or record type".into(),
        (_, _, 0xCE) => "the BMC could not provide a response".into(),
        (_, _, 0xCF) => "cannot execute a duplicated request".into(),
        (_, _, 0xD0) => "the SDR repository is being updated".into(),
        (_, _, 0xD1) => "the BMC firmware is being updated".into(),
        (_, _, 0xD2) => "the BMC is initialising".into(),
        (_, _, 0xD3) => "destination unavailable".into(),
        (_, _, 0xD4) => "insufficient privilege level".into(),
        (_, _, 0xD5) => "the command cannot run in the present state".into(),
        (_, _, 0xD6) => "the command's sub-function is disabled or unavailable".into(),
        (_, _, 0xFF) => "unspecified error".into(),
        (_, _, 0x01..=0x7E) => "OEM-specific error".into(),
        (_, _, 0x80..=0xBE) => "command-specific error".into(),
        _ => "reserved completion code".into(),
    };
    format!("{text} (completion code {b:02X}h)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(m: impl Into<Message>) -> (u8, u8, Vec<u8>) {
        let m = m.into();
        (m.netfn_raw(), m.cmd(), m.data().to_vec())
    }

    #[test]
    fn chassis_control_codes() {
        assert_eq!(wire(ChassisControl::PowerDown), (0x00, 0x02, vec![0x00]));
        assert_eq!(wire(ChassisControl::PowerUp), (0x00, 0x02, vec![0x01]));
        assert_eq!(wire(ChassisControl::PowerCycle), (0x00, 0x02, vec![0x02]));
        assert_eq!(wire(ChassisControl::HardReset), (0x00, 0x02, vec![0x03]));
        assert_eq!(wire(ChassisControl::SoftShutdown), (0x00, 0x02, vec![0x05]));
    }

    #[test]
    fn chassis_status_power_bits() {
        assert_eq!(wire(GetChassisStatus), (0x00, 0x01, vec![]));
        let on = GetChassisStatus::parse_success_response(&[0x01, 0x00, 0x00]).unwrap();
        assert!(on.power_on && !on.power_fault);
        let off_fault = GetChassisStatus::parse_success_response(&[0x18, 0x00, 0x00]).unwrap();
        assert!(!off_fault.power_on && off_fault.power_fault && off_fault.power_control_fault);
        assert_eq!(
            GetChassisStatus::parse_success_response(&[]),
            Err(ShortResponse { got: 0, want: 1 })
        );
    }

    #[test]
    fn boot_flags_follow_table_28_14() {
        // One-time PXE, legacy: valid bit only; device 0001b in bits 5:2.
        let f = SetBootFlags {
            device: BootSelector::Pxe,
            persistent: false,
            efi: false,
        };
        assert_eq!(wire(f), (0x00, 0x08, vec![0x05, 0x80, 0x04, 0, 0, 0]));
        // Persistent disk, UEFI: valid | persistent | EFI = E0h; 0010b << 2 = 08h.
        let f = SetBootFlags {
            device: BootSelector::Disk,
            persistent: true,
            efi: true,
        };
        assert_eq!(f.request_data(), [0x05, 0xE0, 0x08, 0, 0, 0]);
        // One-time CD, UEFI: A0h; 0101b << 2 = 14h.
        let f = SetBootFlags {
            device: BootSelector::Cd,
            persistent: false,
            efi: true,
        };
        assert_eq!(f.request_data(), [0x05, 0xA0, 0x14, 0, 0, 0]);
        let f = SetBootFlags {
            device: BootSelector::BiosSetup,
            persistent: false,
            efi: false,
        };
        assert_eq!(f.request_data()[2], 0x18);
    }

    #[test]
    fn session_commands() {
        assert_eq!(
            wire(SetSessionPrivilegeLevel::ADMINISTRATOR),
            (0x06, 0x3B, vec![0x04])
        );
        assert_eq!(
            SetSessionPrivilegeLevel::parse_success_response(&[0x04]),
            Ok(4)
        );
        assert_eq!(
            wire(CloseSession(0x1234_5678)),
            (0x06, 0x3C, vec![0x78, 0x56, 0x34, 0x12])
        );
    }

    #[test]
    fn completion_codes_in_words() {
        let code = |b: u8| CompletionErrorCode::try_from(b).unwrap();
        for b in 0x01..=0xFFu8 {
            assert_eq!(completion_byte(code(b)), b, "{b:02X}");
        }
        assert_eq!(
            explain_completion(NetFn::Chassis, 0x02, code(0xD4)),
            "insufficient privilege level (completion code D4h)"
        );
        assert_eq!(
            explain_completion(NetFn::Chassis, 0x08, code(0x80)),
            "boot option parameter not supported (completion code 80h)"
        );
        assert!(explain_completion(NetFn::App, 0x3B, code(0x81)).contains("privilege limit"));
        assert!(completion_is_transient(code(0xC0)));
        assert!(completion_is_transient(code(0xD2)));
        assert!(!completion_is_transient(code(0xD4)));
        assert!(!completion_is_transient(code(0xCC)));
        assert_eq!(
            command_name(NetFn::Chassis, 0x08),
            "Set System Boot Options"
        );
    }
}
