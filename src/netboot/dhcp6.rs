//! DHCPv6 for network boot (RFC 8415, boot options of RFC 5970): what a
//! request says and what a reply holds, as pure functions. No sockets, no
//! store: the server that gives addresses from the store is built on these.
//!
//! - [`parse`] reads a client message: its kind, transaction id, client DUID,
//!   the MAC racklift knows the machine by, its IA_NA identifiers and the
//!   boot-relevant options (61 architecture, 16 vendor class, 15 user class);
//!   a message without a client identifier (other than an
//!   Information-request), or with a server identifier that is not ours, is
//!   refused, as the RFC has a server discard them.
//! - The MAC comes from a DUID-LLT or DUID-LL with an Ethernet address; EDK2
//!   and iPXE send DUID-UUID, and then it comes from the client's link-local
//!   source address when that is an EUI-64 of the MAC (both make theirs so).
//! - The boot file is chosen by the same rule as for DHCPv4
//!   ([`crate::netboot::dhcp::pxe::decide`]) and said as option 59, a URL:
//!   `tftp://[addr]/file` for PXE, `http://...` for HTTP boot and iPXE.
//! - [`build`] writes the Advertise or Reply: server and client identifiers,
//!   each IA_NA with its address and lifetimes (or NoAddrsAvail), DNS
//!   servers, the boot file URL, Rapid Commit when it was asked for and taken.

use crate::netboot::dhcp::pxe::{BootAnswer, ClientInfo};
use crate::node::MacAddr;
use dhcproto::v6::{
    DhcpOption, IAAddr, IANA, Message, MessageType, OptionCode, Status, StatusCode, UnknownOption,
};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use std::net::Ipv6Addr;

/// Why a DHCPv6 message is not answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("not a DHCPv6 message: {0}")]
    Undecodable(String),
    #[error("a {0:?} is not a client message")]
    NotFromClient(MessageType),
    #[error("no client identifier (option 1)")]
    NoClientId,
    #[error("the server identifier is another server's")]
    OtherServer,
    #[error("no server identifier, which a {0:?} must carry")]
    NoServerId(MessageType),
}

/// What a client message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request6 {
    pub kind: MessageType,
    pub xid: [u8; 3],
    /// The client's DUID (option 1), as sent.
    pub client_id: Option<Vec<u8>>,
    /// The machine's MAC, from its DUID or its link-local address.
    pub mac: Option<MacAddr>,
    /// The IA_NA identifiers asked for, with any address each one names.
    pub ia_na: Vec<(u32, Vec<Ipv6Addr>)>,
    /// Whether the client asked for Rapid Commit (a Solicit answered by Reply).
    pub rapid_commit: bool,
    /// The boot-relevant options, in the form the DHCPv4 rule reads.
    pub client: ClientInfo,
}

/// Reads a client message sent from `src` (its link-local address, or a
/// relay's peer address). `our_duid` is this server's DUID.
pub fn parse(buf: &[u8], src: Ipv6Addr, our_duid: &[u8]) -> Result<Request6, Refused> {
    let msg =
        Message::decode(&mut Decoder::new(buf)).map_err(|e| Refused::Undecodable(e.to_string()))?;
    let kind = msg.msg_type();
    use MessageType as M;
    if !matches!(
        kind,
        M::Solicit
            | M::Request
            | M::Confirm
            | M::Renew
            | M::Rebind
            | M::Release
            | M::Decline
            | M::InformationRequest
    ) {
        return Err(Refused::NotFromClient(kind));
    }
    let opts = msg.opts();
    let client_id = match find(opts, OptionCode::ClientId) {
        Some(DhcpOption::ClientId(d)) => Some(d.clone()),
        _ => None,
    };
    if client_id.is_none() && kind != M::InformationRequest {
        return Err(Refused::NoClientId);
    }
    match find(opts, OptionCode::ServerId) {
        Some(DhcpOption::ServerId(s)) if s != our_duid => return Err(Refused::OtherServer),
        Some(_) => {}
        // RFC 8415 16: these name the server they are meant for.
        None if matches!(kind, M::Request | M::Renew | M::Release | M::Decline) => {
            return Err(Refused::NoServerId(kind));
        }
        None => {}
    }
    let ia_na = find_all(opts, OptionCode::IANA)
        .filter_map(|o| match o {
            DhcpOption::IANA(ia) => Some((
                ia.id,
                ia.opts
                    .iter()
                    .filter_map(|a| match a {
                        DhcpOption::IAAddr(a) => Some(a.addr),
                        _ => None,
                    })
                    .collect(),
            )),
            _ => None,
        })
        .collect();
    let arch = match find(opts, OptionCode::ClientArchType) {
        Some(DhcpOption::ClientArchType(list)) => list.first().map(|a| a.0),
        _ => None,
    };
    let vendor_class = match find(opts, OptionCode::VendorClass) {
        Some(DhcpOption::VendorClass(v)) => v
            .data
            .first()
            .map(|d| String::from_utf8_lossy(d).into_owned()),
        _ => None,
    };
    let is_ipxe = match find(opts, OptionCode::UserClass) {
        Some(DhcpOption::UserClass(u)) => u.data.iter().any(|d| d == b"iPXE"),
        _ => false,
    };
    Ok(Request6 {
        kind,
        xid: msg.xid(),
        mac: client_id
            .as_deref()
            .and_then(mac_of_duid)
            .or_else(|| mac_of_link_local(src)),
        client_id,
        ia_na,
        rapid_commit: find(opts, OptionCode::RapidCommit).is_some(),
        client: ClientInfo {
            arch,
            vendor_class,
            is_ipxe,
        },
    })
}

/// The first option with `code`. Looked up by a scan and by number:
/// dhcproto's `get` binary-searches an order its `insert` does not keep for
/// every option (option 61 is not found), and an option it has no type for
/// (59) decodes as `Unknown(59)`, not as its named code. A message holds a
/// dozen options at most.
pub fn find(opts: &dhcproto::v6::DhcpOptions, code: OptionCode) -> Option<&DhcpOption> {
    find_all(opts, code).next()
}

/// Every option with `code`, in order.
fn find_all(
    opts: &dhcproto::v6::DhcpOptions,
    code: OptionCode,
) -> impl Iterator<Item = &DhcpOption> {
    let code = u16::from(code);
    opts.iter()
        .filter(move |o| u16::from(OptionCode::from(*o)) == code)
}

/// The Ethernet address in a DUID-LLT (type 1) or DUID-LL (type 3).
pub fn mac_of_duid(duid: &[u8]) -> Option<MacAddr> {
    let (kind, rest) = (
        u16::from_be_bytes([*duid.first()?, *duid.get(1)?]),
        &duid[2..],
    );
    let lladdr = match kind {
        1 if rest.len() == 2 + 4 + 6 => &rest[6..],
        3 if rest.len() == 2 + 6 => &rest[2..],
        _ => return None,
    };
    // Hardware type 1: Ethernet.
    if rest[..2] != [0, 1] {
        return None;
    }
    Some(MacAddr(lladdr.try_into().ok()?))
}

/// The MAC a link-local address was made from by modified EUI-64
/// (fe80::XXXX:XXff:feXX:XXXX with the universal/local bit flipped).
pub fn mac_of_link_local(a: Ipv6Addr) -> Option<MacAddr> {
    let o = a.octets();
    if o[..8] != [0xfe, 0x80, 0, 0, 0, 0, 0, 0] || o[11] != 0xff || o[12] != 0xfe {
        return None;
    }
    Some(MacAddr([o[8] ^ 0x02, o[9], o[10], o[13], o[14], o[15]]))
}

/// Option 59 for a boot answer: TFTP files as `tftp://[server]/file`, HTTP
/// and script URLs as they are (their host is the IPv6 API URL's).
pub fn boot_file_url(answer: &BootAnswer, tftp_server: Ipv6Addr) -> Option<String> {
    match answer {
        BootAnswer::Tftp { file } => Some(format!("tftp://[{tftp_server}]/{file}")),
        BootAnswer::Http { url } | BootAnswer::Script { url } => Some(url.clone()),
        BootAnswer::Unsupported { .. } | BootAnswer::NotNetboot => None,
    }
}

/// One IA_NA of a reply: the address given, or none available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IaAnswer {
    pub iaid: u32,
    pub addr: Option<Ipv6Addr>,
}

/// What goes into a reply besides the request's own fields.
#[derive(Debug, Clone)]
pub struct Reply6Spec<'a> {
    pub server_duid: &'a [u8],
    pub ias: Vec<IaAnswer>,
    /// Preferred and valid lifetime of every address given, seconds.
    pub preferred_secs: u32,
    pub valid_secs: u32,
    pub dns_servers: &'a [Ipv6Addr],
    pub boot_file_url: Option<&'a str>,
    /// A Solicit answered with Reply (Rapid Commit asked for and taken).
    pub rapid_commit: bool,
}

/// The Advertise (to a Solicit) or Reply (to anything else, or to a Solicit
/// with Rapid Commit) for `req`.
pub fn build(req: &Request6, s: &Reply6Spec<'_>) -> Message {
    let kind = if req.kind == MessageType::Solicit && !s.rapid_commit {
        MessageType::Advertise
    } else {
        MessageType::Reply
    };
    let mut m = Message::new_with_id(kind, req.xid);
    let o = m.opts_mut();
    o.insert(DhcpOption::ServerId(s.server_duid.to_vec()));
    if let Some(c) = &req.client_id {
        o.insert(DhcpOption::ClientId(c.clone()));
    }
    if s.rapid_commit && req.kind == MessageType::Solicit {
        o.insert(DhcpOption::RapidCommit);
    }
    for ia in &s.ias {
        let mut opts = dhcproto::v6::DhcpOptions::new();
        let (t1, t2) = match ia.addr {
            Some(addr) => {
                opts.insert(DhcpOption::IAAddr(IAAddr {
                    addr,
                    preferred_life: s.preferred_secs,
                    valid_life: s.valid_secs,
                    opts: dhcproto::v6::DhcpOptions::new(),
                }));
                (s.preferred_secs / 2, s.preferred_secs / 5 * 4)
            }
            None => {
                opts.insert(DhcpOption::StatusCode(StatusCode {
                    status: Status::NoAddrsAvail,
                    msg: "no address for this client here".into(),
                }));
                (0, 0)
            }
        };
        o.insert(DhcpOption::IANA(IANA {
            id: ia.iaid,
            t1,
            t2,
            opts,
        }));
    }
    if !s.dns_servers.is_empty() {
        o.insert(DhcpOption::DomainNameServers(s.dns_servers.to_vec()));
    }
    if let Some(url) = s.boot_file_url {
        o.insert(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::OptBootfileUrl,
            url.as_bytes().to_vec(),
        )));
    }
    m
}

/// The wire form of a reply.
pub fn encode(m: &Message) -> Vec<u8> {
    let mut buf = Vec::with_capacity(256);
    m.encode(&mut Encoder::new(&mut buf))
        .expect("a reply built here encodes");
    buf
}

/// A DUID-LL (type 3) for this server from its interface's MAC.
pub fn duid_ll(mac: MacAddr) -> Vec<u8> {
    let mut d = vec![0, 3, 0, 1];
    d.extend_from_slice(&mac.0);
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netboot::dhcp::pxe::{BootFiles, decide};

    const LL: &str = "fe80::5054:ff:fe5a:1";
    fn our() -> Vec<u8> {
        duid_ll(MacAddr([0x52, 0x54, 0, 0, 0, 0xaa]))
    }

    /// A Solicit as EDK2 sends it: DUID-UUID, one IA_NA, arch 7, vendor
    /// class PXEClient, elapsed time, an option request.
    fn edk2_solicit(arch: u16, vendor: &str) -> Vec<u8> {
        let mut m = Message::new_with_id(MessageType::Solicit, [1, 2, 3]);
        let o = m.opts_mut();
        let mut uuid = vec![0, 4];
        uuid.extend_from_slice(&[0x11; 16]);
        o.insert(DhcpOption::ClientId(uuid));
        o.insert(DhcpOption::IANA(IANA {
            id: 0x5a01,
            t1: 0,
            t2: 0,
            opts: dhcproto::v6::DhcpOptions::new(),
        }));
        o.insert(DhcpOption::ElapsedTime(0));
        o.insert(DhcpOption::ClientArchType(vec![
            dhcproto::v4::Architecture(arch),
        ]));
        // Option 16 by hand (enterprise 343, one length-prefixed item), as
        // EDK2 writes it: dhcproto's encoder gets its length wrong.
        let mut wire = encode(&m);
        let v = vendor.as_bytes();
        wire.extend_from_slice(&16u16.to_be_bytes());
        wire.extend_from_slice(&(4 + 2 + v.len() as u16).to_be_bytes());
        wire.extend_from_slice(&343u32.to_be_bytes());
        wire.extend_from_slice(&(v.len() as u16).to_be_bytes());
        wire.extend_from_slice(v);
        wire
    }

    #[test]
    fn an_edk2_solicit_is_read_with_its_mac_from_the_link_local_address() {
        let r = parse(
            &edk2_solicit(7, "PXEClient:Arch:00007:UNDI:003000"),
            LL.parse().unwrap(),
            &our(),
        )
        .unwrap();
        assert_eq!(r.kind, MessageType::Solicit);
        assert_eq!(r.xid, [1, 2, 3]);
        assert_eq!(r.mac, Some("52:54:00:5a:00:01".parse().unwrap()));
        assert_eq!(r.ia_na, vec![(0x5a01, vec![])]);
        assert_eq!(r.client.arch, Some(7));
        assert_eq!(
            r.client.vendor_class.as_deref(),
            Some("PXEClient:Arch:00007:UNDI:003000")
        );
        assert!(!r.client.is_ipxe && !r.rapid_commit);
        // Not an EUI-64 address: no MAC from it.
        let r = parse(
            &edk2_solicit(7, "PXEClient"),
            "fe80::1234:5678:9abc:def0".parse().unwrap(),
            &our(),
        )
        .unwrap();
        assert_eq!(r.mac, None);
    }

    #[test]
    fn macs_come_from_ethernet_duids() {
        let llt = [0, 1, 0, 1, 0x2a, 0, 0, 1, 0x52, 0x54, 0, 1, 2, 3];
        assert_eq!(mac_of_duid(&llt), Some(MacAddr([0x52, 0x54, 0, 1, 2, 3])));
        let ll = [0, 3, 0, 1, 0x52, 0x54, 0, 1, 2, 4];
        assert_eq!(mac_of_duid(&ll), Some(MacAddr([0x52, 0x54, 0, 1, 2, 4])));
        // Not Ethernet, too short, or a UUID or enterprise DUID.
        assert_eq!(mac_of_duid(&[0, 3, 0, 6, 1, 2, 3, 4, 5, 6]), None);
        assert_eq!(mac_of_duid(&[0, 3, 0, 1, 1, 2]), None);
        assert_eq!(mac_of_duid(&[0, 4, 1, 2, 3]), None);
        assert_eq!(mac_of_duid(&[0]), None);
    }

    #[test]
    fn what_a_server_must_not_answer_is_refused() {
        let ll: Ipv6Addr = LL.parse().unwrap();
        assert!(matches!(
            parse(b"\x01", ll, &our()),
            Err(Refused::Undecodable(_))
        ));
        let advertise = encode(&Message::new(MessageType::Advertise));
        assert_eq!(
            parse(&advertise, ll, &our()),
            Err(Refused::NotFromClient(MessageType::Advertise))
        );
        let bare = encode(&Message::new(MessageType::Solicit));
        assert_eq!(parse(&bare, ll, &our()), Err(Refused::NoClientId));
        let info = encode(&Message::new(MessageType::InformationRequest));
        assert!(parse(&info, ll, &our()).is_ok());
        // A Request for another server, and one naming none.
        let mut req = Message::new(MessageType::Request);
        req.opts_mut()
            .insert(DhcpOption::ClientId(vec![0, 3, 0, 1, 1, 2, 3, 4, 5, 6]));
        assert_eq!(
            parse(&encode(&req), ll, &our()),
            Err(Refused::NoServerId(MessageType::Request))
        );
        req.opts_mut()
            .insert(DhcpOption::ServerId(vec![0, 3, 0, 1, 9, 9, 9, 9, 9, 9]));
        assert_eq!(parse(&encode(&req), ll, &our()), Err(Refused::OtherServer));
        req.opts_mut().insert(DhcpOption::ServerId(our()));
        assert!(parse(&encode(&req), ll, &our()).is_ok());
    }

    #[test]
    fn boot_files_are_urls_chosen_as_for_ipv4() {
        let files = BootFiles {
            api_url: "http://[fd00::1]:8080".into(),
            ..BootFiles::default()
        };
        let server: Ipv6Addr = "fd00::1".parse().unwrap();
        let mac: MacAddr = "52:54:00:5a:00:01".parse().unwrap();
        let url_for = |arch: u16, vendor: &str, ipxe: bool| {
            let mut wire = edk2_solicit(arch, vendor);
            if ipxe {
                // Option 15, one item "iPXE", as iPXE sends it.
                wire.extend_from_slice(&[0, 15, 0, 6, 0, 4]);
                wire.extend_from_slice(b"iPXE");
            }
            let r = parse(&wire, LL.parse().unwrap(), &our()).unwrap();
            boot_file_url(&decide(&r.client, mac, &files), server)
        };
        assert_eq!(
            url_for(7, "PXEClient:Arch:00007:UNDI:003000", false).as_deref(),
            Some("tftp://[fd00::1]/ipxe.efi")
        );
        assert_eq!(
            url_for(16, "HTTPClient:Arch:00016:UNDI:003001", false).as_deref(),
            Some("http://[fd00::1]:8080/assets/ipxe/ipxe.efi")
        );
        assert_eq!(
            url_for(7, "PXEClient", true).as_deref(),
            Some("http://[fd00::1]:8080/boot.ipxe?mac=52:54:00:5a:00:01")
        );
        assert_eq!(url_for(0x99, "PXEClient", false), None);
    }

    #[test]
    fn replies_carry_identifiers_addresses_and_the_boot_url() {
        let solicit = parse(&edk2_solicit(7, "PXEClient"), LL.parse().unwrap(), &our()).unwrap();
        let duid = our();
        let dns: [Ipv6Addr; 1] = ["fd00::53".parse().unwrap()];
        let spec = Reply6Spec {
            server_duid: &duid,
            ias: vec![IaAnswer {
                iaid: 0x5a01,
                addr: Some("fd00::100".parse().unwrap()),
            }],
            preferred_secs: 3000,
            valid_secs: 3600,
            dns_servers: &dns,
            boot_file_url: Some("tftp://[fd00::1]/ipxe.efi"),
            rapid_commit: false,
        };
        let wire = encode(&build(&solicit, &spec));
        let m = Message::decode(&mut Decoder::new(&wire)).unwrap();
        assert_eq!(m.msg_type(), MessageType::Advertise);
        assert_eq!(m.xid(), [1, 2, 3]);
        assert_eq!(
            find(m.opts(), OptionCode::ServerId),
            Some(&DhcpOption::ServerId(duid.clone()))
        );
        assert_eq!(
            find(m.opts(), OptionCode::ClientId),
            Some(&DhcpOption::ClientId(solicit.client_id.clone().unwrap()))
        );
        let Some(DhcpOption::IANA(ia)) = find(m.opts(), OptionCode::IANA) else {
            panic!("no IA_NA: {m:?}");
        };
        assert_eq!((ia.id, ia.t1, ia.t2), (0x5a01, 1500, 2400));
        assert!(matches!(
            find(&ia.opts, OptionCode::IAAddr),
            Some(DhcpOption::IAAddr(a)) if a.addr == "fd00::100".parse::<Ipv6Addr>().unwrap() && a.valid_life == 3600
        ));
        assert_eq!(
            find(m.opts(), OptionCode::DomainNameServers),
            Some(&DhcpOption::DomainNameServers(dns.to_vec()))
        );
        match find(m.opts(), OptionCode::OptBootfileUrl) {
            Some(DhcpOption::Unknown(u)) => assert_eq!(u.data(), b"tftp://[fd00::1]/ipxe.efi"),
            other => panic!("option 59: {other:?}"),
        }
        // Rapid Commit: a Reply that says so; no address: NoAddrsAvail.
        let spec = Reply6Spec {
            ias: vec![IaAnswer {
                iaid: 0x5a01,
                addr: None,
            }],
            rapid_commit: true,
            ..spec
        };
        let m = Message::decode(&mut Decoder::new(&encode(&build(&solicit, &spec)))).unwrap();
        assert_eq!(m.msg_type(), MessageType::Reply);
        assert!(find(m.opts(), OptionCode::RapidCommit).is_some());
        let Some(DhcpOption::IANA(ia)) = find(m.opts(), OptionCode::IANA) else {
            panic!("no IA_NA");
        };
        assert!(matches!(
            find(&ia.opts, OptionCode::StatusCode),
            Some(DhcpOption::StatusCode(s)) if s.status == Status::NoAddrsAvail
        ));
    }
}
