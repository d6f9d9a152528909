//! The TFTP wire format for a read-only server: decoding requests (RFC 1350)
//! with their options (RFC 2347 blksize, RFC 2348 timeout and tsize, RFC 2349,
//! RFC 7440 windowsize), deciding which options are granted, decoding what a
//! client sends during a transfer (ACK, ERROR), encoding OACK, ERROR and DATA
//! headers, and the netascii conversion of a file's bytes.
//!
//! Decoding never panics on any input; it borrows from the packet and does not
//! allocate. An option whose value is out of range is ignored (RFC 2347) and
//! noted in [`Request::bad_options`], not fatal.

use std::io::{self, Read};
use std::time::Duration;

/// Opcodes (RFC 1350, RFC 2347).
pub const RRQ: u16 = 1;
pub const WRQ: u16 = 2;
pub const DATA: u16 = 3;
pub const ACK: u16 = 4;
pub const ERROR: u16 = 5;
pub const OACK: u16 = 6;

/// ERROR codes (RFC 1350, RFC 2347).
pub const ERR_UNDEFINED: u16 = 0;
pub const ERR_NOT_FOUND: u16 = 1;
pub const ERR_ACCESS: u16 = 2;
pub const ERR_ILLEGAL: u16 = 4;

/// The block size when the client asks for none (RFC 1350).
pub const DEFAULT_BLKSIZE: u16 = 512;
/// The largest block size a client may ask for (RFC 2348).
pub const MAX_BLKSIZE: u16 = 65464;
/// The smallest block size a client may ask for (RFC 2348).
pub const MIN_BLKSIZE: u16 = 8;

/// How a file's bytes are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Octet,
    /// Lines end in CR LF on the wire; a bare CR is sent as CR NUL.
    Netascii,
    /// Obsolete (RFC 1350); always refused.
    Mail,
}

/// The options a client asked for, each already checked against its range.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    pub blksize: Option<u16>,
    /// Seconds, 1..=255.
    pub timeout: Option<u8>,
    pub tsize: Option<u64>,
    pub windowsize: Option<u16>,
}

/// A read or write request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    pub write: bool,
    pub name: &'a str,
    pub mode: Mode,
    pub options: Options,
    /// How many known options had a value out of range (and were ignored).
    pub bad_options: u32,
}

/// What arrived on the request port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming<'a> {
    Request(Request<'a>),
    /// A well-formed DATA, ACK, ERROR or OACK, which has no business there.
    Stray(u16),
}

/// Why a packet is not a TFTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("shorter than an opcode")]
    Short,
    #[error("unknown opcode {0}")]
    Opcode(u16),
    #[error("a string is not NUL-terminated")]
    Unterminated,
    #[error("the file name is not UTF-8")]
    NotUtf8,
    #[error("unknown transfer mode")]
    Mode,
}

/// Decodes a packet sent to the request port.
pub fn decode_request(p: &[u8]) -> Result<Incoming<'_>, Malformed> {
    let (op, rest) = opcode(p)?;
    match op {
        RRQ | WRQ => {}
        DATA..=OACK => return Ok(Incoming::Stray(op)),
        _ => return Err(Malformed::Opcode(op)),
    }
    let (name, rest) = cstr(rest)?;
    let name = std::str::from_utf8(name).map_err(|_| Malformed::NotUtf8)?;
    let (mode, mut rest) = cstr(rest)?;
    let mode = if mode.eq_ignore_ascii_case(b"octet") {
        Mode::Octet
    } else if mode.eq_ignore_ascii_case(b"netascii") {
        Mode::Netascii
    } else if mode.eq_ignore_ascii_case(b"mail") {
        Mode::Mail
    } else {
        return Err(Malformed::Mode);
    };
    let mut options = Options::default();
    let mut bad_options = 0;
    while !rest.is_empty() {
        let (key, after) = cstr(rest)?;
        let (value, after) = cstr(after)?;
        rest = after;
        let known = if key.eq_ignore_ascii_case(b"blksize") {
            number(value)
                .filter(|v| (u64::from(MIN_BLKSIZE)..=u64::from(MAX_BLKSIZE)).contains(v))
                .map(|v| options.blksize = Some(v as u16))
        } else if key.eq_ignore_ascii_case(b"timeout") {
            number(value)
                .filter(|v| (1..=255).contains(v))
                .map(|v| options.timeout = Some(v as u8))
        } else if key.eq_ignore_ascii_case(b"tsize") {
            number(value).map(|v| options.tsize = Some(v))
        } else if key.eq_ignore_ascii_case(b"windowsize") {
            number(value)
                .filter(|v| (1..=65535).contains(v))
                .map(|v| options.windowsize = Some(v as u16))
        } else {
            // Unknown options are ignored (RFC 2347).
            Some(())
        };
        if known.is_none() {
            bad_options += 1;
        }
    }
    Ok(Incoming::Request(Request {
        write: op == WRQ,
        name,
        mode,
        options,
        bad_options,
    }))
}

fn opcode(p: &[u8]) -> Result<(u16, &[u8]), Malformed> {
    match p {
        [a, b, rest @ ..] => Ok((u16::from_be_bytes([*a, *b]), rest)),
        _ => Err(Malformed::Short),
    }
}

fn cstr(p: &[u8]) -> Result<(&[u8], &[u8]), Malformed> {
    let end = p
        .iter()
        .position(|&b| b == 0)
        .ok_or(Malformed::Unterminated)?;
    Ok((&p[..end], &p[end + 1..]))
}

/// A decimal number of at most 20 digits, no sign, no spaces.
fn number(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 20 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// What a transfer uses, after negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted {
    pub blksize: u16,
    pub timeout: Duration,
    pub windowsize: u16,
    /// Which options the OACK carries (none: no OACK, start with DATA 1).
    pub oack: Oack,
}

/// The options an OACK acknowledges, with their values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Oack {
    pub blksize: Option<u16>,
    pub timeout: Option<u8>,
    pub tsize: Option<u64>,
    pub windowsize: Option<u16>,
}

impl Oack {
    pub fn is_empty(&self) -> bool {
        *self == Oack::default()
    }
}

/// Decides what the transfer uses: blksize up to `max_blksize`, the client's
/// timeout (or `default_timeout`), windowsize up to `max_window`, and tsize
/// (the file's size) when the client sent `tsize 0` and the size is known.
pub fn negotiate(
    options: &Options,
    size: Option<u64>,
    max_blksize: u16,
    max_window: u16,
    default_timeout: Duration,
) -> Granted {
    let blksize = options.blksize.map(|b| b.min(max_blksize).max(MIN_BLKSIZE));
    let windowsize = options.windowsize.map(|w| w.min(max_window).max(1));
    let tsize = match (options.tsize, size) {
        (Some(0), Some(size)) => Some(size),
        _ => None,
    };
    Granted {
        blksize: blksize.unwrap_or(DEFAULT_BLKSIZE),
        timeout: options
            .timeout
            .map(|t| Duration::from_secs(t.into()))
            .unwrap_or(default_timeout),
        windowsize: windowsize.unwrap_or(1),
        oack: Oack {
            blksize,
            timeout: options.timeout,
            tsize,
            windowsize,
        },
    }
}

/// Writes an OACK for `oack` into `out` (cleared first).
pub fn encode_oack(oack: &Oack, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&OACK.to_be_bytes());
    let mut put = |key: &str, value: u64| {
        out.extend_from_slice(key.as_bytes());
        out.push(0);
        out.extend_from_slice(value.to_string().as_bytes());
        out.push(0);
    };
    if let Some(v) = oack.blksize {
        put("blksize", v.into());
    }
    if let Some(v) = oack.timeout {
        put("timeout", v.into());
    }
    if let Some(v) = oack.tsize {
        put("tsize", v);
    }
    if let Some(v) = oack.windowsize {
        put("windowsize", v.into());
    }
}

/// An ERROR packet with `code` and `message`.
pub fn encode_error(code: u16, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + message.len());
    out.extend_from_slice(&ERROR.to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend(message.bytes().filter(|&b| b != 0));
    out.push(0);
    out
}

/// Writes the DATA header for `block` into the first 4 bytes of `packet`.
pub fn data_header(packet: &mut [u8], block: u16) {
    packet[..2].copy_from_slice(&DATA.to_be_bytes());
    packet[2..4].copy_from_slice(&block.to_be_bytes());
}

/// What a client sends during a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Ack(u16),
    /// The client gave up (e.g. code 8, options refused).
    Error(u16),
    /// Anything else, ignored.
    Other,
}

/// Decodes a packet from the transfer's peer. Trailing bytes after an ACK's
/// block number (some firmware pads) are tolerated.
pub fn decode_reply(p: &[u8]) -> Reply {
    match p {
        [0, 4, a, b, ..] => Reply::Ack(u16::from_be_bytes([*a, *b])),
        [0, 5, a, b, ..] => Reply::Error(u16::from_be_bytes([*a, *b])),
        _ => Reply::Other,
    }
}

/// Converts a byte stream to netascii: LF becomes CR LF, CR becomes CR NUL.
pub struct Netascii<R> {
    inner: R,
    raw: Box<[u8]>,
    start: usize,
    end: usize,
    /// The second byte of a pair that did not fit in the last read.
    pending: Option<u8>,
}

impl<R: Read> Netascii<R> {
    pub fn new(inner: R) -> Netascii<R> {
        Netascii {
            inner,
            raw: vec![0; 64 * 1024].into_boxed_slice(),
            start: 0,
            end: 0,
            pending: None,
        }
    }
}

impl<R: Read> Read for Netascii<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        if n < out.len()
            && let Some(b) = self.pending.take()
        {
            out[n] = b;
            n += 1;
        }
        while n < out.len() {
            if self.start == self.end {
                if n > 0 {
                    break;
                }
                self.start = 0;
                self.end = self.inner.read(&mut self.raw)?;
                if self.end == 0 {
                    break;
                }
            }
            let b = self.raw[self.start];
            self.start += 1;
            let pair = match b {
                b'\n' => Some((b'\r', b'\n')),
                b'\r' => Some((b'\r', 0)),
                _ => None,
            };
            match pair {
                None => {
                    out[n] = b;
                    n += 1;
                }
                Some((first, second)) => {
                    out[n] = first;
                    n += 1;
                    if n < out.len() {
                        out[n] = second;
                        n += 1;
                    } else {
                        self.pending = Some(second);
                    }
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrq(rest: &[u8]) -> Vec<u8> {
        let mut p = b"\x00\x01boot.efi\x00octet\x00".to_vec();
        p.extend_from_slice(rest);
        p
    }

    fn request(p: &[u8]) -> Request<'_> {
        match decode_request(p) {
            Ok(Incoming::Request(r)) => r,
            other => panic!("not a request: {other:?}"),
        }
    }

    #[test]
    fn a_plain_read_request() {
        let r = request(b"\x00\x01pxelinux.0\x00OCTET\x00");
        assert_eq!(r.name, "pxelinux.0");
        assert_eq!(r.mode, Mode::Octet);
        assert!(!r.write);
        assert_eq!(r.options, Options::default());
        assert_eq!(r.bad_options, 0);
        let w = request(b"\x00\x02up\x00netascii\x00");
        assert!(w.write);
        assert_eq!(w.mode, Mode::Netascii);
        assert_eq!(request(b"\x00\x01m\x00Mail\x00").mode, Mode::Mail);
    }

    #[test]
    fn each_option_and_its_bounds() {
        let p = rrq(b"BLKSIZE\x001428\x00timeout\x007\x00tsize\x000\x00windowsize\x0016\x00");
        let r = request(&p);
        assert_eq!(
            r.options,
            Options {
                blksize: Some(1428),
                timeout: Some(7),
                tsize: Some(0),
                windowsize: Some(16),
            }
        );
        for (opt, ok) in [
            (&b"blksize\x008\x00"[..], true),
            (b"blksize\x0065464\x00", true),
            (b"blksize\x007\x00", false),
            (b"blksize\x0065465\x00", false),
            (b"timeout\x001\x00", true),
            (b"timeout\x00255\x00", true),
            (b"timeout\x000\x00", false),
            (b"timeout\x00256\x00", false),
            (b"windowsize\x001\x00", true),
            (b"windowsize\x0065535\x00", true),
            (b"windowsize\x000\x00", false),
            (b"windowsize\x0065536\x00", false),
            (b"tsize\x0018446744073709551615\x00", true),
            (b"tsize\x0018446744073709551616\x00", false),
            (b"tsize\x00-1\x00", false),
            (b"blksize\x00 512\x00", false),
            (b"blksize\x00\x00", false),
            (b"blksize\x00abc\x00", false),
        ] {
            let p = rrq(opt);
            let r = request(&p);
            assert_eq!(r.bad_options == 0, ok, "{:?}", String::from_utf8_lossy(opt));
            assert_eq!(r.options != Options::default(), ok);
        }
        // Unknown options are neither granted nor bad.
        let p = rrq(b"multicast\x00\x00utimeout\x00500\x00");
        let r = request(&p);
        assert_eq!((r.options, r.bad_options), (Options::default(), 0));
    }

    #[test]
    fn malformed_packets() {
        for (p, want) in [
            (&b""[..], Malformed::Short),
            (b"\x00", Malformed::Short),
            (b"\x00\x01", Malformed::Unterminated),
            (b"\x00\x01name", Malformed::Unterminated),
            (b"\x00\x01name\x00", Malformed::Unterminated),
            (b"\x00\x01name\x00octet", Malformed::Unterminated),
            (b"\x00\x01name\x00bogus\x00", Malformed::Mode),
            (b"\x00\x01\xff\xfe\x00octet\x00", Malformed::NotUtf8),
            (
                b"\x00\x01name\x00octet\x00blksize\x00",
                Malformed::Unterminated,
            ),
            (
                b"\x00\x01name\x00octet\x00blksize\x00512",
                Malformed::Unterminated,
            ),
            (b"\x00\x09name\x00octet\x00", Malformed::Opcode(9)),
            (b"\xff\xffname\x00octet\x00", Malformed::Opcode(0xffff)),
            (b"\x00\x00", Malformed::Opcode(0)),
        ] {
            assert_eq!(decode_request(p), Err(want), "{p:?}");
        }
        for op in DATA..=OACK {
            assert_eq!(
                decode_request(&[0, op as u8, 0, 1]),
                Ok(Incoming::Stray(op))
            );
        }
    }

    #[test]
    fn negotiation_caps_and_answers() {
        let t = Duration::from_secs(3);
        let none = negotiate(&Options::default(), Some(10), MAX_BLKSIZE, 64, t);
        assert_eq!(
            none,
            Granted {
                blksize: 512,
                timeout: t,
                windowsize: 1,
                oack: Oack::default()
            }
        );
        let asked = Options {
            blksize: Some(1428),
            timeout: Some(9),
            tsize: Some(0),
            windowsize: Some(1000),
        };
        let g = negotiate(&asked, Some(1234), 1024, 64, t);
        assert_eq!(g.blksize, 1024);
        assert_eq!(g.windowsize, 64);
        assert_eq!(g.timeout, Duration::from_secs(9));
        assert_eq!(
            g.oack,
            Oack {
                blksize: Some(1024),
                timeout: Some(9),
                tsize: Some(1234),
                windowsize: Some(64),
            }
        );
        // tsize is answered only to tsize 0, and only with a known size.
        let only_tsize = |tsize, size| {
            negotiate(
                &Options {
                    tsize: Some(tsize),
                    ..Options::default()
                },
                size,
                MAX_BLKSIZE,
                64,
                t,
            )
            .oack
        };
        assert_eq!(only_tsize(0, None), Oack::default());
        assert_eq!(only_tsize(5, Some(7)), Oack::default());
        assert_eq!(only_tsize(0, Some(0)).tsize, Some(0));
    }

    #[test]
    fn oack_and_error_encoding() {
        let mut out = Vec::new();
        encode_oack(
            &Oack {
                blksize: Some(1428),
                timeout: None,
                tsize: Some(33554432),
                windowsize: Some(16),
            },
            &mut out,
        );
        assert_eq!(
            out,
            b"\x00\x06blksize\x001428\x00tsize\x0033554432\x00windowsize\x0016\x00"
        );
        assert_eq!(
            encode_error(ERR_ACCESS, "no\0pe"),
            b"\x00\x05\x00\x02nope\x00"
        );
        let mut data = [9u8; 6];
        data_header(&mut data, 0x1234);
        assert_eq!(data, [0, 3, 0x12, 0x34, 9, 9]);
    }

    #[test]
    fn replies() {
        assert_eq!(decode_reply(&[0, 4, 1, 2]), Reply::Ack(0x102));
        assert_eq!(decode_reply(&[0, 4, 0, 7, 0, 0]), Reply::Ack(7));
        assert_eq!(decode_reply(b"\x00\x05\x00\x08no\x00"), Reply::Error(8));
        assert_eq!(decode_reply(&[0, 4, 1]), Reply::Other);
        assert_eq!(decode_reply(&[0, 3, 0, 1, 5]), Reply::Other);
        assert_eq!(decode_reply(&[]), Reply::Other);
    }

    fn netascii(input: &[u8], chunk: usize) -> Vec<u8> {
        let mut r = Netascii::new(input);
        let mut out = Vec::new();
        let mut buf = vec![0; chunk];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn netascii_conversion() {
        let input = b"a\nb\rc\r\n\n";
        let want = b"a\r\nb\r\0c\r\0\r\n\r\n";
        for chunk in [1, 2, 3, 8, 512] {
            assert_eq!(netascii(input, chunk), want, "chunk {chunk}");
        }
        assert_eq!(netascii(b"", 4), b"");
        assert_eq!(netascii(b"plain", 4), b"plain");
        let long: Vec<u8> = (0..200_000u32).map(|i| (i % 11) as u8 + 5).collect();
        let got = netascii(&long, 1428);
        let lf = long.iter().filter(|&&b| b == b'\n' || b == b'\r').count();
        assert_eq!(got.len(), long.len() + lf);
    }
}
