//! Fuzzes the DHCP request path that needs no store: any datagram is either
//! refused by `reply::parse` or decoded, given a boot answer, and answered with
//! an OFFER, ACK or NAK that encodes and decodes again with the request's
//! transaction id — never a panic (the decoder alone panics on a hardware
//! length past 16, which `parse` refuses).
#![no_main]

use dhcproto::v4::{Message, MessageType};
use dhcproto::{Decodable, Decoder};
use libfuzzer_sys::fuzz_target;
use racklift::config::SubnetConfig;
use racklift::netboot::dhcp::pxe::{BootFiles, ClientInfo, decide};
use racklift::netboot::dhcp::reply::{ReplySpec, build, encode, parse};
use std::net::Ipv4Addr;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = parse(data) else { return };
    let files = BootFiles::default();
    let boot = decide(&ClientInfo::from_request(&req.msg), req.mac, &files);
    let subnet = SubnetConfig {
        network: "10.77.0.0/16".parse().unwrap(),
        ranges: vec![(Ipv4Addr::new(10, 77, 1, 1), Ipv4Addr::new(10, 77, 1, 9))],
        router: Some(Ipv4Addr::new(10, 77, 0, 1)),
        dns_servers: vec![Ipv4Addr::new(10, 77, 0, 1)],
        domain: Some("lab.example".into()),
        next_server: None,
        lease_time: std::time::Duration::from_secs(3600),
        discovery: true,
    };
    let _ = (req.requested_ip(), req.server_id(), req.hostname());
    for (kind, proxy) in [
        (MessageType::Offer, false),
        (MessageType::Ack, false),
        (MessageType::Nak, false),
        (MessageType::Offer, true),
    ] {
        let m = build(
            &req,
            &ReplySpec {
                kind,
                yiaddr: Ipv4Addr::new(10, 77, 1, 1),
                server_id: Ipv4Addr::new(10, 77, 0, 1),
                subnet: (!proxy).then_some(&subnet),
                lease_secs: Some(3600),
                boot: &boot,
                next_server: Ipv4Addr::new(10, 77, 0, 1),
                proxy,
                hostname: req.hostname(),
                message: Some("fuzz"),
            },
        );
        let bytes = encode(&m);
        let back = Message::decode(&mut Decoder::new(&bytes)).expect("our reply decodes");
        assert_eq!(back.xid(), req.msg.xid());
        assert_eq!(back.opts().msg_type(), Some(kind));
    }
});
