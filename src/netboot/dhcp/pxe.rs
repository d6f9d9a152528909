//! Which boot file a network-booting client gets, decided from its DHCP request
//! alone (option 93 client architecture, option 60 vendor class, option 77 user
//! class, option 175 iPXE encapsulation). A pure function: no I/O, no store.
//!
//! - iPXE (user class `iPXE` or option 175) gets the URL of racklift's boot
//!   script for its MAC, so it never chains itself again;
//! - a PXE ROM gets an iPXE binary over TFTP: BIOS `undionly.kpxe`, UEFI x64
//!   `ipxe.efi` (or `snponly.efi`), UEFI ARM64 the arm64 binary, UEFI IA32 the
//!   32-bit one;
//! - a UEFI HTTP boot client (`HTTPClient`, arch 16 or 19) gets an HTTP URL of
//!   the iPXE binary, and option 60 is echoed as `HTTPClient`;
//! - anything else is not booting from the network and gets no boot file.

use crate::node::MacAddr;
use dhcproto::v4::{DhcpOption, Message, OptionCode};

/// The iPXE option space (RFC-less, iPXE's own): present only in iPXE's requests.
pub const IPXE_ENCAP_OPTION: u8 = 175;

/// What the request says about the booting firmware.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// Option 93, when sent.
    pub arch: Option<u16>,
    /// Option 60, when sent.
    pub vendor_class: Option<String>,
    /// Whether the client is iPXE (user class "iPXE" or option 175).
    pub is_ipxe: bool,
}

impl ClientInfo {
    /// Reads the boot-relevant options of a request.
    pub fn from_request(m: &Message) -> ClientInfo {
        let opts = m.opts();
        let arch = match opts.get(OptionCode::ClientSystemArchitecture) {
            Some(DhcpOption::ClientSystemArchitecture(a)) => Some(a.0),
            _ => None,
        };
        let vendor_class = match opts.get(OptionCode::ClassIdentifier) {
            Some(DhcpOption::ClassIdentifier(v)) => Some(String::from_utf8_lossy(v).into_owned()),
            _ => None,
        };
        // The user class may be a bare string or RFC 3004 length-prefixed items.
        let user_class_ipxe = match opts.get(OptionCode::UserClass) {
            Some(DhcpOption::UserClass(v)) => v == b"iPXE" || v.windows(4).any(|w| w == b"iPXE"),
            _ => false,
        };
        let encap = opts.get(OptionCode::Unknown(IPXE_ENCAP_OPTION)).is_some();
        ClientInfo {
            arch,
            vendor_class,
            is_ipxe: user_class_ipxe || encap,
        }
    }

    fn vendor_starts_with(&self, prefix: &str) -> bool {
        self.vendor_class
            .as_deref()
            .is_some_and(|v| v.starts_with(prefix))
    }
}

/// Where the boot files are.
#[derive(Debug, Clone)]
pub struct BootFiles {
    /// racklift's API URL, e.g. `http://10.0.0.1:8080`.
    pub api_url: String,
    /// Serve `snponly.efi` instead of `ipxe.efi` to UEFI x64 (for NICs whose
    /// UNDI driver iPXE handles badly).
    pub snponly: bool,
    pub bios: String,
    pub uefi_x64: String,
    pub uefi_x64_snponly: String,
    pub uefi_ia32: String,
    pub uefi_arm64: String,
}

impl Default for BootFiles {
    fn default() -> Self {
        BootFiles {
            api_url: "http://127.0.0.1:8080".into(),
            snponly: false,
            bios: "undionly.kpxe".into(),
            uefi_x64: "ipxe.efi".into(),
            uefi_x64_snponly: "snponly.efi".into(),
            uefi_ia32: "ipxe-i386.efi".into(),
            uefi_arm64: "ipxe-arm64.efi".into(),
        }
    }
}

/// What the client is told to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootAnswer {
    /// A file from racklift's TFTP server (`file` field and option 67).
    Tftp { file: String },
    /// A URL for UEFI HTTP boot; the reply carries option 60 `HTTPClient`.
    Http { url: String },
    /// iPXE: the URL of racklift's boot script for this MAC.
    Script { url: String },
    /// An architecture racklift has no boot file for (named, for the log).
    Unsupported { arch: u16 },
    /// Not a network-boot request.
    NotNetboot,
}

/// The boot file for a client with this MAC.
pub fn decide(c: &ClientInfo, mac: MacAddr, files: &BootFiles) -> BootAnswer {
    if c.is_ipxe {
        return BootAnswer::Script {
            url: format!("{}/boot.ipxe?mac={mac}", files.api_url),
        };
    }
    let http = c.vendor_starts_with("HTTPClient") || matches!(c.arch, Some(16 | 19));
    let pxe = c.vendor_starts_with("PXEClient") || c.arch.is_some();
    if !http && !pxe {
        return BootAnswer::NotNetboot;
    }
    let file = match c.arch.unwrap_or(0) {
        0 => &files.bios,
        6 => &files.uefi_ia32,
        7 | 9 | 16 if files.snponly => &files.uefi_x64_snponly,
        7 | 9 | 16 => &files.uefi_x64,
        11 | 19 => &files.uefi_arm64,
        other => return BootAnswer::Unsupported { arch: other },
    };
    if http {
        BootAnswer::Http {
            url: format!("{}/assets/ipxe/{file}", files.api_url),
        }
    } else {
        BootAnswer::Tftp { file: file.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::{Architecture, MessageType, UnknownOption};
    use dhcproto::{Decodable, Decoder, Encodable, Encoder};
    use std::net::Ipv4Addr;

    fn mac() -> MacAddr {
        "52:54:00:00:00:07".parse().unwrap()
    }

    /// A DISCOVER with the given options, encoded and decoded again as on the wire.
    fn discover(opts: Vec<DhcpOption>) -> ClientInfo {
        let z = Ipv4Addr::UNSPECIFIED;
        let mut m = Message::new(z, z, z, z, &mac().0);
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Discover));
        for o in opts {
            m.opts_mut().insert(o);
        }
        let mut buf = Vec::new();
        m.encode(&mut Encoder::new(&mut buf)).unwrap();
        let back = Message::decode(&mut Decoder::new(&buf)).unwrap();
        ClientInfo::from_request(&back)
    }

    fn pxe(arch: u16, class: &str) -> Vec<DhcpOption> {
        vec![
            DhcpOption::ClientSystemArchitecture(Architecture(arch)),
            DhcpOption::ClassIdentifier(class.as_bytes().to_vec()),
        ]
    }

    #[test]
    fn firmware_gets_its_ipxe_binary() {
        let f = BootFiles::default();
        let cases = [
            (
                0,
                "PXEClient:Arch:00000:UNDI:002001",
                BootAnswer::Tftp {
                    file: "undionly.kpxe".into(),
                },
            ),
            (
                7,
                "PXEClient:Arch:00007:UNDI:003016",
                BootAnswer::Tftp {
                    file: "ipxe.efi".into(),
                },
            ),
            (
                9,
                "PXEClient:Arch:00009:UNDI:003016",
                BootAnswer::Tftp {
                    file: "ipxe.efi".into(),
                },
            ),
            (
                6,
                "PXEClient:Arch:00006:UNDI:003016",
                BootAnswer::Tftp {
                    file: "ipxe-i386.efi".into(),
                },
            ),
            (
                11,
                "PXEClient:Arch:00011:UNDI:003016",
                BootAnswer::Tftp {
                    file: "ipxe-arm64.efi".into(),
                },
            ),
            (
                16,
                "HTTPClient:Arch:00016:UNDI:003016",
                BootAnswer::Http {
                    url: "http://127.0.0.1:8080/assets/ipxe/ipxe.efi".into(),
                },
            ),
            (
                19,
                "HTTPClient:Arch:00019:UNDI:003016",
                BootAnswer::Http {
                    url: "http://127.0.0.1:8080/assets/ipxe/ipxe-arm64.efi".into(),
                },
            ),
            (
                10,
                "PXEClient:Arch:00010:UNDI:003016",
                BootAnswer::Unsupported { arch: 10 },
            ),
        ];
        for (arch, class, want) in cases {
            assert_eq!(
                decide(&discover(pxe(arch, class)), mac(), &f),
                want,
                "arch {arch}"
            );
        }
        let snp = BootFiles {
            snponly: true,
            ..BootFiles::default()
        };
        assert_eq!(
            decide(&discover(pxe(7, "PXEClient")), mac(), &snp),
            BootAnswer::Tftp {
                file: "snponly.efi".into()
            }
        );
    }

    #[test]
    fn ipxe_gets_the_script_and_never_loops() {
        let f = BootFiles {
            api_url: "http://10.0.0.1:8080".into(),
            ..BootFiles::default()
        };
        let want = BootAnswer::Script {
            url: "http://10.0.0.1:8080/boot.ipxe?mac=52:54:00:00:00:07".into(),
        };
        let mut by_user_class = pxe(0, "PXEClient");
        by_user_class.push(DhcpOption::UserClass(b"iPXE".to_vec()));
        assert_eq!(decide(&discover(by_user_class), mac(), &f), want);
        let mut by_175 = pxe(7, "PXEClient");
        by_175.push(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::Unknown(IPXE_ENCAP_OPTION),
            vec![1, 1, 1],
        )));
        assert_eq!(decide(&discover(by_175), mac(), &f), want);
    }

    #[test]
    fn plain_dhcp_clients_get_no_boot_file() {
        let f = BootFiles::default();
        assert_eq!(decide(&discover(vec![]), mac(), &f), BootAnswer::NotNetboot);
        let dhcpcd = vec![DhcpOption::ClassIdentifier(b"udhcp 1.36.1".to_vec())];
        assert_eq!(decide(&discover(dhcpcd), mac(), &f), BootAnswer::NotNetboot);
        // A vendor class alone says PXE, with BIOS as the default architecture.
        let class_only = vec![DhcpOption::ClassIdentifier(b"PXEClient".to_vec())];
        assert_eq!(
            decide(&discover(class_only), mac(), &f),
            BootAnswer::Tftp {
                file: "undionly.kpxe".into()
            }
        );
    }
}
