//! Numbers with units (sizes in B, KiB..., frequencies, speeds), read
//! exactly as fixed-point, and printed back for explanations.

/// A number in billionths, so that decimals and sizes compare exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Num(pub(super) i128);

pub(super) const NUM_SCALE: i128 = 1_000_000_000;
const NUM_DECIMALS: u32 = 9;

/// The kind of size unit a number was written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UnitFamily {
    /// B, KB, MB... (powers of 1000).
    Decimal,
    /// KiB, MiB... (powers of 1024).
    Binary,
}

/// Reads `42`, `-1.5`, `64GiB`, `1.5 TB`. Returns the number and the family
/// of its unit, if it had one. `None` when the text is not such a number or
/// is too large.
pub(super) fn parse_number(text: &str) -> Option<(Num, Option<UnitFamily>)> {
    let s = text.trim();
    let bytes = s.as_bytes();
    let mut i = 0;
    let negative = match bytes.first() {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        Some(b) if b.is_ascii_digit() || *b == b'.' => false,
        _ => return None,
    };
    let mut whole: u64 = 0;
    let mut digits = 0;
    while let Some(&b) = bytes.get(i).filter(|b| b.is_ascii_digit()) {
        whole = whole.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        digits += 1;
        i += 1;
    }
    let mut fraction: u64 = 0;
    if bytes.get(i) == Some(&b'.') {
        i += 1;
        let mut place = 0;
        while let Some(&b) = bytes.get(i).filter(|b| b.is_ascii_digit()) {
            if place < NUM_DECIMALS {
                fraction = fraction * 10 + u64::from(b - b'0');
                place += 1;
            }
            digits += 1;
            i += 1;
        }
        fraction *= 10_u64.pow(NUM_DECIMALS - place);
    }
    if digits == 0 {
        return None;
    }
    let (multiplier, family) = unit(s[i..].trim_start())?;
    // Below 2^64 * 10^9 before the unit: no overflow until multiplied.
    let value = (i128::from(whole) * NUM_SCALE + i128::from(fraction)).checked_mul(multiplier)?;
    Some((Num(if negative { -value } else { value }), family))
}

/// The multiplier of a size unit (any letter case), `None` if unknown.
fn unit(u: &str) -> Option<(i128, Option<UnitFamily>)> {
    if u.is_empty() {
        return Some((1, None));
    }
    if u.eq_ignore_ascii_case("b") {
        return Some((1, Some(UnitFamily::Decimal)));
    }
    let (prefix, family, base) = match u.as_bytes() {
        [p, rest @ ..] if rest.eq_ignore_ascii_case(b"ib") => (p, UnitFamily::Binary, 1024_i128),
        [p, rest @ ..] if rest.eq_ignore_ascii_case(b"b") => (p, UnitFamily::Decimal, 1000_i128),
        _ => return None,
    };
    let power = match prefix.to_ascii_lowercase() {
        b'k' => 1,
        b'm' => 2,
        b'g' => 3,
        b't' => 4,
        b'p' => 5,
        _ => return None,
    };
    Some((base.pow(power), Some(family)))
}

/// `34359738368` → `32 GiB` (or `34.36 GB` for the decimal family).
pub(super) fn human_size(n: Num, family: UnitFamily) -> String {
    let (base, units) = match family {
        UnitFamily::Binary => (1024.0, ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]),
        UnitFamily::Decimal => (1000.0, ["B", "KB", "MB", "GB", "TB", "PB"]),
    };
    let mut v = n.0 as f64 / NUM_SCALE as f64;
    let mut u = 0;
    while v.abs() >= base && u + 1 < units.len() {
        v /= base;
        u += 1;
    }
    let text = format!("{v:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text} {}", units[u])
}
