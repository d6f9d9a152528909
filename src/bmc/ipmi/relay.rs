//! A retransmitting UDP relay between ipmi-rs and one BMC, for one session.
//!
//! ipmi-rs sends each request once and waits; BMCs drop packets. IPMI over LAN
//! is strictly one request, one response, so a relay on the loopback interface
//! can make the link reliable without knowing the protocol: it forwards each
//! request from ipmi-rs to the BMC and, when no answer comes within the per-try
//! timeout, sends the very same bytes again (same session sequence number, same
//! request sequence, as `ipmitool` does), up to the number of tries. This covers
//! the session set-up (RMCP ping, RAKP exchange) as well as the commands.
//!
//! When a request has no answer after every try, or the BMC's host says nothing
//! listens on the port, the relay records why and wakes ipmi-rs with a one-byte
//! datagram (which it rejects at once), so the caller learns the reason without
//! waiting for ipmi-rs's own timeout.
//!
//! The session set-up messages travel in clear, so the relay also checks their
//! answers: a stray packet is not passed on, and when the BMC answers a repeated
//! RAKP message 3 from inside the already open session (OpenIPMI does, once the
//! first answer was lost), the set-up has to start over; the relay says so
//! instead of handing ipmi-rs a packet it cannot read. It records the RMCP+
//! status codes of the answers (ipmi-rs 0.6 reads RAKP message 2's status from
//! the wrong byte), and the session ID that ipmi-rs puts in its session
//! headers, so the session can be closed by ID.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How hard the relay tries per request.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tries {
    pub timeout: Duration,
    pub count: u32,
}

/// Why the relay stopped passing answers on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Failure {
    /// The BMC did not answer, or nothing listens on its port.
    Unreachable(String),
    /// The session set-up went astray; a new set-up can succeed.
    Restart(String),
}

#[derive(Debug, Default)]
struct State {
    failure: Option<Failure>,
    /// The last non-zero RMCP+ status code: (answer's payload type, status).
    rmcpp_status: Option<(u8, u8)>,
    session_id: Option<u32>,
    retransmits: u32,
    next_tries: Option<u32>,
}

/// What to do with a packet from the BMC.
enum Verdict {
    Forward,
    Ignore,
    Restart(String),
}

/// One session's relay: `run` it on a thread, point ipmi-rs at `local_addr`.
pub(super) struct Relay {
    /// Faces ipmi-rs, on the loopback interface.
    inner: UdpSocket,
    inner_addr: SocketAddr,
    /// Faces the BMC.
    outer: UdpSocket,
    bmc: SocketAddr,
    stop: AtomicBool,
    state: Mutex<State>,
}

impl Relay {
    pub fn bind(bmc: SocketAddr) -> std::io::Result<Relay> {
        // ipmi-rs binds "[::]:0"; the IPv6 loopback reaches it whatever `bindv6only` says.
        let inner = UdpSocket::bind("[::1]:0")?;
        let inner_addr = inner.local_addr()?;
        let outer = UdpSocket::bind(if bmc.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
        outer.connect(bmc)?;
        Ok(Relay {
            inner,
            inner_addr,
            outer,
            bmc,
            stop: AtomicBool::new(false),
            state: Mutex::new(State::default()),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.inner_addr
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why the relay stopped passing answers on, if it did.
    pub fn failure(&self) -> Option<Failure> {
        self.state().failure.clone()
    }

    /// Why the BMC could not be reached, once a request went unanswered.
    pub fn unreachable(&self) -> Option<String> {
        match self.failure() {
            Some(Failure::Unreachable(why)) => Some(why),
            _ => None,
        }
    }

    /// The last non-zero RMCP+ status code the BMC sent during the session
    /// set-up, with the payload type of the answer that carried it.
    pub fn rmcpp_status(&self) -> Option<(u8, u8)> {
        self.state().rmcpp_status
    }

    /// The session ID seen in ipmi-rs's session headers (the BMC's ID).
    pub fn session_id(&self) -> Option<u32> {
        self.state().session_id
    }

    /// How many requests were sent again.
    pub fn retransmits(&self) -> u32 {
        self.state().retransmits
    }

    /// Limits the tries of the next request only.
    pub fn limit_next_tries(&self, count: u32) {
        self.state().next_tries = Some(count.max(1));
    }

    /// Ends `run`.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking receive; the timeout in `run` covers a lost wake-up.
        let _ = self.inner.send_to(&[], self.inner_addr);
    }

    /// Relays until `stop`.
    pub fn run(&self, tries: Tries) {
        let mut buf = [0u8; 2048];
        let mut client: Option<SocketAddr> = None;
        let _ = self
            .inner
            .set_read_timeout(Some(Duration::from_millis(500)));
        while !self.stop.load(Ordering::SeqCst) {
            let (n, from) = match self.inner.recv_from(&mut buf) {
                Ok(r) => r,
                Err(_) => continue,
            };
            if from == self.inner_addr {
                continue;
            }
            match client {
                None => client = Some(from),
                Some(c) if c != from => continue,
                Some(_) => {}
            }
            let request = buf[..n].to_vec();
            if let Some(id) = session_id_of(&request) {
                self.state().session_id = Some(id);
            }
            let count = self.state().next_tries.take().unwrap_or(tries.count);
            match self.exchange(&request, count, tries.timeout) {
                Ok(answer) => {
                    let _ = self.inner.send_to(&answer, from);
                }
                Err(Some(failure)) => {
                    self.state().failure = Some(failure);
                    let _ = self.inner.send_to(&[0], from);
                }
                // Stopped meanwhile: the session is over.
                Err(None) => return,
            }
        }
    }

    /// Sends one request until an answer comes or the tries run out; `Err(None)` when stopped.
    fn exchange(
        &self,
        request: &[u8],
        count: u32,
        timeout: Duration,
    ) -> Result<Vec<u8>, Option<Failure>> {
        // Short waits, so that `stop` is noticed while a request goes unanswered.
        const SLICE: Duration = Duration::from_millis(50);
        let mut buf = [0u8; 2048];
        self.drain(&mut buf);
        let mut last_error: Option<std::io::Error> = None;
        for attempt in 0..count {
            if attempt > 0 {
                self.state().retransmits += 1;
            }
            let deadline = Instant::now() + timeout;
            match self.outer.send(request) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    return Err(Some(Failure::Unreachable(self.refused())));
                }
                Err(e) => last_error = Some(e),
            }
            loop {
                if self.stop.load(Ordering::SeqCst) {
                    return Err(None);
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                if self.outer.set_read_timeout(Some(left.min(SLICE))).is_err() {
                    std::thread::sleep(left.min(SLICE));
                    continue;
                }
                match self.outer.recv(&mut buf) {
                    Ok(m) => match check_answer(request, &buf[..m]) {
                        Verdict::Forward => {
                            if let Some(status) = rmcpp_status(&buf[..m]) {
                                self.state().rmcpp_status = Some(status);
                            }
                            return Ok(buf[..m].to_vec());
                        }
                        Verdict::Ignore => {}
                        Verdict::Restart(why) => return Err(Some(Failure::Restart(why))),
                    },
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                        return Err(Some(Failure::Unreachable(self.refused())));
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                        ) => {}
                    Err(e) => {
                        last_error = Some(e);
                        std::thread::sleep(left.min(SLICE));
                    }
                }
            }
        }
        let mut why = format!(
            "no answer after {count} tries of {} ms each",
            timeout.as_millis()
        );
        if let Some(e) = last_error {
            why.push_str(&format!(" (last error: {e})"));
        }
        Err(Some(Failure::Unreachable(why)))
    }

    fn refused(&self) -> String {
        format!(
            "nothing listens on UDP port {} (ICMP port unreachable)",
            self.bmc.port()
        )
    }

    /// Drops late answers to earlier requests, and stale errors.
    fn drain(&self, buf: &mut [u8]) {
        if self.outer.set_nonblocking(true).is_ok() {
            for _ in 0..64 {
                match self.outer.recv(buf) {
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {}
                }
            }
            let _ = self.outer.set_nonblocking(false);
        }
    }
}

/// RMCP class of IPMI messages, and of ASF messages (ping, pong).
const CLASS_IPMI: u8 = 0x07;
const CLASS_ASF: u8 = 0x06;

/// The RMCP class of a packet.
fn rmcp_class(packet: &[u8]) -> Option<u8> {
    (packet.len() >= 4 && packet[0] == 0x06).then(|| packet[3] & 0x1f)
}

/// An RMCP+ (IPMI 2.0) packet's payload type byte (with its encrypted and
/// authenticated bits) and its payload.
fn rmcp_plus(packet: &[u8]) -> Option<(u8, &[u8])> {
    if rmcp_class(packet)? != CLASS_IPMI || packet.get(4)? & 0x0f != 0x06 {
        return None;
    }
    let ptype = *packet.get(5)?;
    if ptype & 0x3f == 0x02 {
        return None; // OEM payloads: never part of racklift's sessions.
    }
    let len = u16::from_le_bytes([*packet.get(14)?, *packet.get(15)?]) as usize;
    let payload = packet.get(16..)?;
    Some((ptype, &payload[..len.min(payload.len())]))
}

/// Whether an answer fits its request, for what the relay can see in clear.
fn check_answer(request: &[u8], answer: &[u8]) -> Verdict {
    match rmcp_class(request) {
        // An ASF ping wants an ASF pong.
        Some(CLASS_ASF) => {
            return if rmcp_class(answer) == Some(CLASS_ASF) {
                Verdict::Forward
            } else {
                Verdict::Ignore
            };
        }
        Some(CLASS_IPMI) => {}
        _ => return Verdict::Forward,
    }
    let Some((req_type, _)) = rmcp_plus(request) else {
        // IPMI 1.5, or not RMCP+: the relay cannot tell.
        return Verdict::Forward;
    };
    let req_type = req_type & 0x3f;
    // Open Session Request (10h), RAKP 1 (12h), RAKP 3 (14h) each want the next
    // type, in clear. Session messages are encrypted: ipmi-rs checks those.
    if !matches!(req_type, 0x10 | 0x12 | 0x14) {
        return Verdict::Forward;
    }
    match rmcp_plus(answer) {
        Some((t, _)) if t == req_type + 1 => Verdict::Forward,
        Some((t, _)) if t & 0x3f == req_type + 1 && req_type == 0x14 => Verdict::Restart(
            "the BMC answered a repeated RAKP message 3 from inside the session".into(),
        ),
        _ => Verdict::Ignore,
    }
}

/// The RMCP+ status code of an Open Session Response or RAKP message 2 or 4,
/// when it is not "no errors": (payload type, status).
fn rmcpp_status(answer: &[u8]) -> Option<(u8, u8)> {
    let (ptype, payload) = rmcp_plus(answer)?;
    if !matches!(ptype, 0x11 | 0x13 | 0x15) {
        return None;
    }
    // Byte 1: message tag; byte 2: status code.
    let status = *payload.get(1)?;
    (status != 0).then_some((ptype, status))
}

/// The session ID in an RMCP/IPMI packet's session header, when it is a
/// message inside an established session.
pub(super) fn session_id_of(packet: &[u8]) -> Option<u32> {
    if rmcp_class(packet)? != CLASS_IPMI {
        return None;
    }
    let p = &packet[4..];
    let id_bytes = if p.first()? & 0x0f == 0x06 {
        // IPMI 2.0 (RMCP+): format, payload type, session ID, sequence, length.
        // Only IPMI messages (payload type 0) travel inside a session.
        if p.get(1)? & 0x3f != 0 {
            return None;
        }
        p.get(2..6)?
    } else {
        // IPMI 1.5: auth type, sequence, session ID.
        p.get(5..9)?
    };
    let id = u32::from_le_bytes(id_bytes.try_into().ok()?);
    (id != 0).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_session_id_in_session_headers() {
        // RMCP+ IPMI message, encrypted and authenticated, session 0x0a0b0c0d.
        let v2 = [
            0x06, 0x00, 0xff, 0x07, 0x06, 0xc0, 0x0d, 0x0c, 0x0b, 0x0a, 0x05, 0, 0, 0, 0x20, 0,
        ];
        assert_eq!(session_id_of(&v2), Some(0x0a0b_0c0d));
        // RAKP 1 (payload 12h) carries no session in its header.
        let mut rakp = v2;
        rakp[5] = 0x12;
        rakp[6..10].copy_from_slice(&[0, 0, 0, 0]);
        assert_eq!(session_id_of(&rakp), None);
        // IPMI 1.5, auth type MD5, sequence 1, session 0x01020304.
        let v15 = [
            0x06, 0x00, 0xff, 0x07, 0x02, 1, 0, 0, 0, 0x04, 0x03, 0x02, 0x01,
        ];
        assert_eq!(session_id_of(&v15), Some(0x0102_0304));
        // Session-less 1.5 (Get Channel Authentication Capabilities) and ASF ping.
        let sessionless = [0x06, 0x00, 0xff, 0x07, 0x00, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(session_id_of(&sessionless), None);
        let ping = [0x06, 0x00, 0xff, 0x06, 0, 0, 0x11, 0xbe];
        assert_eq!(session_id_of(&ping), None);
        assert_eq!(session_id_of(&[0x06, 0x00]), None);
    }

    #[test]
    fn retransmits_identical_bytes_then_gives_up() {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        silent
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let relay = Relay::bind(silent.local_addr().unwrap()).unwrap();
        let tries = Tries {
            timeout: Duration::from_millis(50),
            count: 3,
        };
        let why = relay
            .exchange(b"\x06\x00\xff\x06hello", tries.count, tries.timeout)
            .unwrap_err();
        assert!(
            matches!(&why, Some(Failure::Unreachable(w)) if w.starts_with("no answer after 3 tries of 50 ms")),
            "{why:?}"
        );
        assert_eq!(relay.retransmits(), 2);
        let mut buf = [0u8; 64];
        for _ in 0..3 {
            let n = silent.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"\x06\x00\xff\x06hello");
        }
    }

    #[test]
    fn a_closed_port_is_reported_at_once() {
        let port = {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap().port()
        };
        let relay = Relay::bind(SocketAddr::from(([127, 0, 0, 1], port))).unwrap();
        let why = relay
            .exchange(b"ping", 3, Duration::from_secs(30))
            .unwrap_err();
        assert!(
            matches!(&why, Some(Failure::Unreachable(w)) if w.contains("nothing listens on UDP port")),
            "{why:?}"
        );
    }

    fn rmcpp(ptype: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x06, 0x00, 0xff, 0x07, 0x06, ptype, 0, 0, 0, 0, 0, 0, 0, 0];
        p.extend_from_slice(&(payload.len() as u16).to_le_bytes());
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn set_up_answers_are_checked_in_clear() {
        let ping = [0x06, 0x00, 0xff, 0x06, 0, 0, 0x11, 0xbe, 0x80, 0xc8, 0, 0];
        let pong = [
            0x06, 0x00, 0xff, 0x06, 0, 0, 0x11, 0xbe, 0x40, 0xc8, 0, 0x10,
        ];
        assert!(matches!(check_answer(&ping, &pong), Verdict::Forward));
        let rakp1 = rmcpp(0x12, &[0; 32]);
        let rakp2 = rmcpp(0x13, &[0x0d, 0x00, 0, 0]);
        assert!(matches!(check_answer(&rakp1, &rakp2), Verdict::Forward));
        assert!(matches!(check_answer(&ping, &rakp2), Verdict::Ignore));
        // A stale RAKP 2 while waiting for RAKP 4 is dropped.
        let rakp3 = rmcpp(0x14, &[0x0a, 0, 0, 0, 1, 0, 0, 0]);
        assert!(matches!(check_answer(&rakp3, &rakp2), Verdict::Ignore));
        assert!(matches!(
            check_answer(&rakp3, &rmcpp(0x15, &[0x0a, 0, 0, 0])),
            Verdict::Forward
        ));
        // RAKP 4 from inside the session (encrypted, authenticated): start over.
        assert!(matches!(
            check_answer(&rakp3, &rmcpp(0xd5, &[0; 32])),
            Verdict::Restart(_)
        ));
        // In-session messages are passed on untouched.
        let in_session = rmcpp(0xc0, &[0; 32]);
        assert!(matches!(check_answer(&in_session, &pong), Verdict::Forward));
    }

    #[test]
    fn reads_rmcp_plus_status_codes() {
        // RAKP 2 "unauthorized name" (0Dh) in byte 2 of the payload.
        assert_eq!(
            rmcpp_status(&rmcpp(0x13, &[0x0d, 0x0d, 0, 0])),
            Some((0x13, 0x0d))
        );
        assert_eq!(rmcpp_status(&rmcpp(0x13, &[0x0d, 0x00, 0, 0])), None);
        assert_eq!(
            rmcpp_status(&rmcpp(0x11, &[0x00, 0x11])),
            Some((0x11, 0x11))
        );
        assert_eq!(rmcpp_status(&rmcpp(0xc0, &[0x00, 0x11])), None);
    }
}
