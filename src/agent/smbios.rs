//! SMBIOS (DMI) structure table parsing: the firmware's own description of the
//! system (type 1), the BIOS (type 0) and each memory device (type 17), read
//! from the raw table at `/sys/firmware/dmi/tables/DMI`.
//!
//! Every offset is checked against the structure's length: a short or
//! truncated table yields fewer fields, never a panic.

use crate::protocol::inventory::Dimm;

/// One structure: its type, formatted area and strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Structure<'a> {
    pub kind: u8,
    pub formatted: &'a [u8],
    pub strings: Vec<String>,
}

impl Structure<'_> {
    fn byte(&self, off: usize) -> Option<u8> {
        self.formatted.get(off).copied()
    }
    fn word(&self, off: usize) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte(off)?, self.byte(off + 1)?]))
    }
    fn dword(&self, off: usize) -> Option<u32> {
        Some(u32::from_le_bytes(
            self.formatted.get(off..off + 4)?.try_into().ok()?,
        ))
    }
    /// The string a byte at `off` refers to (1-based; 0 means none).
    fn string(&self, off: usize) -> Option<String> {
        let i = self.byte(off)? as usize;
        let s = self.strings.get(i.checked_sub(1)?)?.trim();
        (!s.is_empty()).then(|| s.to_string())
    }
}

/// Splits a raw table into structures; stops at the end-of-table (type 127) or
/// at the first malformed structure.
pub fn structures(table: &[u8]) -> Vec<Structure<'_>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= table.len() {
        let kind = table[at];
        let len = table[at + 1] as usize;
        if len < 4 || at + len > table.len() {
            break;
        }
        let formatted = &table[at..at + len];
        // Strings: NUL-terminated, the set ends with an extra NUL.
        let mut p = at + len;
        let mut strings = Vec::new();
        loop {
            let Some(end) = table[p.min(table.len())..].iter().position(|&b| b == 0) else {
                return out;
            };
            if end == 0 {
                p += 1;
                if strings.is_empty() {
                    // An empty string set is two NULs.
                    p += 1;
                }
                break;
            }
            strings.push(String::from_utf8_lossy(&table[p..p + end]).into_owned());
            p += end + 1;
        }
        out.push(Structure {
            kind,
            formatted,
            strings,
        });
        if kind == 127 {
            break;
        }
        at = p;
    }
    out
}

/// What types 0 and 1 say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemInfo {
    pub vendor: Option<String>,
    pub product: Option<String>,
    pub serial: Option<String>,
    pub uuid: Option<String>,
    pub bios_vendor: Option<String>,
    pub bios_version: Option<String>,
    pub bios_date: Option<String>,
}

/// Types 0 and 1 of a table.
pub fn system_info(table: &[u8]) -> SystemInfo {
    let mut s = SystemInfo::default();
    for st in structures(table) {
        match st.kind {
            0 => {
                s.bios_vendor = st.string(0x04);
                s.bios_version = st.string(0x05);
                s.bios_date = st.string(0x08);
            }
            1 => {
                s.vendor = st.string(0x04);
                s.product = st.string(0x05);
                s.serial = st.string(0x07);
                s.uuid = st
                    .formatted
                    .get(0x08..0x18)
                    .and_then(|b| uuid_text(b.try_into().ok()?));
            }
            _ => {}
        }
    }
    s
}

/// SMBIOS 2.6+ UUID text (the first three fields are little-endian); None when
/// all bits are 0 or all are 1 (not present / not set).
fn uuid_text(b: [u8; 16]) -> Option<String> {
    if b.iter().all(|&x| x == 0) || b.iter().all(|&x| x == 0xff) {
        return None;
    }
    Some(format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3],
        b[2],
        b[1],
        b[0],
        b[5],
        b[4],
        b[7],
        b[6],
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    ))
}

const MEMORY_TYPES: &[(u8, &str)] = &[
    (0x07, "RAM"),
    (0x0f, "SDRAM"),
    (0x12, "DDR"),
    (0x13, "DDR2"),
    (0x18, "DDR3"),
    (0x1a, "DDR4"),
    (0x1b, "LPDDR"),
    (0x1c, "LPDDR2"),
    (0x1d, "LPDDR3"),
    (0x1e, "LPDDR4"),
    (0x22, "DDR5"),
    (0x23, "LPDDR5"),
];

/// The installed memory devices (type 17) of a table, in table order.
pub fn dimms(table: &[u8]) -> Vec<Dimm> {
    structures(table)
        .iter()
        .filter(|s| s.kind == 17)
        .filter_map(|s| {
            let size = match s.word(0x0c)? {
                0 | 0xffff => return None,
                0x7fff => u64::from(s.dword(0x1c)? & 0x7fff_ffff) << 20,
                v if v & 0x8000 != 0 => u64::from(v & 0x7fff) << 10,
                v => u64::from(v) << 20,
            };
            if size == 0 {
                return None;
            }
            let kind = s.byte(0x12).and_then(|t| {
                MEMORY_TYPES
                    .iter()
                    .find(|(code, _)| *code == t)
                    .map(|(_, n)| n.to_string())
            });
            let speed = s.word(0x15).filter(|&v| v != 0 && v != 0xffff);
            Some(Dimm {
                slot: s.string(0x10).unwrap_or_else(|| "unknown".into()),
                bank: s.string(0x11),
                size_bytes: size,
                kind,
                speed_mts: speed.map(u32::from),
                manufacturer: s.string(0x17).filter(|m| !placeholder(m)),
                serial: s.string(0x18).filter(|m| !placeholder(m)),
                part: s.string(0x1a).filter(|m| !placeholder(m)),
            })
        })
        .collect()
}

/// Values firmware writes where it knows nothing.
pub fn placeholder(s: &str) -> bool {
    let l = s.trim().to_ascii_lowercase();
    l.is_empty()
        || matches!(
            l.as_str(),
            "unknown"
                | "not specified"
                | "to be filled by o.e.m."
                | "default string"
                | "system serial number"
                | "not available"
                | "none"
                | "0"
                | "0123456789"
                | "not settable"
        )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a structure from its formatted area and strings.
    pub(crate) fn raw(kind: u8, body: &[u8], strings: &[&str]) -> Vec<u8> {
        let mut v = vec![kind, (body.len() + 4) as u8, 0, 0];
        v.extend_from_slice(body);
        for s in strings {
            v.extend_from_slice(s.as_bytes());
            v.push(0);
        }
        if strings.is_empty() {
            v.push(0);
        }
        v.push(0);
        v
    }

    #[test]
    fn reads_system_bios_and_dimms() {
        let mut t = raw(
            0,
            &[1, 2, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &["SeaBIOS", "1.16.2", "04/01/2014"],
        );
        let mut sys = vec![1, 2, 0, 3];
        sys.extend_from_slice(&[
            0x78, 0x56, 0x34, 0x12, 0x34, 0x12, 0x78, 0x56, 0x9a, 0xbc, 1, 2, 3, 4, 5, 6,
        ]);
        sys.extend_from_slice(&[6, 0, 0]);
        t.extend(raw(1, &sys, &["QEMU", "Standard PC", "SN-42"]));
        // Type 17: 16 GiB in MB units, DDR4, 2933 MT/s.
        let mut m = vec![0u8; 0x24];
        m[0x0c - 4..0x0e - 4].copy_from_slice(&16384u16.to_le_bytes());
        m[0x10 - 4] = 1;
        m[0x11 - 4] = 2;
        m[0x12 - 4] = 0x1a;
        m[0x15 - 4..0x17 - 4].copy_from_slice(&2933u16.to_le_bytes());
        m[0x17 - 4] = 3;
        m[0x18 - 4] = 4;
        m[0x1a - 4] = 5;
        t.extend(raw(
            17,
            &m,
            &[
                "PROC 1 DIMM 1",
                "BANK 0",
                "Samsung",
                "NO DIMM",
                "M393A2K43CB2",
            ],
        ));
        // An empty slot.
        t.extend(raw(17, &[0u8; 0x24], &[]));
        t.extend(raw(127, &[], &[]));
        let s = system_info(&t);
        assert_eq!(s.vendor.as_deref(), Some("QEMU"));
        assert_eq!(s.serial.as_deref(), Some("SN-42"));
        assert_eq!(
            s.uuid.as_deref(),
            Some("12345678-1234-5678-9abc-010203040506")
        );
        assert_eq!(s.bios_date.as_deref(), Some("04/01/2014"));
        let d = dimms(&t);
        assert_eq!(
            d,
            [Dimm {
                slot: "PROC 1 DIMM 1".into(),
                bank: Some("BANK 0".into()),
                size_bytes: 16 << 30,
                kind: Some("DDR4".into()),
                speed_mts: Some(2933),
                manufacturer: Some("Samsung".into()),
                serial: Some("NO DIMM".into()),
                part: Some("M393A2K43CB2".into()),
            }]
        );
    }

    #[test]
    fn truncated_tables_give_what_they_hold() {
        let t = raw(1, &[1, 2, 0, 3], &["Dell Inc."]);
        for cut in 0..t.len() {
            let _ = system_info(&t[..cut]);
            let _ = dimms(&t[..cut]);
        }
        assert_eq!(system_info(&t).vendor.as_deref(), Some("Dell Inc."));
    }
}
