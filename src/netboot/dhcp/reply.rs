//! DHCP requests checked and replies built: pure functions of the request and
//! what the server decided, no I/O.
//!
//! [`parse`] refuses what is not a well-formed Ethernet BOOTREQUEST with a
//! message type (the decoder alone accepts a wrong magic cookie and a hardware
//! length past 16, which would panic later); [`build`] writes the OFFER, ACK or
//! NAK with the subnet's options, the boot answer, and what RFC 2131, PXE and
//! relays (RFC 3046) expect echoed.

use super::pxe::BootAnswer;
use crate::config::SubnetConfig;
use crate::node::MacAddr;
use dhcproto::v4::{DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use std::net::Ipv4Addr;

/// The DHCP magic cookie (RFC 2131, section 3).
const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// Smallest BOOTP message: the fixed header and the cookie.
const HEADER_LEN: usize = 240;

/// Why a packet was dropped without an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("{0} bytes is shorter than a DHCP header (240)")]
    Short(usize),
    #[error("wrong magic cookie {0:02x?}")]
    Magic([u8; 4]),
    #[error("not a BOOTREQUEST (op {0})")]
    NotRequest(u8),
    #[error("hardware type {htype} with address length {hlen}: only Ethernet (1, 6) is served")]
    Hardware { htype: u8, hlen: u8 },
    #[error("cannot decode: {0}")]
    Decode(String),
    #[error("no message type (option 53)")]
    NoType,
    #[error("option {code} is {len} bytes long: {why}")]
    BadOption {
        code: u8,
        len: usize,
        why: &'static str,
    },
}

/// Walks the options field and refuses lengths the decoder would choke on
/// (it asserts some fixed lengths, and subtracts from others unchecked).
fn check_options(opts: &[u8]) -> Result<(), Malformed> {
    let mut i = 0;
    while i < opts.len() {
        let code = opts[i];
        match code {
            0 => {
                i += 1;
                continue;
            }
            255 => return Ok(()),
            _ => {}
        }
        let Some(&len) = opts.get(i + 1) else {
            return Err(Malformed::BadOption {
                code,
                len: 0,
                why: "no length byte",
            });
        };
        let len = len as usize;
        if i + 2 + len > opts.len() {
            return Err(Malformed::BadOption {
                code,
                len,
                why: "runs past the end of the packet",
            });
        }
        let bad = match code {
            // Rapid Commit carries nothing.
            80 if len != 0 => Some("must be empty"),
            // Client FQDN: flags and two rcodes before the name.
            81 if len < 3 => Some("must be at least 3"),
            // Client network interface identifier.
            94 if len != 3 => Some("must be 3"),
            // Bulk leasequery status code: a code byte, then text.
            151 if len < 1 => Some("must be at least 1"),
            // Bulk leasequery times.
            152..=155 if len != 4 => Some("must be 4"),
            _ => None,
        };
        if let Some(why) = bad {
            return Err(Malformed::BadOption { code, len, why });
        }
        i += 2 + len;
    }
    Ok(())
}

/// A request worth answering.
#[derive(Debug, Clone)]
pub struct Request {
    pub msg: Message,
    pub kind: MessageType,
    pub mac: MacAddr,
}

impl Request {
    /// Option 50, when sent.
    pub fn requested_ip(&self) -> Option<Ipv4Addr> {
        match self.msg.opts().get(OptionCode::RequestedIpAddress) {
            Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
            _ => None,
        }
    }

    /// Option 54, when sent.
    pub fn server_id(&self) -> Option<Ipv4Addr> {
        match self.msg.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
            _ => None,
        }
    }

    /// Option 12, when sent and printable.
    pub fn hostname(&self) -> Option<&str> {
        match self.msg.opts().get(OptionCode::Hostname) {
            Some(DhcpOption::Hostname(h))
                if !h.is_empty()
                    && h.len() <= 63
                    && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') =>
            {
                Some(h)
            }
            _ => None,
        }
    }
}

/// Checks and decodes one datagram.
pub fn parse(bytes: &[u8]) -> Result<Request, Malformed> {
    if bytes.len() < HEADER_LEN {
        return Err(Malformed::Short(bytes.len()));
    }
    let magic: [u8; 4] = bytes[236..240].try_into().expect("four bytes");
    if magic != MAGIC {
        return Err(Malformed::Magic(magic));
    }
    if bytes[0] != 1 {
        return Err(Malformed::NotRequest(bytes[0]));
    }
    if bytes[1] != 1 || bytes[2] != 6 {
        return Err(Malformed::Hardware {
            htype: bytes[1],
            hlen: bytes[2],
        });
    }
    check_options(&bytes[HEADER_LEN..])?;
    let msg =
        Message::decode(&mut Decoder::new(bytes)).map_err(|e| Malformed::Decode(e.to_string()))?;
    let kind = msg.opts().msg_type().ok_or(Malformed::NoType)?;
    let mac = MacAddr(msg.chaddr()[..6].try_into().expect("hlen is 6"));
    Ok(Request { msg, kind, mac })
}

/// What goes into a reply besides the request's own fields.
#[derive(Debug, Clone)]
pub struct ReplySpec<'a> {
    pub kind: MessageType,
    /// The address given (unspecified for NAK, INFORM and proxyDHCP).
    pub yiaddr: Ipv4Addr,
    /// This server's address on the client's network (option 54).
    pub server_id: Ipv4Addr,
    /// Subnet options (mask, router, DNS, domain); none for NAK and proxyDHCP.
    pub subnet: Option<&'a SubnetConfig>,
    /// Lease time in seconds (OFFER and ACK of an address).
    pub lease_secs: Option<u32>,
    pub boot: &'a BootAnswer,
    /// The TFTP server (siaddr and option 66).
    pub next_server: Ipv4Addr,
    /// proxyDHCP (and the boot service on 4011): echo `PXEClient` and tell
    /// the ROM to take the boot file as is.
    pub proxy: bool,
    pub hostname: Option<&'a str>,
    /// Option 56, for a NAK.
    pub message: Option<&'a str>,
}

/// Option 43 of a proxyDHCP answer: PXE_DISCOVERY_CONTROL = 8 (take the boot
/// file of this reply, no boot-server discovery), then End.
const PXE_VENDOR_OPTIONS: [u8; 4] = [6, 1, 8, 255];

/// The reply to `req`.
pub fn build(req: &Request, s: &ReplySpec<'_>) -> Message {
    let q = &req.msg;
    let mut m = Message::default();
    m.set_opcode(Opcode::BootReply)
        .set_htype(HType::Eth)
        .set_xid(q.xid())
        .set_flags(q.flags())
        .set_giaddr(q.giaddr())
        .set_chaddr(q.chaddr());
    if matches!(s.kind, MessageType::Ack) && !q.ciaddr().is_unspecified() {
        m.set_ciaddr(q.ciaddr());
    }
    m.set_yiaddr(s.yiaddr);
    if s.kind == MessageType::Nak && !q.giaddr().is_unspecified() {
        // A relay must broadcast a NAK on the client's link (RFC 2131, 4.3.2).
        m.set_flags(Flags::default().set_broadcast());
    }
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(s.kind));
    o.insert(DhcpOption::ServerIdentifier(s.server_id));
    if s.kind == MessageType::Nak {
        if let Some(text) = s.message {
            o.insert(DhcpOption::Message(text.to_string()));
        }
        return m;
    }
    if let Some(secs) = s.lease_secs {
        o.insert(DhcpOption::AddressLeaseTime(secs));
        o.insert(DhcpOption::Renewal(secs / 2));
        o.insert(DhcpOption::Rebinding(secs / 8 * 7));
    }
    if let Some(sub) = s.subnet {
        o.insert(DhcpOption::SubnetMask(sub.network.mask()));
        o.insert(DhcpOption::BroadcastAddr(sub.network.broadcast()));
        if let Some(r) = sub.router {
            o.insert(DhcpOption::Router(vec![r]));
        }
        if !sub.dns_servers.is_empty() {
            o.insert(DhcpOption::DomainNameServer(sub.dns_servers.clone()));
        }
        if let Some(d) = &sub.domain {
            o.insert(DhcpOption::DomainName(d.clone()));
        }
    }
    if let Some(h) = s.hostname {
        o.insert(DhcpOption::Hostname(h.to_string()));
    }
    let pxe = q.opts().get(OptionCode::ClassIdentifier).is_some_and(
        |v| matches!(v, DhcpOption::ClassIdentifier(c) if c.starts_with(b"PXEClient")),
    );
    match s.boot {
        BootAnswer::Tftp { file } | BootAnswer::Script { url: file } => {
            m.set_siaddr(s.next_server);
            let bytes = file.as_bytes();
            if bytes.len() < 128 {
                m.set_fname(bytes);
            }
            let o = m.opts_mut();
            o.insert(DhcpOption::TFTPServerName(
                s.next_server.to_string().into_bytes(),
            ));
            o.insert(DhcpOption::BootfileName(bytes.to_vec()));
        }
        BootAnswer::Http { url } => {
            let bytes = url.as_bytes();
            if bytes.len() < 128 {
                m.set_fname(bytes);
            }
            let o = m.opts_mut();
            o.insert(DhcpOption::BootfileName(bytes.to_vec()));
            o.insert(DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()));
        }
        BootAnswer::Unsupported { .. } | BootAnswer::NotNetboot => {}
    }
    let o = m.opts_mut();
    // Option 60 `PXEClient` only in proxyDHCP answers. A full server's offer
    // with it is a BINL offer to EDK2 (and to the PXE specification): the
    // client then asks for its boot file again on UDP 4011 instead of taking
    // the one offered. Without it the offer is plain DHCP with a boot file,
    // which every PXE client (BIOS ROMs, EDK2, iPXE) boots at once.
    if pxe && s.proxy {
        o.insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
    }
    if s.proxy && pxe {
        o.insert(DhcpOption::VendorExtensions(PXE_VENDOR_OPTIONS.to_vec()));
    }
    // PXE: the client's UUID is echoed; relays expect their option 82 back.
    if let Some(guid @ DhcpOption::ClientMachineIdentifier(_)) =
        q.opts().get(OptionCode::ClientMachineIdentifier)
    {
        o.insert(guid.clone());
    }
    if let Some(relay @ DhcpOption::RelayAgentInformation(_)) =
        q.opts().get(OptionCode::RelayAgentInformation)
    {
        o.insert(relay.clone());
    }
    m
}

/// The wire form of a reply.
pub fn encode(m: &Message) -> Vec<u8> {
    let mut buf = Vec::with_capacity(576);
    // Encoding a message built by `build` cannot fail: every option fits.
    if m.encode(&mut Encoder::new(&mut buf)).is_err() {
        buf.clear();
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::Architecture;

    fn subnet() -> SubnetConfig {
        SubnetConfig {
            network: "10.77.0.0/16".parse().unwrap(),
            ranges: vec![("10.77.1.1".parse().unwrap(), "10.77.1.9".parse().unwrap())],
            router: Some("10.77.0.1".parse().unwrap()),
            dns_servers: vec!["10.77.0.53".parse().unwrap()],
            domain: Some("lab.example".into()),
            next_server: None,
            lease_time: std::time::Duration::from_secs(3600),
            discovery: true,
        }
    }

    fn request(kind: MessageType, extra: Vec<DhcpOption>) -> Vec<u8> {
        let mut m = Message::new(
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &[0x52, 0x54, 0, 0, 0, 9],
        );
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        for o in extra {
            m.opts_mut().insert(o);
        }
        let mut buf = Vec::new();
        m.encode(&mut Encoder::new(&mut buf)).unwrap();
        buf
    }

    #[test]
    fn refuses_what_is_not_a_request() {
        let good = request(MessageType::Discover, vec![]);
        assert!(parse(&good).is_ok());
        assert_eq!(parse(&good[..100]).unwrap_err(), Malformed::Short(100));
        let mut magic = good.clone();
        magic[236] = 0;
        assert!(matches!(parse(&magic), Err(Malformed::Magic(_))));
        let mut reply = good.clone();
        reply[0] = 2;
        assert_eq!(parse(&reply).unwrap_err(), Malformed::NotRequest(2));
        let mut hlen = good.clone();
        hlen[2] = 200;
        assert!(matches!(
            parse(&hlen),
            Err(Malformed::Hardware { hlen: 200, .. })
        ));
        let no_type = {
            let mut b = good.clone();
            b.truncate(240);
            b.push(255);
            b
        };
        assert_eq!(parse(&no_type).unwrap_err(), Malformed::NoType);
        // An option whose length runs past the end of the packet.
        let mut cut = good[..240].to_vec();
        cut.extend_from_slice(&[53, 1, 1, 12, 200, b'a']);
        assert_eq!(
            parse(&cut).unwrap_err().to_string(),
            "option 12 is 200 bytes long: runs past the end of the packet"
        );
        // Lengths the decoder asserts (a panic in debug builds): refused first.
        for bad in [[152u8, 2, 0, 0], [81, 1, 0, 255], [94, 1, 1, 255]] {
            let mut b = good[..240].to_vec();
            b.extend_from_slice(&[53, 1, 1]);
            b.extend_from_slice(&bad);
            b.push(255);
            assert!(
                matches!(parse(&b), Err(Malformed::BadOption { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn offer_carries_subnet_options_and_boot_file() {
        let req = parse(&request(
            MessageType::Discover,
            vec![
                DhcpOption::ClassIdentifier(b"PXEClient:Arch:00000:UNDI:002001".to_vec()),
                DhcpOption::ClientSystemArchitecture(Architecture(0)),
                DhcpOption::ClientMachineIdentifier(vec![0; 17]),
            ],
        ))
        .unwrap();
        let sub = subnet();
        let boot = BootAnswer::Tftp {
            file: "undionly.kpxe".into(),
        };
        let m = build(
            &req,
            &ReplySpec {
                kind: MessageType::Offer,
                yiaddr: "10.77.1.1".parse().unwrap(),
                server_id: "10.77.0.1".parse().unwrap(),
                subnet: Some(&sub),
                lease_secs: Some(3600),
                boot: &boot,
                next_server: "10.77.0.1".parse().unwrap(),
                proxy: false,
                hostname: Some("node-1"),
                message: None,
            },
        );
        let back = Message::decode(&mut Decoder::new(&encode(&m))).unwrap();
        assert_eq!(back.opcode(), Opcode::BootReply);
        assert_eq!(back.xid(), req.msg.xid());
        assert_eq!(back.yiaddr(), "10.77.1.1".parse::<Ipv4Addr>().unwrap());
        assert_eq!(back.siaddr(), "10.77.0.1".parse::<Ipv4Addr>().unwrap());
        // The decoder keeps the field's NUL terminator.
        assert_eq!(
            back.fname().unwrap().split(|b| *b == 0).next(),
            Some(&b"undionly.kpxe"[..])
        );
        let o = back.opts();
        assert_eq!(o.msg_type(), Some(MessageType::Offer));
        assert_eq!(
            o.get(OptionCode::SubnetMask),
            Some(&DhcpOption::SubnetMask("255.255.0.0".parse().unwrap()))
        );
        assert_eq!(o.get(OptionCode::Renewal), Some(&DhcpOption::Renewal(1800)));
        assert_eq!(
            o.get(OptionCode::DomainName),
            Some(&DhcpOption::DomainName("lab.example".into()))
        );
        // Not a BINL offer: no option 60.
        assert_eq!(o.get(OptionCode::ClassIdentifier), None);
        assert!(o.get(OptionCode::ClientMachineIdentifier).is_some());
        assert!(o.get(OptionCode::VendorExtensions).is_none());
    }

    #[test]
    fn proxy_answer_has_no_address_and_pxe_vendor_options() {
        let req = parse(&request(
            MessageType::Discover,
            vec![DhcpOption::ClassIdentifier(
                b"PXEClient:Arch:00007:UNDI:003016".to_vec(),
            )],
        ))
        .unwrap();
        let boot = BootAnswer::Tftp {
            file: "ipxe.efi".into(),
        };
        let m = build(
            &req,
            &ReplySpec {
                kind: MessageType::Offer,
                yiaddr: Ipv4Addr::UNSPECIFIED,
                server_id: "10.77.0.1".parse().unwrap(),
                subnet: None,
                lease_secs: None,
                boot: &boot,
                next_server: "10.77.0.1".parse().unwrap(),
                proxy: true,
                hostname: None,
                message: None,
            },
        );
        assert!(m.yiaddr().is_unspecified());
        assert!(m.opts().get(OptionCode::AddressLeaseTime).is_none());
        assert_eq!(
            m.opts().get(OptionCode::VendorExtensions),
            Some(&DhcpOption::VendorExtensions(PXE_VENDOR_OPTIONS.to_vec()))
        );
    }

    #[test]
    fn long_urls_go_in_option_67_only_and_naks_say_why() {
        let req = parse(&request(MessageType::Request, vec![])).unwrap();
        let url = format!(
            "http://10.0.0.1:8080/boot.ipxe?mac=52:54:00:00:00:09&{}",
            "x".repeat(120)
        );
        let boot = BootAnswer::Script { url: url.clone() };
        let spec = ReplySpec {
            kind: MessageType::Ack,
            yiaddr: "10.77.1.2".parse().unwrap(),
            server_id: "10.77.0.1".parse().unwrap(),
            subnet: None,
            lease_secs: Some(60),
            boot: &boot,
            next_server: "10.77.0.1".parse().unwrap(),
            proxy: false,
            hostname: None,
            message: None,
        };
        let m = build(&req, &spec);
        assert!(m.fname().is_none());
        assert_eq!(
            m.opts().get(OptionCode::BootfileName),
            Some(&DhcpOption::BootfileName(url.into_bytes()))
        );
        let nak = build(
            &req,
            &ReplySpec {
                kind: MessageType::Nak,
                yiaddr: Ipv4Addr::UNSPECIFIED,
                message: Some("address in use"),
                ..spec
            },
        );
        assert_eq!(nak.opts().msg_type(), Some(MessageType::Nak));
        assert!(nak.opts().get(OptionCode::AddressLeaseTime).is_none());
        assert_eq!(
            nak.opts().get(OptionCode::Message),
            Some(&DhcpOption::Message("address in use".into()))
        );
    }
}
