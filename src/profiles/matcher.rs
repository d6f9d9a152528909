//! Hardware matching: does a node's hardware fit a profile, and which values
//! does the profile capture from it?
//!
//! # Facts
//!
//! A node's inventory is a list of facts. Each fact is four texts,
//! `[class, type, key, value]`:
//!
//! ```text
//! ["memory",  "bank:0:0", "size",   "17179869184"]
//! ["network", "eth0",     "ipv4",   "10.29.99.30"]
//! ["system",  "product",  "vendor", "HP"]
//! ```
//!
//! # Specs
//!
//! A profile describes the hardware it wants as a list of specs written in
//! the same four-field shape. A node matches the profile when **every** spec
//! is satisfied by a fact of its own: one fact never satisfies two specs, so
//! `["disk", "$d1", "type", "SSD"]` plus `["disk", "$d2", "type", "SSD"]`
//! asks for two SSDs. Facts that no spec asks about are ignored.
//!
//! Each field of a spec is one of:
//!
//! | field | matches |
//! |---|---|
//! | `HP` | exactly the text `HP` (case matters) |
//! | `$name` | any text, and captures it as `name`. If `name` is already captured, by this spec or another one, the text must be equal to the captured one. |
//! | `$$name` | like `$name`, and also marks `name` as a CMDB key: the node is given the CMDB entry holding the same value (its MAC address, serial number...) |
//! | `ge(64GiB)` | a test: one of the functions below |
//! | `$name=ge(64GiB)` | the test, and captures the text like `$name` |
//!
//! Variable names are made of ASCII letters, digits and `_`; `$x` and `$$x`
//! name the same variable. Variables work in any field, the key included:
//! `["cpu", "physical_0", "$k", "8"]` captures the name of a key whose value
//! is 8.
//!
//! ## Functions
//!
//! | function | the field's text must be |
//! |---|---|
//! | `gt(n)`, `ge(n)`, `lt(n)`, `le(n)` | a number greater than, at least, less than, at most `n` |
//! | `range(a,b)` | a number from `a` to `b`, both included |
//! | `in(a,b,...)` | equal to one of the arguments (text comparison) |
//! | `regexp(re)` | a text in which the regular expression `re` finds a match anywhere (use `^` and `$` to anchor it) |
//! | `regexp(re,i)` | the same, ignoring upper/lower case |
//! | `network(cidr)` | an IPv4 or IPv6 address inside the network: `network(10.0.0.0/8)`, `network(2001:db8::/32)` |
//! | `not(t)` | anything the test `t` refuses |
//! | `and(t1,t2,...)` | accepted by every test |
//! | `or(t1,t2,...)` | accepted by at least one test |
//!
//! Functions nest, up to 32 deep: `and(range(30,50),not(40))`. Inside `not`,
//! `and` and `or`, an argument that is not a function is a plain text that
//! must be equal: `or(SAS,SATA)`, `not(in(UNKNOWN,'NOT AVAILABLE'))`.
//!
//! Regular expressions use the syntax of Rust's `regex` crate (no
//! look-around, no back-references). An address may carry a prefix length
//! or an IPv6 zone (`10.0.0.5/24`, `fe80::1%eth0`); only the address is
//! tested. An IPv4-mapped IPv6 address (`::ffff:10.0.0.5`) belongs to the
//! IPv4 networks.
//!
//! ## Numbers and sizes
//!
//! Numbers are written as `42`, `-3`, `1.5` and may carry a size unit:
//! `B`; `KB`, `MB`, `GB`, `TB`, `PB` (powers of 1000); `KiB`, `MiB`, `GiB`,
//! `TiB`, `PiB` (powers of 1024). Unit letters may be in any case (`64gib`)
//! and may follow a space. So `ge(64GiB)` accepts `68719476736`, `64GiB`,
//! `64 GiB` and `68.8GB`. A number without unit is taken as it is: memory
//! sizes are reported in bytes, but disk sizes in GB (`["disk", "sda",
//! "size", "300"]`), so compare disks with plain numbers such as `ge(200)`.
//!
//! A text that is not a number (`SAS`, `40GB/s`, `0x10`, `1e9`) fails every
//! numeric test without stopping the match; note that `not(gt(10))` accepts
//! it. Numbers are exact to 9 decimal places (further decimals are dropped);
//! one whose integer part reaches 2^64, or that overflows once its unit is
//! applied, is not a number.
//!
//! ## Arguments and quoting
//!
//! Arguments are separated by commas; spaces around them are ignored. An
//! argument may be put between single or double quotes, and must be when it
//! contains a comma, a parenthesis that is not balanced, a leading or trailing
//! space, or starts with a quote: `regexp('^a,b$')`, `in("NOT AVAILABLE ")`.
//! Inside quotes, write the quote character twice to get it once:
//! `in('O''Brien')`. Backslashes are never special to the quoting, so regular
//! expressions keep theirs: `regexp('^\d+ GB$')`. Balanced parentheses need no
//! quotes: `regexp(^(sda|sdb)$)`.
//!
//! ## What is a literal
//!
//! A field is a function only when it starts with a function name directly
//! followed by `(`; it is a variable only when it starts with `$`. Everything
//! else is a literal text, such as `Intel(R) Xeon(R) CPU E5-2650 0 @ 2.00GHz`.
//! A field shaped like a call, `name(...)`, with an unknown name is refused
//! rather than taken as a literal, so that a misspelt function never
//! silently compares text. To match such a text literally, or one starting
//! with `$`, use `in`: `in('Foo(1)')`, `in('$HOME')`.
//!
//! Hardware values are data, never patterns: a fact whose value is `gt(1)` or
//! `$x` is just that text.
//!
//! # How a match is searched
//!
//! Specs are tried from the most constrained (fewest candidate facts) to the
//! least; each spec tries its candidate facts in inventory order, and a
//! spec whose fields are all literal consumes a fact equal to it. When a
//! later spec fails, earlier choices are revisited (backtracking), so the
//! result never depends on a lucky first choice. Specs that share no
//! variable and no candidate fact are solved separately, and specs that
//! differ only by the names of variables used nowhere else (say, eight
//! `["memory", "$bN", "size", "ge(16GiB)"]` specs) are interchangeable and
//! are not tried in every order.
//!
//! The search counts its steps (one step is one fact tried for one spec).
//! Past a limit ([`DEFAULT_STEP_LIMIT`] unless told otherwise) it stops with
//! [`MatchError::SearchLimit`] instead of running for hours on a profile
//! whose specs are too ambiguous.
//!
//! # When a node does not match
//!
//! [`explain`] names the first spec, in the order written, that no fact
//! satisfies on its own, with the facts closest to it (those passing the
//! most of its fields), sizes shown in the unit family of the test:
//!
//! ```text
//! no fact satisfies ('memory','total','size','ge(64GiB)'); memory total size is 32 GiB
//! ```
//!
//! When every spec has facts of its own but they cannot all be satisfied
//! together, it names the first spec that fails once the specs before it are
//! matched, and says why each of its facts was refused:
//!
//! ```text
//! no fact satisfies ('disk','$d2','size','$s') once specs 1 to 2 are matched (with $s='300');
//! facts that satisfy it alone: disk sda size is 300 (taken by spec 2); disk sdb size is 299 ($s is '300')
//! ```
//!
//! # Example
//!
//! ```
//! use racklift::profiles::matcher::{DEFAULT_STEP_LIMIT, Facts, SpecSet, explain, matches};
//! use racklift::protocol::Fact;
//!
//! let facts = Facts::new(vec![
//!     Fact::new("memory", "total", "size", "34359738368"),
//!     Fact::new("network", "eth0", "serial", "52:54:00:12:34:56"),
//!     Fact::new("network", "eth0", "ipv4", "10.0.2.15"),
//! ]);
//! let specs = SpecSet::parse(&[
//!     ["memory", "total", "size", "ge(32GiB)"],
//!     ["network", "$eth", "ipv4", "network(10.0.0.0/8)"],
//!     ["network", "$eth", "serial", "$$mac"],
//! ])?;
//! let found = matches(&specs, &facts, DEFAULT_STEP_LIMIT)?.expect("a match");
//! assert_eq!(found.bindings["mac"], "52:54:00:12:34:56");
//! assert!(found.cmdb_keys.contains("mac"));
//!
//! let bigger = SpecSet::parse(&[["memory", "total", "size", "ge(64GiB)"]])?;
//! let why = explain(&bigger, &facts, DEFAULT_STEP_LIMIT)?.expect("no match");
//! assert_eq!(
//!     why.to_string(),
//!     "no fact satisfies ('memory','total','size','ge(64GiB)'); memory total size is 32 GiB"
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;

use crate::protocol::Fact;
use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

/// Search steps allowed by default before a match gives up with
/// [`MatchError::SearchLimit`].
pub const DEFAULT_STEP_LIMIT: usize = 100_000;

/// Names of the four fields of a fact or a spec, in order.
pub const FIELD_NAMES: [&str; 4] = ["class", "type", "key", "value"];

const FUNCTION_NAMES: [&str; 11] = [
    "gt", "ge", "lt", "le", "range", "in", "regexp", "network", "not", "and", "or",
];

/// How many closest facts an explanation shows.
const SHOWN_FACTS: usize = 3;

/// Largest compiled size of one regular expression in a spec.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Deepest nesting of functions in a spec field.
const MAX_NESTING: usize = 32;

// ---------------------------------------------------------------------------
// Facts
// ---------------------------------------------------------------------------

/// A node's inventory, indexed for matching. Build it once per inventory and
/// match it against any number of profiles.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    facts: Vec<Fact>,
    /// The value of each fact read as a number, when it is one.
    numbers: Vec<Option<Num>>,
    /// One entry per fact, `class hash << 96 | key hash << 64 | position`,
    /// sorted: facts grouped by class and key, in inventory order.
    index: Vec<u128>,
}

fn index_entry(class: u32, key: u32, fact: u64) -> u128 {
    (u128::from(class) << 96) | (u128::from(key) << 64) | u128::from(fact)
}

/// The fact position in an index entry.
fn entry_fact(entry: u128) -> usize {
    (entry as u64) as usize
}

impl Facts {
    pub fn new(facts: Vec<Fact>) -> Self {
        let numbers = facts
            .iter()
            .map(|f| parse_number(&f.value).map(|(n, _)| n))
            .collect();
        let mut index: Vec<u128> = (0u64..)
            .zip(&facts)
            .map(|(i, f)| index_entry(text_hash(&f.class), text_hash(&f.key), i))
            .collect();
        index.sort_unstable();
        Facts {
            facts,
            numbers,
            index,
        }
    }

    /// The facts, in inventory order. Fact indices in [`Match`] and
    /// [`Explanation`] point into this slice.
    pub fn as_slice(&self) -> &[Fact] {
        &self.facts
    }

    pub fn len(&self) -> usize {
        self.facts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.facts.is_empty()
    }

    /// Index entries whose class hashes to `class` (in key-hash order).
    fn with_class(&self, class: u32) -> &[u128] {
        let lo = self
            .index
            .partition_point(|&e| e < index_entry(class, 0, 0));
        let hi = self.index.partition_point(|&e| (e >> 96) as u32 <= class);
        &self.index[lo..hi]
    }

    /// Index entries whose class and key hash to `class` and `key` (in
    /// inventory order).
    fn with_class_key(&self, class: u32, key: u32) -> &[u128] {
        let lo = self
            .index
            .partition_point(|&e| e < index_entry(class, key, 0));
        let hi = self
            .index
            .partition_point(|&e| e >> 64 <= index_entry(class, key, 0) >> 64);
        &self.index[lo..hi]
    }

    /// The number in field `field` of fact `fact`, if it holds one.
    fn number(&self, fact: usize, field: usize) -> Option<Num> {
        if field == 3 {
            self.numbers.get(fact).copied().flatten()
        } else {
            parse_number(self.facts[fact].field(field)).map(|(n, _)| n)
        }
    }
}

impl From<Vec<Fact>> for Facts {
    fn from(facts: Vec<Fact>) -> Self {
        Facts::new(facts)
    }
}

/// A quick, deterministic hash used to group facts by class and key. It
/// reads the length and the first and last 8 bytes only: texts that differ
/// elsewhere merely share a group. Matching always compares the texts.
fn text_hash(s: &str) -> u32 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let bytes = s.as_bytes();
    let word = |part: &[u8]| {
        let mut w = [0u8; 8];
        w[..part.len()].copy_from_slice(part);
        u64::from_le_bytes(w)
    };
    let (first, last) = match bytes.len() {
        0..8 => (word(bytes), 0),
        n => (word(&bytes[..8]), word(&bytes[n - 8..])),
    };
    let h = ((bytes.len() as u64).wrapping_mul(K) ^ first).wrapping_mul(K);
    let h = (h.rotate_left(29) ^ last).wrapping_mul(K);
    (h >> 32) as u32
}

// ---------------------------------------------------------------------------
// Numbers and sizes
// ---------------------------------------------------------------------------

/// A number in billionths, so that decimals and sizes compare exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Num(i128);

const NUM_SCALE: i128 = 1_000_000_000;
const NUM_DECIMALS: u32 = 9;

/// The kind of size unit a number was written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UnitFamily {
    /// B, KB, MB... (powers of 1000).
    Decimal,
    /// KiB, MiB... (powers of 1024).
    Binary,
}

/// Reads `42`, `-1.5`, `64GiB`, `1.5 TB`. Returns the number and the family
/// of its unit, if it had one. `None` when the text is not such a number or
/// is too large.
fn parse_number(text: &str) -> Option<(Num, Option<UnitFamily>)> {
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
fn human_size(n: Num, family: UnitFamily) -> String {
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

// ---------------------------------------------------------------------------
// Networks
// ---------------------------------------------------------------------------

/// An IPv4 or IPv6 network, host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Network {
    V4 { addr: u32, prefix: u32 },
    V6 { addr: u128, prefix: u32 },
}

impl Network {
    /// `10.0.0.0/8`, `2001:db8::/32`; a bare address is a single host. Host
    /// bits after the prefix are allowed and ignored.
    fn parse(text: &str) -> Option<Network> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a.trim(), Some(p.trim())),
            None => (text.trim(), None),
        };
        let prefix_len = |max: u32| match prefix {
            None => Some(max),
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u32>().ok().filter(|&p| p <= max)
            }
            Some(_) => None,
        };
        match addr.parse::<IpAddr>().ok()? {
            IpAddr::V4(a) => {
                let prefix = prefix_len(32)?;
                Some(Network::V4 {
                    addr: u32::from(a) & mask_v4(prefix),
                    prefix,
                })
            }
            IpAddr::V6(a) => {
                let prefix = prefix_len(128)?;
                Some(Network::V6 {
                    addr: u128::from(a) & mask_v6(prefix),
                    prefix,
                })
            }
        }
    }

    /// Whether the text holds an address inside this network.
    fn contains(&self, text: &str) -> bool {
        let Some(ip) = parse_address(text) else {
            return false;
        };
        match (*self, ip) {
            (Network::V4 { addr, prefix }, IpAddr::V4(a)) => u32::from(a) & mask_v4(prefix) == addr,
            (Network::V4 { addr, prefix }, IpAddr::V6(a)) => a
                .to_ipv4_mapped()
                .is_some_and(|a| u32::from(a) & mask_v4(prefix) == addr),
            (Network::V6 { addr, prefix }, IpAddr::V6(a)) => {
                u128::from(a) & mask_v6(prefix) == addr
            }
            (Network::V6 { .. }, IpAddr::V4(_)) => false,
        }
    }
}

fn mask_v4(prefix: u32) -> u32 {
    u32::MAX.checked_shl(32 - prefix).unwrap_or(0)
}

fn mask_v6(prefix: u32) -> u128 {
    u128::MAX.checked_shl(128 - prefix).unwrap_or(0)
}

/// An address as hardware reports it: `10.0.0.5`, `10.0.0.5/24`,
/// `fe80::1%eth0`, `[2001:db8::1]`.
fn parse_address(text: &str) -> Option<IpAddr> {
    let t = text.trim();
    let t = t.split('/').next().unwrap_or(t);
    let t = t.split('%').next().unwrap_or(t);
    let t = t
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(t);
    t.parse().ok()
}

// ---------------------------------------------------------------------------
// Compiled specs
// ---------------------------------------------------------------------------

/// A test on one field, as compiled from a function.
#[derive(Debug, Clone)]
enum Expr {
    Equal(String),
    Compare(Comparison, Num, Option<UnitFamily>),
    Range(Num, Num, Option<UnitFamily>),
    In(Vec<String>),
    Regexp(Regex),
    Network(Network),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comparison {
    Gt,
    Ge,
    Lt,
    Le,
}

impl Expr {
    /// `num` is the field read as a number, when the test needs one and the
    /// field holds one.
    fn eval(&self, text: &str, num: Option<Num>) -> bool {
        match self {
            Expr::Equal(s) => text == s,
            Expr::Compare(op, n, _) => num.is_some_and(|v| match op {
                Comparison::Gt => v > *n,
                Comparison::Ge => v >= *n,
                Comparison::Lt => v < *n,
                Comparison::Le => v <= *n,
            }),
            Expr::Range(lo, hi, _) => num.is_some_and(|v| *lo <= v && v <= *hi),
            Expr::In(list) => list.iter().any(|s| s == text),
            Expr::Regexp(re) => re.is_match(text),
            Expr::Network(net) => net.contains(text),
            Expr::Not(e) => !e.eval(text, num),
            Expr::And(es) => es.iter().all(|e| e.eval(text, num)),
            Expr::Or(es) => es.iter().any(|e| e.eval(text, num)),
        }
    }

    fn is_numeric(&self) -> bool {
        match self {
            Expr::Compare(..) | Expr::Range(..) => true,
            Expr::Not(e) => e.is_numeric(),
            Expr::And(es) | Expr::Or(es) => es.iter().any(Expr::is_numeric),
            _ => false,
        }
    }

    /// The unit family of the first size written in the test.
    fn size_family(&self) -> Option<UnitFamily> {
        match self {
            Expr::Compare(_, _, f) | Expr::Range(_, _, f) => *f,
            Expr::Not(e) => e.size_family(),
            Expr::And(es) | Expr::Or(es) => es.iter().find_map(Expr::size_family),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
struct Test {
    expr: Expr,
    numeric: bool,
    size: Option<UnitFamily>,
}

impl Test {
    fn new(expr: Expr) -> Self {
        Test {
            numeric: expr.is_numeric(),
            size: expr.size_family(),
            expr,
        }
    }
}

#[derive(Debug, Clone)]
enum Pattern {
    Literal(String),
    Var { id: usize, test: Option<Test> },
    Test(Test),
}

impl Pattern {
    fn test(&self) -> Option<&Test> {
        match self {
            Pattern::Test(t) | Pattern::Var { test: Some(t), .. } => Some(t),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
struct Spec {
    fields: [Pattern; 4],
    class_hash: Option<u32>,
    key_hash: Option<u32>,
    /// Specs with the same group are interchangeable: equal up to the names
    /// of variables that no other spec uses.
    group: usize,
}

impl Spec {
    /// Whether field `i` of fact `f` passes this spec's literal or test for
    /// that field, variables aside. A plain variable accepts anything.
    fn field_accepts(&self, facts: &Facts, f: usize, i: usize) -> bool {
        let text = facts.facts[f].field(i);
        match &self.fields[i] {
            Pattern::Literal(s) => text == s,
            Pattern::Var { test: None, .. } => true,
            Pattern::Test(t) | Pattern::Var { test: Some(t), .. } => {
                let num = if t.numeric { facts.number(f, i) } else { None };
                t.expr.eval(text, num)
            }
        }
    }

    /// Whether fact `f` satisfies this spec on its own, variables aside.
    fn accepts(&self, facts: &Facts, f: usize) -> bool {
        let fact = &facts.facts[f];
        let literals_ok = self.fields.iter().enumerate().all(|(i, p)| match p {
            Pattern::Literal(s) => fact.field(i) == s,
            _ => true,
        });
        literals_ok
            && (0..4).all(|i| {
                matches!(self.fields[i], Pattern::Literal(_)) || self.field_accepts(facts, f, i)
            })
    }

    /// Appends to `out` the facts that satisfy this spec on its own, in
    /// inventory order.
    fn collect_candidates(&self, facts: &Facts, out: &mut Vec<usize>) {
        match (self.class_hash, self.key_hash) {
            (Some(class), Some(key)) => out.extend(
                facts
                    .with_class_key(class, key)
                    .iter()
                    .map(|&e| entry_fact(e))
                    .filter(|&f| self.accepts(facts, f)),
            ),
            (Some(class), None) => {
                let start = out.len();
                out.extend(
                    facts
                        .with_class(class)
                        .iter()
                        .map(|&e| entry_fact(e))
                        .filter(|&f| self.accepts(facts, f)),
                );
                out[start..].sort_unstable();
            }
            _ => out.extend((0..facts.len()).filter(|&f| self.accepts(facts, f))),
        }
    }
}

/// The compiled specs of one profile. Parse once, match against any number
/// of inventories.
#[derive(Debug, Clone)]
pub struct SpecSet {
    source: Vec<[String; 4]>,
    specs: Vec<Spec>,
    /// Variable names, by id, in order of first appearance.
    vars: Vec<String>,
    cmdb_keys: BTreeSet<String>,
}

impl SpecSet {
    /// Compiles specs: parses every field, compiles regular expressions and
    /// networks, and checks function names and arguments.
    pub fn parse<S: AsRef<str>>(specs: &[[S; 4]]) -> Result<Self, SpecError> {
        let mut vars: Vec<String> = Vec::new();
        let mut cmdb_keys = BTreeSet::new();
        let mut compiled = Vec::with_capacity(specs.len());
        let mut source = Vec::with_capacity(specs.len());
        for (si, spec) in specs.iter().enumerate() {
            let mut field = |fi: usize| -> Result<Pattern, SpecError> {
                let text = spec[fi].as_ref();
                let parsed = parse_field(text).map_err(|(pos, kind)| SpecError {
                    spec: si,
                    field: fi,
                    column: text[..pos.min(text.len())].chars().count() + 1,
                    text: text.to_owned(),
                    kind,
                })?;
                Ok(match parsed {
                    Parsed::Literal => Pattern::Literal(text.to_owned()),
                    Parsed::Test(e) => Pattern::Test(Test::new(e)),
                    Parsed::Var { name, cmdb, test } => {
                        let id = match vars.iter().position(|v| v == name) {
                            Some(id) => id,
                            None => {
                                vars.push(name.to_owned());
                                vars.len() - 1
                            }
                        };
                        if cmdb {
                            cmdb_keys.insert(name.to_owned());
                        }
                        Pattern::Var {
                            id,
                            test: test.map(Test::new),
                        }
                    }
                })
            };
            let fields = [field(0)?, field(1)?, field(2)?, field(3)?];
            let hash_of = |p: &Pattern| match p {
                Pattern::Literal(s) => Some(text_hash(s)),
                _ => None,
            };
            compiled.push(Spec {
                class_hash: hash_of(&fields[0]),
                key_hash: hash_of(&fields[2]),
                fields,
                group: 0,
            });
            source.push([0, 1, 2, 3].map(|i| spec[i].as_ref().to_owned()));
        }
        assign_groups(&mut compiled, &source, vars.len());
        Ok(SpecSet {
            source,
            specs: compiled,
            vars,
            cmdb_keys,
        })
    }

    /// Number of specs.
    pub fn len(&self) -> usize {
        self.specs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// The specs as written.
    pub fn source(&self) -> &[[String; 4]] {
        &self.source
    }

    /// Names of all variables, in order of first appearance.
    pub fn variables(&self) -> &[String] {
        &self.vars
    }

    /// Names of the variables written at least once as `$$name`.
    pub fn cmdb_keys(&self) -> &BTreeSet<String> {
        &self.cmdb_keys
    }
}

/// Puts interchangeable specs in the same group: specs equal field by field
/// once the variables that appear in no other spec are renamed by order of
/// appearance. Any solution can swap the facts of two such specs, so the
/// search only tries their facts in increasing order.
fn assign_groups(specs: &mut [Spec], source: &[[String; 4]], var_count: usize) {
    let mut spec_count = vec![0usize; var_count];
    for spec in specs.iter() {
        let mut seen: Vec<usize> = Vec::new();
        for p in &spec.fields {
            if let Pattern::Var { id, .. } = p
                && !seen.contains(id)
            {
                seen.push(*id);
                spec_count[*id] += 1;
            }
        }
    }
    let mut groups: HashMap<String, usize> = HashMap::new();
    for (si, spec) in specs.iter_mut().enumerate() {
        let mut key = String::new();
        let mut private: Vec<usize> = Vec::new();
        for (fi, p) in spec.fields.iter().enumerate() {
            let text = &source[si][fi];
            let piece = match p {
                Pattern::Literal(_) => format!("L{text}"),
                Pattern::Test(_) => format!("T{text}"),
                Pattern::Var { id, test } => {
                    let name = if spec_count[*id] > 1 {
                        format!("V{id}")
                    } else {
                        let n = private.iter().position(|v| v == id).unwrap_or_else(|| {
                            private.push(*id);
                            private.len() - 1
                        });
                        format!("P{n}")
                    };
                    match (test, text.split_once('=')) {
                        (Some(_), Some((_, t))) => format!("{name}={t}"),
                        _ => name,
                    }
                }
            };
            key.push_str(&format!("{}:{piece}", piece.len()));
        }
        let next = groups.len();
        spec.group = *groups.entry(key).or_insert(next);
    }
}

// ---------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------

/// A spec that could not be compiled: which spec, which field, where, why.
///
/// `spec` and `field` count from 0; the message counts specs from 1, and
/// `column` (a character position) counts from 1 as editors do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "spec {} field \"{}\": {kind} at column {column} in {text:?}",
    .spec + 1,
    FIELD_NAMES[*.field % 4]
)]
pub struct SpecError {
    pub spec: usize,
    pub field: usize,
    pub column: usize,
    pub text: String,
    pub kind: SpecErrorKind,
}

/// What is wrong in a spec field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecErrorKind {
    #[error("unclosed '('")]
    UnclosedParen,
    #[error("unclosed quote")]
    UnclosedQuote,
    #[error("unexpected {0:?}")]
    Unexpected(char),
    #[error("empty argument")]
    EmptyArgument,
    #[error(
        "unknown function '{0}' (known: gt, ge, lt, le, range, in, regexp, network, not, and, or)"
    )]
    UnknownFunction(String),
    #[error("{function}() takes {expected} but got {found}")]
    Arity {
        function: String,
        expected: &'static str,
        found: usize,
    },
    #[error("bad number '{0}' (expected e.g. 42, 1.5, 64GiB, 100GB)")]
    BadNumber(String),
    #[error("range lower bound is greater than its upper bound")]
    BadRange,
    #[error("bad regular expression: {0}")]
    BadRegex(String),
    #[error("unknown regexp flag '{0}' (the only flag is i, to ignore case)")]
    BadRegexFlag(String),
    #[error("bad network '{0}' (expected e.g. 10.0.0.0/8 or 2001:db8::/32)")]
    BadNetwork(String),
    #[error("expected a variable name (letters, digits, _) after '$'")]
    BadVariable,
    #[error("expected a function after '='")]
    ExpectedFunction,
    #[error("functions nested more than {MAX_NESTING} deep")]
    TooDeep,
}

/// A parse failure: byte position in the field, and what is wrong.
type ParseResult<T> = Result<T, (usize, SpecErrorKind)>;

enum Parsed<'a> {
    Literal,
    Var {
        name: &'a str,
        cmdb: bool,
        test: Option<Expr>,
    },
    Test(Expr),
}

fn parse_field(text: &str) -> ParseResult<Parsed<'_>> {
    let mut p = Parser {
        text,
        pos: 0,
        depth: 0,
    };
    if p.eat('$') {
        let cmdb = p.eat('$');
        let len = p.word_len();
        if len == 0 {
            return Err((p.pos, SpecErrorKind::BadVariable));
        }
        let name = &text[p.pos..p.pos + len];
        p.pos += len;
        let test = if p.eat('=') {
            if !p.at_call() {
                return Err((p.pos, SpecErrorKind::ExpectedFunction));
            }
            Some(p.call()?)
        } else {
            None
        };
        p.end()?;
        return Ok(Parsed::Var { name, cmdb, test });
    }
    if p.at_call() {
        let name = &text[..p.word_len()];
        if FUNCTION_NAMES.contains(&name) || text.trim_end().ends_with(')') {
            let expr = p.call()?;
            p.end()?;
            return Ok(Parsed::Test(expr));
        }
    }
    Ok(Parsed::Literal)
}

/// Recursive-descent parser over one field. Positions are byte offsets; the
/// syntax characters are all ASCII, so they never split a UTF-8 character.
struct Parser<'a> {
    text: &'a str,
    pos: usize,
    /// Functions open around the cursor.
    depth: usize,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn skip_spaces(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start().len();
    }

    /// Fails unless only spaces are left.
    fn end(&mut self) -> ParseResult<()> {
        self.skip_spaces();
        match self.peek() {
            None => Ok(()),
            Some(c) => Err((self.pos, SpecErrorKind::Unexpected(c))),
        }
    }

    /// Length of the run of ASCII letters, digits and `_` at the cursor.
    fn word_len(&self) -> usize {
        self.rest()
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count()
    }

    /// Whether a name directly followed by `(` starts at the cursor.
    fn at_call(&self) -> bool {
        let len = self.word_len();
        let rest = self.rest();
        len > 0 && !rest.as_bytes()[0].is_ascii_digit() && rest[len..].starts_with('(')
    }

    /// `name(args)`, the cursor on the name.
    fn call(&mut self) -> ParseResult<Expr> {
        if self.depth >= MAX_NESTING {
            return Err((self.pos, SpecErrorKind::TooDeep));
        }
        self.depth += 1;
        let expr = self.call_inner();
        self.depth -= 1;
        expr
    }

    fn call_inner(&mut self) -> ParseResult<Expr> {
        let text: &'a str = self.text;
        let start = self.pos;
        let len = self.word_len();
        let name = &text[start..start + len];
        if !FUNCTION_NAMES.contains(&name) {
            return Err((start, SpecErrorKind::UnknownFunction(name.to_owned())));
        }
        self.pos += len;
        let open = self.pos;
        self.pos += 1;
        let arity = |expected: &'static str, found: usize| {
            (
                start,
                SpecErrorKind::Arity {
                    function: name.to_owned(),
                    expected,
                    found,
                },
            )
        };
        match name {
            "not" | "and" | "or" => {
                let mut args = self.args(open, Self::expr_arg)?;
                match (name, args.len()) {
                    ("not", 1) => Ok(Expr::Not(Box::new(args.remove(0)))),
                    ("not", n) => Err(arity("1 argument", n)),
                    (_, n) if n < 2 => Err(arity("at least 2 arguments", n)),
                    ("and", _) => Ok(Expr::And(args)),
                    _ => Ok(Expr::Or(args)),
                }
            }
            "gt" | "ge" | "lt" | "le" => {
                let args = self.args(open, Self::text_arg)?;
                let [arg] = args.as_slice() else {
                    return Err(arity("1 argument", args.len()));
                };
                let (n, family) = number_arg(arg)?;
                let op = match name {
                    "gt" => Comparison::Gt,
                    "ge" => Comparison::Ge,
                    "lt" => Comparison::Lt,
                    _ => Comparison::Le,
                };
                Ok(Expr::Compare(op, n, family))
            }
            "range" => {
                let args = self.args(open, Self::text_arg)?;
                let [lo, hi] = args.as_slice() else {
                    return Err(arity("2 arguments", args.len()));
                };
                let (lo, lo_family) = number_arg(lo)?;
                let (hi, hi_family) = number_arg(hi)?;
                if lo > hi {
                    return Err((start, SpecErrorKind::BadRange));
                }
                Ok(Expr::Range(lo, hi, lo_family.or(hi_family)))
            }
            "in" => {
                let args = self.args(open, Self::text_arg)?;
                if args.is_empty() {
                    return Err(arity("at least 1 argument", 0));
                }
                Ok(Expr::In(args.into_iter().map(|(s, _)| s).collect()))
            }
            "regexp" => {
                let args = self.args(open, Self::text_arg)?;
                let (pattern, ignore_case) = match args.as_slice() {
                    [pattern] => (pattern, false),
                    [pattern, (flag, _)] if flag == "i" => (pattern, true),
                    [_, (flag, at)] => {
                        return Err((*at, SpecErrorKind::BadRegexFlag(flag.clone())));
                    }
                    _ => return Err(arity("1 or 2 arguments", args.len())),
                };
                RegexBuilder::new(&pattern.0)
                    .case_insensitive(ignore_case)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map(Expr::Regexp)
                    .map_err(|e| (pattern.1, SpecErrorKind::BadRegex(regex_error(&e))))
            }
            "network" => {
                let args = self.args(open, Self::text_arg)?;
                let [(cidr, at)] = args.as_slice() else {
                    return Err(arity("1 argument", args.len()));
                };
                Network::parse(cidr)
                    .map(Expr::Network)
                    .ok_or((*at, SpecErrorKind::BadNetwork(cidr.clone())))
            }
            _ => Err((start, SpecErrorKind::UnknownFunction(name.to_owned()))),
        }
    }

    /// Comma-separated arguments up to the `)` closing the `(` at `open`.
    fn args<T>(
        &mut self,
        open: usize,
        mut arg: impl FnMut(&mut Self) -> ParseResult<T>,
    ) -> ParseResult<Vec<T>> {
        let mut out = Vec::new();
        self.skip_spaces();
        if self.eat(')') {
            return Ok(out);
        }
        loop {
            self.skip_spaces();
            if self.peek().is_none() {
                return Err((open, SpecErrorKind::UnclosedParen));
            }
            out.push(arg(self)?);
            self.skip_spaces();
            let at = self.pos;
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(')') => {
                    self.pos += 1;
                    return Ok(out);
                }
                None => return Err((open, SpecErrorKind::UnclosedParen)),
                Some(c) => return Err((at, SpecErrorKind::Unexpected(c))),
            }
        }
    }

    /// An argument of `not`, `and`, `or`: a function, or a text to equal.
    fn expr_arg(&mut self) -> ParseResult<Expr> {
        if self.at_call() {
            self.call()
        } else {
            self.text_arg().map(|(s, _)| Expr::Equal(s))
        }
    }

    /// A quoted or bare text argument, with its position.
    fn text_arg(&mut self) -> ParseResult<(String, usize)> {
        let start = self.pos;
        if let Some(quote @ ('\'' | '"')) = self.peek() {
            self.pos += 1;
            let mut out = String::new();
            loop {
                let Some(c) = self.peek() else {
                    return Err((start, SpecErrorKind::UnclosedQuote));
                };
                self.pos += c.len_utf8();
                if c != quote {
                    out.push(c);
                } else if self.eat(quote) {
                    out.push(quote);
                } else {
                    return Ok((out, start));
                }
            }
        }
        let rest = self.rest();
        let mut end = rest.len();
        let mut depth = 0usize;
        for (i, b) in rest.bytes().enumerate() {
            match b {
                b'(' => depth += 1,
                b')' | b',' if depth == 0 => {
                    end = i;
                    break;
                }
                b')' => depth -= 1,
                _ => {}
            }
        }
        self.pos += end;
        self.bare(start)
    }

    fn bare(&self, start: usize) -> ParseResult<(String, usize)> {
        let text = self.text[start..self.pos].trim_end();
        if text.is_empty() {
            return Err((start, SpecErrorKind::EmptyArgument));
        }
        Ok((text.to_owned(), start))
    }
}

fn number_arg((text, at): &(String, usize)) -> ParseResult<(Num, Option<UnitFamily>)> {
    parse_number(text).ok_or_else(|| (*at, SpecErrorKind::BadNumber(text.clone())))
}

/// The one-line reason of a regex error (its message spans several lines).
fn regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .find_map(|l| l.strip_prefix("error: "))
        .map(str::to_owned)
        .unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "))
}

// ---------------------------------------------------------------------------
// Search
// ---------------------------------------------------------------------------

/// Why a match could not be decided.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatchError {
    /// The search tried `steps` facts without reaching an answer: the specs
    /// are too ambiguous for this inventory (many interchangeable facts and
    /// no solution). Make the specs more precise.
    #[error(
        "hardware match gave up after {steps} search steps: the profile's specs are too ambiguous for this inventory"
    )]
    SearchLimit { steps: usize },
}

/// A successful match.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Match {
    /// Every variable of the spec set and the text it captured.
    pub bindings: BTreeMap<String, String>,
    /// The variables written as `$$name`: the CMDB keys.
    pub cmdb_keys: BTreeSet<String>,
    /// `facts[i]` is the index (in [`Facts::as_slice`]) of the fact that
    /// satisfied spec `i`.
    pub facts: Vec<usize>,
}

impl Match {
    /// The captured values of the CMDB keys.
    pub fn cmdb_values(&self) -> BTreeMap<&str, &str> {
        self.cmdb_keys
            .iter()
            .filter_map(|k| Some((k.as_str(), self.bindings.get(k)?.as_str())))
            .collect()
    }
}

/// Matches an inventory against a spec set. `Ok(None)` when it does not
/// match; use [`explain`] to learn why. `limit` bounds the search steps
/// ([`DEFAULT_STEP_LIMIT`] is a good default).
pub fn matches(specs: &SpecSet, facts: &Facts, limit: usize) -> Result<Option<Match>, MatchError> {
    let Some(candidates) = Candidates::collect_all_nonempty(specs, facts) else {
        return Ok(None);
    };
    let mut search = Search::new(specs, facts, &candidates, specs.len(), limit);
    Ok(search.run()?.then(|| search.to_match()))
}

/// The facts satisfying each spec on its own, variables aside.
struct Candidates {
    facts: Vec<usize>,
    spans: Vec<(usize, usize)>,
}

impl Candidates {
    fn collect(specs: &SpecSet, facts: &Facts) -> Self {
        let mut out = Candidates::with_capacity(specs.len());
        for spec in &specs.specs {
            out.push(spec, facts);
        }
        out
    }

    /// `None` as soon as a spec has no candidate.
    fn collect_all_nonempty(specs: &SpecSet, facts: &Facts) -> Option<Self> {
        let mut out = Candidates::with_capacity(specs.len());
        for spec in &specs.specs {
            if out.push(spec, facts) == 0 {
                return None;
            }
        }
        Some(out)
    }

    fn with_capacity(specs: usize) -> Self {
        Candidates {
            facts: Vec::with_capacity(4 * specs),
            spans: Vec::with_capacity(specs),
        }
    }

    /// Adds the candidates of the next spec; returns how many it has.
    fn push(&mut self, spec: &Spec, facts: &Facts) -> usize {
        let start = self.facts.len();
        spec.collect_candidates(facts, &mut self.facts);
        self.spans.push((start, self.facts.len()));
        self.facts.len() - start
    }

    fn of(&self, spec: usize) -> &[usize] {
        let (start, end) = self.spans[spec];
        &self.facts[start..end]
    }
}

/// Depth-first search with backtracking over the candidates of the first
/// specs of a set.
///
/// The specs are first split into independent components: two specs are in
/// the same component when they share a variable or a candidate fact.
/// Components are solved one after the other, so a failure in one never
/// makes the search revisit the choices of another.
struct Search<'a> {
    specs: &'a SpecSet,
    facts: &'a Facts,
    candidates: &'a Candidates,
    /// The specs in the order they are tried: component by component, fewest
    /// candidates first within a component, interchangeable specs together.
    slots: Vec<Slot>,
    /// For each spec index, the fact chosen (`usize::MAX`: none).
    assigned: Vec<usize>,
    bindings: Vec<Option<&'a str>>,
    /// Variables bound, in order, to undo them.
    trail: Vec<usize>,
    /// Bit set of the facts taken.
    used: Vec<u64>,
    steps: usize,
    limit: usize,
}

/// One spec's place in the search.
#[derive(Debug, Clone, Copy)]
struct Slot {
    spec: usize,
    /// The component's first spec.
    component: usize,
    /// Where the component ends in `slots`.
    end: usize,
    /// Whether the previous slot holds an interchangeable spec.
    follows_twin: bool,
    /// Interchangeable specs, this one included, from this slot on.
    remaining: usize,
    /// Next candidate position to try.
    next: usize,
    /// Candidate position chosen.
    chosen: usize,
    /// Trail length before this slot's bindings.
    mark: usize,
}

impl<'a> Search<'a> {
    /// A search over specs `0..count`.
    fn new(
        specs: &'a SpecSet,
        facts: &'a Facts,
        candidates: &'a Candidates,
        count: usize,
        limit: usize,
    ) -> Self {
        // Union-find over specs, linked through variables and facts.
        let mut scratch = vec![usize::MAX; count + specs.vars.len() + facts.len()];
        let (parent, owners) = scratch.split_at_mut(count);
        let (var_owner, fact_owner) = owners.split_at_mut(specs.vars.len());
        for (s, p) in parent.iter_mut().enumerate() {
            *p = s;
        }
        for s in 0..count {
            for p in &specs.specs[s].fields {
                if let Pattern::Var { id, .. } = p {
                    link(parent, &mut var_owner[*id], s);
                }
            }
            for &f in candidates.of(s) {
                link(parent, &mut fact_owner[f], s);
            }
        }
        let mut slots: Vec<Slot> = (0..count)
            .map(|spec| Slot {
                spec,
                component: find(parent, spec),
                end: count,
                follows_twin: false,
                remaining: 1,
                next: 0,
                chosen: 0,
                mark: 0,
            })
            .collect();
        let group = |s: &Slot| specs.specs[s.spec].group;
        slots
            .sort_unstable_by_key(|s| (s.component, candidates.of(s.spec).len(), group(s), s.spec));
        for p in (0..count.saturating_sub(1)).rev() {
            let (here, after) = (slots[p], slots[p + 1]);
            if here.component == after.component {
                slots[p].end = after.end;
                if group(&here) == group(&after) {
                    slots[p + 1].follows_twin = true;
                    slots[p].remaining = after.remaining + 1;
                }
            } else {
                slots[p].end = p + 1;
            }
        }
        Search {
            specs,
            facts,
            candidates,
            slots,
            assigned: vec![usize::MAX; specs.len()],
            bindings: vec![None; specs.vars.len()],
            trail: Vec::with_capacity(specs.vars.len()),
            used: vec![0; facts.len().div_ceil(64)],
            steps: 0,
            limit,
        }
    }

    /// Finds a solution; on success `assigned` and `bindings` hold it.
    fn run(&mut self) -> Result<bool, MatchError> {
        let mut start = 0;
        while start < self.slots.len() {
            let end = self.slots[start].end;
            if !self.run_component(start, end)? {
                return Ok(false);
            }
            start = end;
        }
        Ok(true)
    }

    /// Solves the specs of `slots[start..end]`.
    fn run_component(&mut self, start: usize, end: usize) -> Result<bool, MatchError> {
        let all: &'a Candidates = self.candidates;
        let mut depth = start;
        self.slots[depth].next = 0;
        loop {
            let slot = self.slots[depth];
            let candidates = all.of(slot.spec);
            // Interchangeable specs take increasing candidate positions, so
            // this one leaves room for those after it.
            let last = (candidates.len() + 1).saturating_sub(slot.remaining);
            let mut found = None;
            for (pos, &fact) in candidates[..last].iter().enumerate().skip(slot.next) {
                if self.steps >= self.limit {
                    return Err(MatchError::SearchLimit { steps: self.steps });
                }
                self.steps += 1;
                if self.is_used(fact) {
                    continue;
                }
                let mark = self.trail.len();
                if self.bind(slot.spec, fact) {
                    found = Some((pos, fact, mark));
                    break;
                }
                self.undo(mark);
            }
            match found {
                Some((pos, fact, mark)) => {
                    let slot = &mut self.slots[depth];
                    slot.next = pos + 1;
                    slot.chosen = pos;
                    slot.mark = mark;
                    self.assigned[slot.spec] = fact;
                    self.set_used(fact, true);
                    depth += 1;
                    if depth == end {
                        return Ok(true);
                    }
                    self.slots[depth].next = if self.slots[depth].follows_twin {
                        pos + 1
                    } else {
                        0
                    };
                }
                None => {
                    if depth == start {
                        return Ok(false);
                    }
                    depth -= 1;
                    let slot = self.slots[depth];
                    self.set_used(self.assigned[slot.spec], false);
                    self.assigned[slot.spec] = usize::MAX;
                    self.undo(slot.mark);
                }
            }
        }
    }

    /// Binds the variables of `spec` to the fields of `fact`; false when a
    /// variable is already bound to something else.
    fn bind(&mut self, spec: usize, fact: usize) -> bool {
        let specs: &'a SpecSet = self.specs;
        let facts: &'a Facts = self.facts;
        let fact = &facts.facts[fact];
        for (i, p) in specs.specs[spec].fields.iter().enumerate() {
            if let Pattern::Var { id, .. } = p {
                let text = fact.field(i);
                match self.bindings[*id] {
                    Some(bound) if bound != text => return false,
                    Some(_) => {}
                    None => {
                        self.bindings[*id] = Some(text);
                        self.trail.push(*id);
                    }
                }
            }
        }
        true
    }

    fn undo(&mut self, mark: usize) {
        for id in self.trail.drain(mark..) {
            self.bindings[id] = None;
        }
    }

    fn is_used(&self, fact: usize) -> bool {
        self.used[fact / 64] & (1 << (fact % 64)) != 0
    }

    fn set_used(&mut self, fact: usize, used: bool) {
        if used {
            self.used[fact / 64] |= 1 << (fact % 64);
        } else {
            self.used[fact / 64] &= !(1 << (fact % 64));
        }
    }

    fn to_match(&self) -> Match {
        Match {
            bindings: self
                .bindings
                .iter()
                .enumerate()
                .filter_map(|(id, b)| Some((self.specs.vars[id].clone(), (*b)?.to_owned())))
                .collect(),
            cmdb_keys: self.specs.cmdb_keys.clone(),
            facts: self.assigned.clone(),
        }
    }

    /// The spec holding `fact` in the solution found.
    fn owner(&self, fact: usize) -> Option<usize> {
        self.assigned.iter().position(|&f| f == fact)
    }
}

/// Union-find: the representative of `x` (the smallest spec index).
fn find(parent: &mut [usize], mut x: usize) -> usize {
    while parent[x] != x {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    x
}

/// Links spec `s` with the first spec seen at `owner`, or records it there.
fn link(parent: &mut [usize], owner: &mut usize, s: usize) {
    if *owner == usize::MAX {
        *owner = s;
        return;
    }
    let (a, b) = (find(parent, *owner), find(parent, s));
    parent[a.max(b)] = a.min(b);
}

// ---------------------------------------------------------------------------
// Explanations
// ---------------------------------------------------------------------------

/// Why a spec set does not match an inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// Index (from 0) of the spec that could not be satisfied.
    pub spec: usize,
    /// That spec, as written.
    pub pattern: [String; 4],
    /// True when no fact satisfies the spec even on its own; false when facts
    /// do, but none is left once the specs before it are matched (taken by
    /// them, or disagreeing with a variable they captured).
    pub alone: bool,
    /// Indices of the facts the message shows: the closest facts when
    /// `alone`, else the facts that satisfy the spec on its own.
    pub facts: Vec<usize>,
    /// The explanation as a sentence.
    pub message: String,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Explains why `specs` do not match `facts`; `Ok(None)` when they match.
///
/// The spec named is the first one, in the order written, that no fact
/// satisfies on its own; if every spec has such facts, it is the first spec
/// that cannot be satisfied together with all the specs before it.
pub fn explain(
    specs: &SpecSet,
    facts: &Facts,
    limit: usize,
) -> Result<Option<Explanation>, MatchError> {
    let candidates = Candidates::collect(specs, facts);
    if let Some(s) = (0..specs.len()).find(|&s| candidates.of(s).is_empty()) {
        return Ok(Some(explain_alone(specs, facts, s)));
    }
    let solvable = |n: usize| Search::new(specs, facts, &candidates, n, limit).run();
    if solvable(specs.len())? {
        return Ok(None);
    }
    // Every spec alone is satisfiable, so the first prefix that fails is at
    // least two specs long. Binary search for the shortest failing prefix.
    let (mut lo, mut hi) = (2, specs.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if solvable(mid)? {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let failing = hi - 1;
    let mut before = Search::new(specs, facts, &candidates, failing, limit);
    before.run()?;
    Ok(Some(explain_together(
        specs,
        facts,
        &candidates,
        failing,
        &before,
    )))
}

fn explain_alone(specs: &SpecSet, facts: &Facts, s: usize) -> Explanation {
    let spec = &specs.specs[s];
    // Closeness: how many fields with a literal or a test the fact passes.
    let scored = (0..facts.len()).map(|f| {
        let score = (0..4)
            .filter(|&i| !matches!(spec.fields[i], Pattern::Var { test: None, .. }))
            .filter(|&i| spec.field_accepts(facts, f, i))
            .count();
        (f, score)
    });
    let best = scored.clone().map(|(_, score)| score).max().unwrap_or(0);
    let closest: Vec<usize> = if best == 0 {
        Vec::new()
    } else {
        scored
            .filter(|&(_, score)| score == best)
            .map(|(f, _)| f)
            .collect()
    };
    let mut message = format!("no fact satisfies {}", render_spec(&specs.source[s]));
    if closest.is_empty() {
        message.push_str("; nothing similar in the inventory");
    }
    for &f in closest.iter().take(SHOWN_FACTS) {
        message.push_str("; ");
        message.push_str(&describe_fact(spec, facts, f));
    }
    if closest.len() > SHOWN_FACTS {
        message.push_str(&format!(
            "; and {} more similar facts",
            closest.len() - SHOWN_FACTS
        ));
    }
    Explanation {
        spec: s,
        pattern: specs.source[s].clone(),
        alone: true,
        facts: closest.into_iter().take(SHOWN_FACTS).collect(),
        message,
    }
}

fn explain_together(
    specs: &SpecSet,
    facts: &Facts,
    candidates: &Candidates,
    s: usize,
    before: &Search<'_>,
) -> Explanation {
    let spec = &specs.specs[s];
    let mut message = format!("no fact satisfies {}", render_spec(&specs.source[s]));
    message.push_str(&if s == 1 {
        " once spec 1 is matched".to_owned()
    } else {
        format!(" once specs 1 to {s} are matched")
    });
    let mut captured: Vec<String> = Vec::new();
    for p in &spec.fields {
        if let Pattern::Var { id, .. } = p
            && let Some(text) = before.bindings[*id]
        {
            let shown = format!("${}='{text}'", specs.vars[*id]);
            if !captured.contains(&shown) {
                captured.push(shown);
            }
        }
    }
    if !captured.is_empty() {
        message.push_str(&format!(" (with {})", captured.join(", ")));
    }
    message.push_str("; facts that satisfy it alone: ");
    let alone = candidates.of(s);
    let shown: Vec<String> = alone
        .iter()
        .take(SHOWN_FACTS)
        .map(|&f| {
            let reason = match before.owner(f) {
                Some(owner) => format!("taken by spec {}", owner + 1),
                None => conflict(specs, spec, facts, f, before),
            };
            format!("{} ({reason})", describe_fact(spec, facts, f))
        })
        .collect();
    message.push_str(&shown.join("; "));
    if alone.len() > SHOWN_FACTS {
        message.push_str(&format!("; and {} more", alone.len() - SHOWN_FACTS));
    }
    Explanation {
        spec: s,
        pattern: specs.source[s].clone(),
        alone: false,
        facts: alone.iter().copied().take(SHOWN_FACTS).collect(),
        message,
    }
}

/// Which captured variable fact `f` disagrees with.
fn conflict(specs: &SpecSet, spec: &Spec, facts: &Facts, f: usize, before: &Search<'_>) -> String {
    let fact = &facts.facts[f];
    let mut local: Vec<(usize, &str)> = Vec::new();
    for (i, p) in spec.fields.iter().enumerate() {
        if let Pattern::Var { id, .. } = p {
            let text = fact.field(i);
            let bound = before.bindings[*id]
                .or_else(|| local.iter().find(|(v, _)| v == id).map(|(_, t)| *t));
            match bound {
                Some(b) if b != text => {
                    return format!("${} is '{b}'", specs.vars[*id]);
                }
                Some(_) => {}
                None => local.push((*id, text)),
            }
        }
    }
    "conflicts with the specs before it".to_owned()
}

/// `('memory','total','size','ge(64GiB)')`
fn render_spec(spec: &[String; 4]) -> String {
    format!("('{}','{}','{}','{}')", spec[0], spec[1], spec[2], spec[3])
}

/// `memory total size is 32 GiB`: the value shown as a size when the spec
/// tests it against a size.
fn describe_fact(spec: &Spec, facts: &Facts, f: usize) -> String {
    let fact = &facts.facts[f];
    let size = spec.fields[3].test().and_then(|t| t.size);
    let value = match (size, facts.number(f, 3)) {
        (Some(family), Some(n)) => human_size(n, family),
        _ => fact.value.clone(),
    };
    format!("{} {} {} is {value}", fact.class, fact.kind, fact.key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::{Duration, Instant};

    const NO_LIMIT: usize = usize::MAX;

    fn facts(list: &[[&str; 4]]) -> Facts {
        Facts::new(
            list.iter()
                .map(|f| Fact::new(f[0], f[1], f[2], f[3]))
                .collect(),
        )
    }

    fn specs(list: &[[&str; 4]]) -> SpecSet {
        match SpecSet::parse(list) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    fn find(s: &[[&str; 4]], f: &[[&str; 4]]) -> Option<Match> {
        matches(&specs(s), &facts(f), DEFAULT_STEP_LIMIT).expect("within the step limit")
    }

    fn is_match(s: &[[&str; 4]], f: &[[&str; 4]]) -> bool {
        find(s, f).is_some()
    }

    /// Whether the single value pattern accepts the value.
    fn value_ok(pattern: &str, value: &str) -> bool {
        is_match(&[["c", "t", "k", pattern]], &[["c", "t", "k", value]])
    }

    fn parse_error(pattern: &str) -> String {
        match SpecSet::parse(&[["c", "t", "k", pattern]]) {
            Ok(_) => panic!("{pattern:?} should not parse"),
            Err(e) => e.to_string(),
        }
    }

    fn why(s: &[[&str; 4]], f: &[[&str; 4]]) -> Explanation {
        explain(&specs(s), &facts(f), DEFAULT_STEP_LIMIT)
            .expect("within the step limit")
            .expect("an explanation")
    }

    // -- literals and variables ---------------------------------------------

    #[test]
    fn literal_fields_compare_exactly() {
        let inv = [["system", "product", "vendor", "HP"]];
        assert!(is_match(&[["system", "product", "vendor", "HP"]], &inv));
        assert!(!is_match(&[["system", "product", "vendor", "hp"]], &inv));
        assert!(!is_match(&[["system", "product", "vendor", "HP "]], &inv));
        assert!(!is_match(&[["system", "product", "name", "HP"]], &inv));
    }

    #[test]
    fn empty_spec_set_matches_anything() {
        let m = find(&[], &[["a", "b", "c", "d"]]).expect("match");
        assert!(m.bindings.is_empty() && m.facts.is_empty());
        assert!(is_match(&[], &[]));
    }

    #[test]
    fn facts_no_spec_mentions_are_ignored() {
        let inv = [
            ["disk", "sda", "size", "300"],
            ["cpu", "physical", "number", "2"],
            ["system", "product", "vendor", "HP"],
        ];
        assert!(is_match(&[["cpu", "physical", "number", "2"]], &inv));
    }

    #[test]
    fn variable_captures_and_must_agree_across_specs() {
        let inv = [
            ["network", "eth0", "ipv4", "10.0.0.5"],
            ["network", "eth0", "serial", "aa:aa"],
            ["network", "eth1", "ipv4", "192.168.1.5"],
            ["network", "eth1", "serial", "bb:bb"],
        ];
        let m = find(
            &[
                ["network", "$eth", "ipv4", "192.168.1.5"],
                ["network", "$eth", "serial", "$mac"],
            ],
            &inv,
        )
        .expect("match");
        assert_eq!(m.bindings["eth"], "eth1");
        assert_eq!(m.bindings["mac"], "bb:bb");
        assert_eq!(m.facts, vec![2, 3]);

        // Same variable, values that never agree.
        assert!(!is_match(
            &[
                ["network", "$eth", "ipv4", "10.0.0.5"],
                ["network", "$eth", "serial", "bb:bb"],
            ],
            &inv
        ));
        // Two names may hold the same text.
        let m = find(
            &[
                ["network", "$a", "ipv4", "10.0.0.5"],
                ["network", "$b", "serial", "aa:aa"],
            ],
            &inv,
        )
        .expect("match");
        assert_eq!(m.bindings["a"], m.bindings["b"]);
    }

    #[test]
    fn variable_repeated_inside_one_spec() {
        let inv = [["x", "a", "b", "1"], ["x", "same", "same", "2"]];
        let m = find(&[["x", "$v", "$v", "$n"]], &inv).expect("match");
        assert_eq!(m.bindings["v"], "same");
        assert_eq!(m.bindings["n"], "2");
    }

    #[test]
    fn variable_in_key_position() {
        let inv = [
            ["cpu", "physical_0", "cores", "8"],
            ["cpu", "physical_0", "threads", "16"],
            ["cpu", "physical_1", "threads", "16"],
        ];
        let m = find(
            &[
                ["cpu", "physical_0", "$k", "16"],
                ["cpu", "physical_1", "$k", "$n"],
            ],
            &inv,
        )
        .expect("match");
        assert_eq!(m.bindings["k"], "threads");
        assert_eq!(m.bindings["n"], "16");
        // Captured in the key of one spec, required in the key of another.
        assert!(!is_match(
            &[
                ["cpu", "physical_0", "$k", "8"],
                ["cpu", "physical_1", "$k", "$n"]
            ],
            &inv
        ));
    }

    #[test]
    fn variable_in_class_and_type_positions() {
        let inv = [["disk", "sda", "size", "300"], ["sda", "disk", "size", "1"]];
        let m = find(
            &[["$c", "$t", "size", "1"], ["$t", "$c", "size", "$s"]],
            &inv,
        )
        .expect("match");
        assert_eq!(m.bindings["c"], "sda");
        assert_eq!(m.bindings["s"], "300");
    }

    #[test]
    fn double_dollar_marks_cmdb_keys() {
        let inv = [
            ["network", "eth0", "serial", "52:54:00:aa:bb:cc"],
            ["system", "product", "serial", "CZ3404YWNN"],
        ];
        let s = specs(&[
            ["network", "$eth", "serial", "$$mac"],
            ["system", "product", "serial", "$serial"],
        ]);
        assert_eq!(s.cmdb_keys().iter().collect::<Vec<_>>(), ["mac"]);
        assert_eq!(s.variables(), ["eth", "mac", "serial"]);
        let m = matches(&s, &facts(&inv), DEFAULT_STEP_LIMIT)
            .unwrap()
            .unwrap();
        assert_eq!(m.cmdb_keys.iter().collect::<Vec<_>>(), ["mac"]);
        assert_eq!(
            m.cmdb_values(),
            BTreeMap::from([("mac", "52:54:00:aa:bb:cc")])
        );
        assert_eq!(m.bindings.len(), 3);
    }

    #[test]
    fn single_and_double_dollar_name_the_same_variable() {
        let inv = [
            ["n", "eth0", "serial", "m0"],
            ["n", "eth0", "ipv4", "10.1.1.1"],
        ];
        let s = specs(&[
            ["n", "$eth", "serial", "$mac"],
            ["n", "$$eth", "ipv4", "$ip"],
        ]);
        assert_eq!(s.variables(), ["eth", "mac", "ip"]);
        assert!(s.cmdb_keys().contains("eth"));
        let m = matches(&s, &facts(&inv), 100).unwrap().unwrap();
        assert_eq!(m.cmdb_values(), BTreeMap::from([("eth", "eth0")]));
    }

    #[test]
    fn capture_with_test() {
        let inv = [
            ["disk", "sda", "size", "100"],
            ["disk", "sdb", "size", "500"],
            ["disk", "sdc", "size", "1000"],
        ];
        let m = find(&[["disk", "$d", "size", "$size=ge(400)"]], &inv).expect("match");
        assert_eq!(m.bindings["d"], "sdb");
        assert_eq!(m.bindings["size"], "500");
        // An already bound variable must be equal and pass the test.
        assert!(!is_match(
            &[
                ["disk", "sda", "size", "$size"],
                ["disk", "$d", "size", "$size=ge(400)"]
            ],
            &inv
        ));
        let m = find(&[["disk", "$$d=regexp(^sd[bc]$)", "size", "gt(600)"]], &inv).expect("match");
        assert_eq!(m.bindings["d"], "sdc");
        assert!(m.cmdb_keys.contains("d"));
    }

    // -- functions -----------------------------------------------------------

    #[test]
    fn comparisons() {
        assert!(value_ok("gt(10)", "11"));
        assert!(!value_ok("gt(10)", "10"));
        assert!(value_ok("ge(10)", "10"));
        assert!(!value_ok("ge(10)", "9.999"));
        assert!(value_ok("lt(10)", "9.5"));
        assert!(!value_ok("lt(10)", "10"));
        assert!(value_ok("le(10)", "10.0"));
        assert!(!value_ok("le(10)", "10.000000001"));
        assert!(value_ok("gt(-5)", "-4"));
        assert!(value_ok("lt(0)", "-0.5"));
        assert!(value_ok("ge(3999.87)", "3999.88"));
        assert!(value_ok("gt( 1 )", " 2 "));
    }

    #[test]
    fn ranges_include_both_bounds() {
        assert!(value_ok("range(30,50)", "30"));
        assert!(value_ok("range(30,50)", "50"));
        assert!(value_ok("range(30, 50)", "42.5"));
        assert!(!value_ok("range(30,50)", "29.99"));
        assert!(!value_ok("range(30,50)", "51"));
        assert!(value_ok("range(1GiB,2GiB)", "1.5GiB"));
        assert!(value_ok("range(5,5)", "5"));
    }

    #[test]
    fn in_is_text_membership() {
        assert!(value_ok("in(SAS,SATA)", "SATA"));
        assert!(!value_ok("in(SAS,SATA)", "sata"));
        assert!(!value_ok("in(SAS,SATA)", "SAS "));
        assert!(value_ok("in(16)", "16"));
        assert!(!value_ok("in(16)", "16.0"));
        assert!(value_ok("in('NOT AVAILABLE', UNKNOWN)", "NOT AVAILABLE"));
        assert!(value_ok("in('', x)", ""));
    }

    #[test]
    fn regexp_is_an_unanchored_search() {
        let name = "ProLiant BL460c Gen8 (641016-B21)";
        assert!(value_ok("regexp(BL460c)", name));
        assert!(value_ok("regexp(BL460c Gen[89])", name));
        assert!(!value_ok("regexp(^BL460c)", name));
        assert!(value_ok("regexp(^ProLiant)", name));
        assert!(!value_ok("regexp(bl460c)", name));
        assert!(value_ok("regexp(bl460c, i)", name));
        assert!(value_ok("regexp('\\(641016-B21\\)$')", name));
        assert!(value_ok("regexp(^(sda|sdb)$)", "sdb"));
        assert!(!value_ok("regexp(^(sda|sdb)$)", "sdc"));
    }

    #[test]
    fn regexp_arguments_with_commas_and_parentheses_are_quoted() {
        assert!(value_ok("regexp('^a,b$')", "a,b"));
        assert!(value_ok("regexp(\"^a,b$\")", "a,b"));
        assert!(!value_ok("regexp('^a,b$')", "a"));
        assert!(value_ok("regexp('^x\\)+$')", "x)))"));
        assert!(value_ok("regexp('^\\d+ GB$')", "300 GB"));
        assert!(value_ok("regexp('it''s')", "it's"));
        assert!(value_ok("regexp(\"say \"\"hi\"\"\")", "say \"hi\""));
        assert!(value_ok("regexp(' lead')", "a lead"));
        assert!(!value_ok("regexp(' lead')", "alead"));
        // Unquoted, the comma separates arguments and `b$` is not a flag.
        assert!(parse_error("regexp(^a,b$)").contains("unknown regexp flag 'b$'"));
    }

    #[test]
    fn network_ipv4() {
        assert!(value_ok("network(10.29.99.0/24)", "10.29.99.30"));
        assert!(!value_ok("network(10.29.99.0/24)", "10.29.98.30"));
        assert!(value_ok("network(10.0.0.0/8)", "10.255.1.2"));
        assert!(value_ok("network(0.0.0.0/0)", "192.168.1.1"));
        assert!(value_ok("network(10.29.99.30/32)", "10.29.99.30"));
        assert!(value_ok("network(10.29.99.30)", "10.29.99.30"));
        assert!(!value_ok("network(10.29.99.30)", "10.29.99.31"));
        // Host bits in the network are ignored; a prefix on the value too.
        assert!(value_ok("network(10.29.99.30/24)", "10.29.99.1"));
        assert!(value_ok("network(10.29.99.0/24)", "10.29.99.7/24"));
        // IPv4-mapped IPv6 addresses belong to IPv4 networks.
        assert!(value_ok("network(10.0.0.0/8)", "::ffff:10.1.2.3"));
        assert!(!value_ok("network(10.0.0.0/8)", "2001:db8::1"));
        assert!(!value_ok("network(10.0.0.0/8)", "not an address"));
        assert!(!value_ok("network(10.0.0.0/8)", ""));
    }

    #[test]
    fn network_ipv6() {
        assert!(value_ok("network(2001:db8::/32)", "2001:db8:0:1::5"));
        assert!(value_ok("network(2001:DB8::/32)", "2001:0db8::1"));
        assert!(!value_ok("network(2001:db8::/32)", "2001:db9::1"));
        assert!(value_ok("network(fe80::/10)", "fe80::1%eth0"));
        assert!(value_ok("network(fe80::/10)", "febf::1"));
        assert!(!value_ok("network(fe80::/10)", "fec0::1"));
        assert!(value_ok("network(2001:db8::/32)", "[2001:db8::1]"));
        assert!(value_ok("network(2001:db8::/32)", "2001:db8::1/64"));
        assert!(value_ok("network(::/0)", "::1"));
        assert!(value_ok("network(::1/128)", "::1"));
        assert!(!value_ok("network(::1/128)", "::2"));
        assert!(!value_ok("network(2001:db8::/32)", "10.0.0.1"));
    }

    #[test]
    fn combinators() {
        assert!(value_ok("not(HP)", "Dell"));
        assert!(!value_ok("not(HP)", "HP"));
        assert!(value_ok("or(SAS,SATA)", "SAS"));
        assert!(!value_ok("or(SAS,SATA)", "NVMe"));
        assert!(value_ok("and(gt(1),lt(3))", "2"));
        assert!(!value_ok("and(gt(1),lt(3))", "3"));
        assert!(value_ok("or(lt(1),gt(3),in(2))", "2"));
        assert!(value_ok("not(in(UNKNOWN,'NOT AVAILABLE'))", "HP"));
        assert!(!value_ok(
            "not(in(UNKNOWN,'NOT AVAILABLE'))",
            "NOT AVAILABLE"
        ));
        assert!(value_ok("and(regexp(^eth), not(eth0))", "eth1"));
        assert!(!value_ok("and(regexp(^eth), not(eth0))", "eth0"));
    }

    #[test]
    fn nested_arguments_parse_properly() {
        assert!(value_ok("and(range(30,50),gt(1))", "40"));
        assert!(!value_ok("and(range(30,50),gt(1))", "60"));
        assert!(value_ok("and(range(30,50),not(40))", "41"));
        assert!(!value_ok("and(range(30,50),not(40))", "40"));
        let deep =
            "or(and(ge(1GiB),le(2GiB),not(or(in(1.5GiB),regexp('^1,5')))),network(10.0.0.0/8))";
        assert!(value_ok(deep, "1GiB"));
        assert!(!value_ok(deep, "1.5GiB"));
        assert!(!value_ok(deep, "1,5"));
        assert!(value_ok(deep, "10.1.1.1"));
        assert!(!value_ok(deep, "3GiB"));
        assert!(value_ok(
            "  and( range( 30 , 50 ) , gt( 1 ) )  ".trim_start(),
            "31"
        ));
        let deepest = format!("{}1{}", "not(".repeat(32), ")".repeat(32));
        assert!(value_ok(&deepest, "1"));
        assert!(!value_ok(&deepest, "2"));
    }

    #[test]
    fn tests_work_in_every_field() {
        let inv = [
            ["disk", "sda", "size", "300"],
            ["disk", "nvme0n1", "size", "300"],
        ];
        let m = find(
            &[["regexp(^d)", "$d=regexp(^nvme)", "in(size)", "ge(1)"]],
            &inv,
        )
        .expect("match");
        assert_eq!(m.bindings["d"], "nvme0n1");
        assert!(is_match(&[["disk", "sda", "$k=not(vendor)", "300"]], &inv));
        // Numeric tests on other fields read those fields as numbers.
        assert!(is_match(
            &[["n", "gt(2)", "k", "v"]],
            &[["n", "3", "k", "v"]]
        ));
    }

    // -- numbers and sizes ----------------------------------------------------

    #[test]
    fn size_units_in_tests() {
        assert!(value_ok("ge(64GiB)", "68719476736"));
        assert!(!value_ok("ge(64GiB)", "68719476735"));
        assert!(value_ok("gt(100GB)", "100000000001"));
        assert!(!value_ok("gt(100GB)", "100000000000"));
        assert!(value_ok("le(512MiB)", "536870912"));
        assert!(!value_ok("le(512MiB)", "536870913"));
        assert!(value_ok("ge(1.5TB)", "1500000000000"));
        assert!(!value_ok("ge(1.5TB)", "1499999999999"));
        assert!(value_ok("ge(1KB)", "1000") && !value_ok("ge(1KB)", "999"));
        assert!(value_ok("ge(1KiB)", "1024") && !value_ok("ge(1KiB)", "1023"));
        assert!(value_ok("ge(1MB)", "1000000"));
        assert!(value_ok("ge(1PB)", "1000000000000000"));
        assert!(value_ok("ge(1PiB)", "1125899906842624"));
        assert!(!value_ok("ge(1PiB)", "1125899906842623"));
        assert!(value_ok("ge(1TiB)", "1099511627776"));
        assert!(value_ok("ge(2B)", "2"));
        // Unit letters in any case, with or without a space.
        assert!(value_ok("ge(64gib)", "68719476736"));
        assert!(value_ok("ge(64 GIB)", "68719476736"));
        assert!(value_ok("ge(100gb)", "100000000000"));
    }

    #[test]
    fn size_units_in_values() {
        assert!(value_ok("ge(32GB)", "32GB"));
        assert!(value_ok("ge(32GB)", "32 GB"));
        assert!(!value_ok("ge(32GiB)", "32GB"));
        assert!(value_ok("ge(32GB)", "32GiB"));
        assert!(value_ok("gt(30000000000)", "32gb"));
        assert!(value_ok("range(1TB,2TB)", "1.5 TB"));
        assert!(value_ok("lt(1GiB)", "1023MiB"));
        assert!(value_ok("ge(64GiB)", "65536 MiB"));
    }

    #[test]
    fn number_parsing() {
        let n = |s: &str| parse_number(s).map(|(n, _)| n.0);
        assert_eq!(n("42"), Some(42 * NUM_SCALE));
        assert_eq!(n("-1.5"), Some(-15 * NUM_SCALE / 10));
        assert_eq!(n("+.5"), Some(NUM_SCALE / 2));
        assert_eq!(n("5."), Some(5 * NUM_SCALE));
        assert_eq!(n("1KiB"), Some(1024 * NUM_SCALE));
        assert_eq!(n("0.000000001"), Some(1));
        assert_eq!(n("0.0000000019"), Some(1));
        for bad in [
            "", " ", "-", ".", "abc", "1e9", "0x10", "1,000", "1.2.3", "12 34", "5K", "5 KiBs",
            "40GB/s", "9c:b6:54", "1I:1:1", "NaN", "inf", "--1", "5éb", "5é", "5 ébb", "1\u{0}B",
        ] {
            assert_eq!(n(bad), None, "{bad:?}");
        }
        // Far too large numbers are not numbers, and do not overflow.
        assert_eq!(n("999999999999999999999999999999999999999"), None);
        assert_eq!(n("99999999999999999999999999PiB"), None);
        assert_eq!(n("18446744073709551615PiB"), None);
        assert!(n("18446744073709551615GiB").is_some());
        assert_eq!(n("18446744073709551616"), None);
        assert!(n("18446744073709551615").is_some());
    }

    #[test]
    fn non_numeric_value_under_numeric_test_simply_does_not_match() {
        for value in ["SAS", "40GB/s", "n/a", "", "12 cores", "1e3"] {
            for test in ["gt(10)", "ge(1GiB)", "lt(10)", "le(10)", "range(0,100)"] {
                assert!(!value_ok(test, value), "{test} on {value:?}");
            }
        }
        // A non-numeric fact does not stop the search: another fact matches.
        let inv = [
            ["disk", "sda", "size", "unknown"],
            ["disk", "sdb", "size", "40GB"],
            ["disk", "sdc", "size", "500"],
        ];
        let m = find(
            &[
                ["disk", "$d", "size", "gt(10)"],
                ["disk", "$e", "size", "gt(100)"],
            ],
            &inv,
        )
        .expect("match");
        assert_eq!(
            (m.bindings["d"].as_str(), m.bindings["e"].as_str()),
            ("sdb", "sdc")
        );
        // Plain boolean logic: a non-number is not greater than 10.
        assert!(value_ok("not(gt(10))", "SAS"));
    }

    // -- hardware values are data ---------------------------------------------

    #[test]
    fn hardware_values_are_never_evaluated() {
        let inv = [["x", "y", "z", "gt(1)"]];
        // The spec is a test; the value is not a number.
        assert!(!is_match(&[["x", "y", "z", "gt(1)"]], &inv));
        // Matching the text needs in() or a variable.
        assert!(is_match(&[["x", "y", "z", "in('gt(1)')"]], &inv));
        let m = find(&[["x", "y", "z", "$v"]], &inv).expect("match");
        assert_eq!(m.bindings["v"], "gt(1)");
        // Values looking like variables, functions or regexes stay text.
        for value in [
            "$x",
            "$$x",
            "$x=gt(0)",
            "regexp(.*)",
            "and(gt(0),lt(2))",
            ".*",
        ] {
            assert!(!value_ok("foo", value), "{value}");
            assert!(value_ok("$v", value), "{value}");
            assert!(value_ok(&format!("in('{value}')"), value), "{value}");
        }
        // A bound variable compares text, never evaluates it.
        let inv = [["a", "1", "k", "gt(0)"], ["b", "1", "k", "5"]];
        assert!(!is_match(
            &[["a", "1", "k", "$v"], ["b", "1", "k", "$v"]],
            &inv
        ));
    }

    #[test]
    fn literals_that_look_like_calls() {
        let cpu = "Intel(R) Xeon(R) CPU E5-2650 0 @ 2.00GHz";
        assert!(value_ok(cpu, cpu));
        assert!(value_ok(
            "ProLiant BL460c Gen8 (641016-B21)",
            "ProLiant BL460c Gen8 (641016-B21)"
        ));
        assert!(value_ok("(x)", "(x)"));
        assert!(value_ok("in('Foo(1)')", "Foo(1)"));
        assert!(parse_error("Foo(1)").contains("unknown function 'Foo'"));
    }

    // -- search -----------------------------------------------------------------

    #[test]
    fn each_spec_consumes_its_own_fact() {
        let one = [["disk", "sda", "type", "SSD"]];
        let two = [
            ["disk", "sda", "type", "SSD"],
            ["disk", "sdb", "type", "SSD"],
        ];
        let same = [["disk", "$a", "type", "SSD"], ["disk", "$b", "type", "SSD"]];
        assert!(!is_match(&same, &one));
        let m = find(&same, &two).expect("match");
        assert_ne!(m.facts[0], m.facts[1]);
        assert_ne!(m.bindings["a"], m.bindings["b"]);
        // Identical literal specs need identical facts.
        let lit = [
            ["disk", "sda", "type", "SSD"],
            ["disk", "sda", "type", "SSD"],
        ];
        assert!(!is_match(&lit, &one));
        assert!(is_match(&lit, &[one[0], one[0]]));
        // A shared variable cannot use the same fact twice either.
        let shared = [["disk", "$d", "type", "SSD"], ["disk", "$d", "type", "SSD"]];
        assert!(!is_match(&shared, &two));
    }

    #[test]
    fn backtracks_when_the_first_choice_fails_later() {
        let inv = [
            ["disk", "sda", "size", "300"],
            ["disk", "sda", "type", "HDD"],
            ["disk", "sdb", "size", "300"],
            ["disk", "sdb", "type", "SSD"],
            ["disk", "sdc", "size", "50"],
            ["disk", "sdc", "type", "NVMe"],
        ];
        let s = specs(&[
            ["disk", "$d", "size", "ge(100)"],
            ["disk", "$d", "type", "or(SSD,NVMe)"],
        ]);
        let f = facts(&inv);
        let candidates = Candidates::collect(&s, &f);
        let mut search = Search::new(&s, &f, &candidates, 2, NO_LIMIT);
        assert!(search.run().unwrap());
        let m = search.to_match();
        assert_eq!(m.bindings["d"], "sdb");
        assert_eq!(m.facts, vec![2, 3]);
        // sda was tried first and given up.
        assert!(search.steps > 2, "steps {}", search.steps);
    }

    #[test]
    fn backtracks_over_consumed_facts() {
        // The first spec's first choice is the only fact the second can use.
        let inv = [
            ["net", "eth0", "speed", "10000"],
            ["net", "eth1", "speed", "1000"],
            ["net", "eth2", "speed", "10000"],
        ];
        let m = find(
            &[
                ["net", "$a", "speed", "ge(1000)"],
                ["net", "$b", "speed", "ge(10000)"],
                ["net", "$c", "speed", "ge(10000)"],
            ],
            &inv,
        )
        .expect("match");
        assert_eq!(m.bindings["a"], "eth1");
        let mut used = m.facts.clone();
        used.sort_unstable();
        assert_eq!(used, vec![0, 1, 2]);
    }

    #[test]
    fn literal_spec_takes_the_exactly_equal_fact() {
        let inv = [
            ["disk", "sda", "type", "SAS"],
            ["disk", "sdb", "type", "SATA"],
        ];
        let m = find(
            &[
                ["disk", "$d", "type", "in(SAS,SATA)"],
                ["disk", "sda", "type", "SAS"],
            ],
            &inv,
        )
        .expect("match");
        assert_eq!(m.facts, vec![1, 0]);
    }

    #[test]
    fn interchangeable_specs_do_not_explode() {
        // 40 identical `$x` specs (plus a private variable each) against 39
        // facts: interchangeable, so the search never tries their orders.
        let inv: Vec<Fact> = (0..39)
            .map(|i| Fact::new("f", format!("t{i}"), "k", "v"))
            .collect();
        let names: Vec<String> = (0..40).map(|i| format!("$t{i}")).collect();
        let spec_list: Vec<[&str; 4]> =
            names.iter().map(|n| ["f", n.as_str(), "k", "$x"]).collect();
        let s = specs(&spec_list);
        let f = Facts::new(inv);
        assert_eq!(matches(&s, &f, 1000), Ok(None));
        let s = specs(&spec_list[..39]);
        let m = matches(&s, &f, 1000)
            .unwrap()
            .expect("39 specs fit 39 facts");
        assert_eq!(m.bindings["x"], "v");
        // Same with truly identical specs sharing every variable.
        let same = specs(&vec![["f", "$t", "k", "$x"]; 30]);
        assert_eq!(matches(&same, &f, 100_000), Ok(None));
    }

    #[test]
    fn independent_parts_are_solved_separately() {
        // 16 banks for 8 specs and a failing network pair: the banks are not
        // tried in every combination before giving up.
        let mut inv: Vec<Fact> = (0..16)
            .map(|i| Fact::new("memory", format!("bank:{i}"), "size", "17179869184"))
            .collect();
        inv.push(Fact::new("network", "eth0", "ipv4", "10.0.0.1"));
        inv.push(Fact::new("network", "eth0", "link", "no"));
        inv.push(Fact::new("network", "eth1", "link", "yes"));
        let mut list: Vec<[String; 4]> = (0..8)
            .map(|i| {
                [
                    "memory".into(),
                    format!("$b{i}"),
                    "size".into(),
                    "ge(16GiB)".into(),
                ]
            })
            .collect();
        list.push([
            "network".into(),
            "$e".into(),
            "ipv4".into(),
            "network(10.0.0.0/8)".into(),
        ]);
        list.push([
            "network".into(),
            "$e".into(),
            "link".into(),
            "regexp(.)".into(),
        ]);
        list.push(["network".into(), "$e".into(), "link".into(), "yes".into()]);
        let s = SpecSet::parse(&list).unwrap();
        let f = Facts::new(inv);
        assert_eq!(matches(&s, &f, 1000), Ok(None));
    }

    #[test]
    fn hostile_specs_trip_the_step_limit_quickly() {
        // Pairs (f $t_i k $x) / (g $t_i k 1): 13 pairs need 13 distinct
        // types, only 12 exist, and no two specs are interchangeable.
        let mut inv = Vec::new();
        for i in 0..12 {
            inv.push(Fact::new("f", format!("t{i}"), "k", "v"));
            inv.push(Fact::new("g", format!("t{i}"), "k", "1"));
        }
        let mut list: Vec<[String; 4]> = Vec::new();
        for i in 0..13 {
            list.push(["f".into(), format!("$t{i}"), "k".into(), "$x".into()]);
            list.push(["g".into(), format!("$t{i}"), "k".into(), "1".into()]);
        }
        let s = SpecSet::parse(&list).unwrap();
        let f = Facts::new(inv);
        let start = Instant::now();
        assert_eq!(
            matches(&s, &f, DEFAULT_STEP_LIMIT),
            Err(MatchError::SearchLimit {
                steps: DEFAULT_STEP_LIMIT
            })
        );
        assert_eq!(
            explain(&s, &f, DEFAULT_STEP_LIMIT),
            Err(MatchError::SearchLimit {
                steps: DEFAULT_STEP_LIMIT
            })
        );
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(
            matches(&s, &f, 10),
            Err(MatchError::SearchLimit { steps: 10 })
        );
        assert!(
            MatchError::SearchLimit { steps: 10 }
                .to_string()
                .contains("gave up after 10 search steps")
        );
        // With one pair fewer it matches well within the limit.
        let s = SpecSet::parse(&list[..24]).unwrap();
        assert!(matches(&s, &f, DEFAULT_STEP_LIMIT).unwrap().is_some());
    }

    // -- parse errors ---------------------------------------------------------

    #[test]
    fn parse_errors_say_what_and_where() {
        let err = SpecSet::parse(&[
            ["memory", "total", "size", "ge(1)"],
            ["a", "b", "c", "d"],
            ["a", "b", "c", "d"],
            ["memory", "total", "ge(64GiB", "x"],
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec 4 field \"key\": unclosed '(' at column 3 in \"ge(64GiB\""
        );
        assert_eq!((err.spec, err.field, err.column), (3, 2, 3));
        assert_eq!(err.kind, SpecErrorKind::UnclosedParen);

        let deep = format!("{}1{}", "not(".repeat(40), ")".repeat(40));
        let cases = [
            ("rnage(1,2)", "unknown function 'rnage'", 1),
            ("GT(5)", "unknown function 'GT'", 1),
            ("and(gt(1),foo(2))", "unknown function 'foo'", 11),
            ("gt(1,2)", "gt() takes 1 argument but got 2", 1),
            ("gt()", "gt() takes 1 argument but got 0", 1),
            ("range(1)", "range() takes 2 arguments but got 1", 1),
            ("range(50,30)", "range lower bound is greater", 1),
            ("not(a,b)", "not() takes 1 argument but got 2", 1),
            (
                "and(gt(1))",
                "and() takes at least 2 arguments but got 1",
                1,
            ),
            ("or()", "or() takes at least 2 arguments but got 0", 1),
            ("in()", "in() takes at least 1 argument but got 0", 1),
            ("regexp()", "regexp() takes 1 or 2 arguments but got 0", 1),
            (
                "regexp(a,i,x)",
                "regexp() takes 1 or 2 arguments but got 3",
                1,
            ),
            ("regexp(a, x)", "unknown regexp flag 'x'", 11),
            (
                "regexp('(unclosed')",
                "bad regular expression: unclosed group",
                8,
            ),
            ("regexp(a[)", "bad regular expression", 8),
            ("network(10.0.0.0/33)", "bad network '10.0.0.0/33'", 9),
            ("network(10.0.0/8)", "bad network", 9),
            ("network(2001:db8::/129)", "bad network", 9),
            ("network(10.0.0.0/)", "bad network", 9),
            ("network(hello)", "bad network 'hello'", 9),
            ("gt(abc)", "bad number 'abc'", 4),
            ("ge(64 GiBs)", "bad number '64 GiBs'", 4),
            ("le(1e9)", "bad number '1e9'", 4),
            ("range(1, x)", "bad number 'x'", 10),
            ("in(a,,b)", "empty argument", 6),
            ("in('abc)", "unclosed quote", 4),
            ("in('a'b)", "unexpected 'b'", 7),
            ("gt(1))", "unexpected ')'", 6),
            ("gt(1) and more", "unexpected 'a'", 7),
            ("and(gt(1),lt(2)", "unclosed '('", 4),
            ("and(range(30,50),gt(1)", "unclosed '('", 4),
            ("$", "expected a variable name", 2),
            ("$$", "expected a variable name", 3),
            ("$-x", "expected a variable name", 2),
            ("$x=", "expected a function after '='", 4),
            ("$x=HP", "expected a function after '='", 4),
            ("$x=gt(", "unclosed '('", 6),
            ("$x y", "unexpected 'y'", 4),
            ("$x-y", "unexpected '-'", 3),
            (deep.as_str(), "functions nested more than 32 deep", 129),
        ];
        for (pattern, message, column) in cases {
            let err = SpecSet::parse(&[["c", "t", "k", pattern]]).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(message), "{pattern:?}: {text}");
            assert!(
                text.starts_with("spec 1 field \"value\": "),
                "{pattern:?}: {text}"
            );
            assert_eq!(err.column, column, "{pattern:?}: {text}");
            assert!(text.ends_with(&format!("in {pattern:?}")), "{text}");
        }
    }

    #[test]
    fn parse_error_columns_count_characters() {
        let err = SpecSet::parse(&[["c", "t", "k", "in('é', 'ü)"]]).unwrap_err();
        assert_eq!(err.kind, SpecErrorKind::UnclosedQuote);
        assert_eq!(err.column, 9);
        let err = SpecSet::parse(&[["c", "gt(x)", "k", "v"]]).unwrap_err();
        assert_eq!((err.field, err.column), (1, 4));
        assert!(
            err.to_string()
                .starts_with("spec 1 field \"type\": bad number 'x'")
        );
    }

    #[test]
    fn compiled_specs_and_facts_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<SpecSet>();
        shareable::<Facts>();
        shareable::<Match>();
        shareable::<Explanation>();
    }

    #[test]
    fn spec_set_keeps_its_source() {
        let s = specs(&[["a", "$b", "c", "ge(1)"], ["a", "x", "$$d", "in(1)"]]);
        assert_eq!(s.len(), 2);
        assert!(!s.is_empty());
        assert_eq!(s.source()[0], ["a", "$b", "c", "ge(1)"].map(String::from));
        assert!(SpecSet::parse::<&str>(&[]).unwrap().is_empty());
    }

    // -- explanations ----------------------------------------------------------

    #[test]
    fn explanation_names_the_spec_and_the_closest_fact() {
        let inv = [
            ["memory", "total", "size", "34359738368"],
            ["memory", "bank:0", "size", "17179869184"],
            ["cpu", "physical", "number", "2"],
        ];
        let specs_list = [
            ["cpu", "physical", "number", "ge(2)"],
            ["memory", "total", "size", "ge(64GiB)"],
        ];
        let e = why(&specs_list, &inv);
        assert_eq!(
            e.to_string(),
            "no fact satisfies ('memory','total','size','ge(64GiB)'); memory total size is 32 GiB"
        );
        assert_eq!(e.spec, 1);
        assert!(e.alone);
        assert_eq!(e.facts, vec![0]);
        assert_eq!(e.pattern, specs_list[1].map(String::from));
        assert!(
            explain(&specs(&specs_list[..1]), &facts(&inv), 100)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn explanation_shows_sizes_in_the_tests_unit() {
        let inv = [
            ["disk", "sda", "size", "250000000000"],
            ["disk", "sdb", "size", "1.5TiB"],
        ];
        let e = why(&[["disk", "$d", "size", "ge(2TB)"]], &inv);
        assert_eq!(
            e.message,
            "no fact satisfies ('disk','$d','size','ge(2TB)'); disk sda size is 250 GB; disk sdb size is 1.65 TB"
        );
        let e = why(&[["disk", "$d", "size", "gt(250000000000)"]], &inv[..1]);
        assert!(
            e.message.ends_with("disk sda size is 250000000000"),
            "{}",
            e.message
        );
    }

    #[test]
    fn explanation_limits_closest_facts_and_says_when_nothing_is_close() {
        let inv: Vec<[String; 4]> = (0..5)
            .map(|i| {
                [
                    "memory".into(),
                    format!("bank:{i}"),
                    "size".into(),
                    "8GiB".into(),
                ]
            })
            .collect();
        let inv: Vec<[&str; 4]> = inv
            .iter()
            .map(|f| f.each_ref().map(String::as_str))
            .collect();
        let e = why(&[["memory", "$b", "size", "ge(16GiB)"]], &inv);
        assert_eq!(
            e.message,
            "no fact satisfies ('memory','$b','size','ge(16GiB)'); memory bank:0 size is 8 GiB; \
             memory bank:1 size is 8 GiB; memory bank:2 size is 8 GiB; and 2 more similar facts"
        );
        assert_eq!(e.facts.len(), 3);
        let e = why(&[["gpu", "$g", "model", "$m"]], &inv);
        assert_eq!(
            e.message,
            "no fact satisfies ('gpu','$g','model','$m'); nothing similar in the inventory"
        );
        assert!(e.facts.is_empty());
    }

    #[test]
    fn explanation_of_specs_that_fail_together() {
        let inv = [
            ["disk", "sda", "size", "300"],
            ["disk", "sdb", "size", "299"],
            ["network", "eth0", "ipv4", "10.0.0.1"],
        ];
        let e = why(
            &[
                ["network", "$e", "ipv4", "$ip"],
                ["disk", "$d1", "size", "$s"],
                ["disk", "$d2", "size", "$s"],
            ],
            &inv,
        );
        assert_eq!(e.spec, 2);
        assert!(!e.alone);
        assert_eq!(
            e.message,
            "no fact satisfies ('disk','$d2','size','$s') once specs 1 to 2 are matched \
             (with $s='300'); facts that satisfy it alone: disk sda size is 300 (taken by spec 2); \
             disk sdb size is 299 ($s is '300')"
        );
        let e = why(
            &[
                ["disk", "$a", "size", "ge(299)"],
                ["disk", "$b", "size", "ge(299)"],
                ["disk", "$c", "size", "ge(1)"],
            ],
            &inv,
        );
        assert_eq!(e.spec, 2);
        assert_eq!(
            e.message,
            "no fact satisfies ('disk','$c','size','ge(1)') once specs 1 to 2 are matched; \
             facts that satisfy it alone: disk sda size is 300 (taken by spec 1); \
             disk sdb size is 299 (taken by spec 2)"
        );
    }

    #[test]
    fn explanation_prefers_a_spec_no_fact_satisfies_alone() {
        let inv = [
            ["disk", "sda", "size", "300"],
            ["cpu", "physical", "number", "1"],
        ];
        let e = why(
            &[
                ["disk", "$a", "size", "300"],
                ["disk", "$b", "size", "300"],
                ["cpu", "physical", "number", "ge(2)"],
            ],
            &inv,
        );
        assert_eq!(e.spec, 2);
        assert_eq!(
            e.message,
            "no fact satisfies ('cpu','physical','number','ge(2)'); cpu physical number is 1"
        );
    }

    #[test]
    fn explanation_serializes() {
        let e = why(&[["a", "b", "c", "d"]], &[["a", "b", "c", "e"]]);
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["spec"], 0);
        assert_eq!(json["pattern"], serde_json::json!(["a", "b", "c", "d"]));
        assert_eq!(
            json["message"],
            "no fact satisfies ('a','b','c','d'); a b c is e"
        );
        let back: Explanation = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
    }

    // -- serde ------------------------------------------------------------------

    #[test]
    fn facts_read_and_write_as_four_element_arrays() {
        let f: Fact = serde_json::from_str(r#"["memory","banks","count",16]"#).unwrap();
        assert_eq!(f, Fact::new("memory", "banks", "count", "16"));
        let f: Fact = serde_json::from_str(r#"["a","b","c",true]"#).unwrap();
        assert_eq!(f.value, "true");
        let f: Fact = serde_json::from_str(r#"["cpu","logical_0","bogomips",3999.88]"#).unwrap();
        assert_eq!(f.value, "3999.88");
        assert_eq!(
            serde_json::to_string(&Fact::new("a", "b", "c", "d")).unwrap(),
            r#"["a","b","c","d"]"#
        );
        for bad in [
            r#"["a","b","c"]"#,
            r#"["a","b","c","d","e"]"#,
            r#"["a","b","c",null]"#,
            r#"["a","b","c",["d"]]"#,
            r#"{"class":"a"}"#,
        ] {
            assert!(serde_json::from_str::<Fact>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn match_serializes() {
        let m = find(&[["a", "$x", "c", "$$y"]], &[["a", "b", "c", "d"]]).unwrap();
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"bindings": {"x": "b", "y": "d"}, "cmdb_keys": ["y"], "facts": [0]})
        );
    }

    // -- real inventories -------------------------------------------------------

    macro_rules! fixtures {
        ($($n:literal),*) => {
            [$(($n, include_str!(concat!(
                "../../tests/fixtures/hw-samples/hp-bl460c-gen8-", $n, ".json"
            )))),*]
        };
    }

    const FIXTURES: [(&str, &str); 19] = fixtures!(
        "01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12", "13", "14", "15",
        "16", "17", "18", "19"
    );

    fn fixture_facts() -> Vec<(&'static str, Facts)> {
        FIXTURES
            .iter()
            .map(|(name, json)| {
                let list: Vec<Fact> = serde_json::from_str(json).expect("fixture parses");
                (*name, Facts::new(list))
            })
            .collect()
    }

    fn matching_fixtures(list: &[[&str; 4]]) -> Vec<&'static str> {
        let s = specs(list);
        fixture_facts()
            .into_iter()
            .filter(|(_, f)| {
                matches(&s, f, DEFAULT_STEP_LIMIT)
                    .expect("within limit")
                    .is_some()
            })
            .map(|(name, _)| name)
            .collect()
    }

    const COMPUTE: [[&str; 4]; 10] = [
        ["system", "product", "vendor", "HP"],
        ["system", "product", "name", "regexp(BL460c Gen8)"],
        ["cpu", "physical", "number", "ge(2)"],
        ["cpu", "physical_0", "cores", "ge(8)"],
        ["memory", "$bank1", "size", "ge(16GiB)"],
        ["memory", "$bank2", "size", "ge(16GiB)"],
        ["memory", "$bank3", "size", "ge(16GiB)"],
        ["memory", "$bank4", "size", "ge(16GiB)"],
        ["network", "$eth", "ipv4", "network(10.29.99.0/24)"],
        ["network", "$eth", "serial", "$$mac"],
    ];

    #[test]
    fn fixtures_parse() {
        for (name, f) in fixture_facts() {
            assert!(f.len() > 500, "{name}");
            assert!(
                f.as_slice()
                    .contains(&Fact::new("memory", "banks", "count", "16"))
            );
        }
    }

    #[test]
    fn fixtures_compute_profile() {
        // 2 CPUs and at least 64 GiB in 16 GiB DIMMs: 05 to 19 have eight
        // DIMMs, 01 to 04 only two.
        let expected: Vec<&str> = FIXTURES[4..].iter().map(|(n, _)| *n).collect();
        assert_eq!(matching_fixtures(&COMPUTE), expected);

        let s = specs(&COMPUTE);
        let all = fixture_facts();
        let (_, f05) = &all[4];
        let m = matches(&s, f05, DEFAULT_STEP_LIMIT).unwrap().unwrap();
        assert_eq!(m.bindings["eth"], "eth0");
        assert_eq!(m.bindings["mac"], "9c:b6:54:88:9c:40");
        assert_eq!(
            m.cmdb_values(),
            BTreeMap::from([("mac", "9c:b6:54:88:9c:40")])
        );
        let banks: BTreeSet<&str> = ["bank1", "bank2", "bank3", "bank4"]
            .iter()
            .map(|b| m.bindings[*b].as_str())
            .collect();
        assert_eq!(banks.len(), 4);
        for (i, &fact) in m.facts.iter().enumerate() {
            let fact = &f05.as_slice()[fact];
            assert!(s.specs[i].accepts(f05, m.facts[i]), "{fact:?}");
        }

        let (_, f01) = &all[0];
        let e = explain(&s, f01, DEFAULT_STEP_LIMIT).unwrap().unwrap();
        assert_eq!(e.spec, 6);
        assert_eq!(
            e.message,
            "no fact satisfies ('memory','$bank3','size','ge(16GiB)') once specs 1 to 6 are matched; \
             facts that satisfy it alone: memory bank:0:0 size is 16 GiB (taken by spec 5); \
             memory bank:1:0 size is 16 GiB (taken by spec 6)"
        );
    }

    #[test]
    fn fixtures_storage_profile() {
        // Only 04 has the extra SATA drives of 1000 GB.
        let storage = [
            ["disk", "$d1", "type", "SATA"],
            ["disk", "$d1", "size", "ge(1000)"],
            ["disk", "$d2", "type", "SATA"],
            ["disk", "$d2", "size", "ge(1000)"],
            ["disk", "$d3", "type", "SATA"],
            ["disk", "$d3", "size", "ge(1000)"],
            ["disk", "$d4", "type", "SATA"],
            ["disk", "$d4", "size", "ge(1000)"],
        ];
        assert_eq!(matching_fixtures(&storage), ["04"]);
        let all = fixture_facts();
        let e = explain(&specs(&storage), &all[0].1, DEFAULT_STEP_LIMIT)
            .unwrap()
            .unwrap();
        assert_eq!(e.spec, 0);
        assert_eq!(
            e.message,
            "no fact satisfies ('disk','$d1','type','SATA'); disk 1I:1:1 type is SAS; \
             disk 1I:1:2 type is SAS"
        );
    }

    #[test]
    fn fixtures_other_profiles() {
        let all: Vec<&str> = FIXTURES.iter().map(|(n, _)| *n).collect();
        // The BIOS and product every blade has, and the serial as CMDB key.
        assert_eq!(
            matching_fixtures(&[
                ["firmware", "bios", "version", "in(I31,I32)"],
                ["firmware", "bios", "date", "regexp(/2013$)"],
                ["system", "product", "serial", "$$serial=regexp(^CZ)"],
                [
                    "cpu",
                    "physical_0",
                    "product",
                    "Intel(R) Xeon(R) CPU E5-2650 0 @ 2.00GHz"
                ],
            ]),
            all
        );
        // Other vendors, or a network nobody is on, match nothing.
        assert!(matching_fixtures(&[["system", "product", "vendor", "not(HP)"]]).is_empty());
        assert!(
            matching_fixtures(&[["network", "$e", "ipv4", "network(192.168.0.0/16)"]]).is_empty()
        );
        // One blade pinned by its serial.
        assert_eq!(
            matching_fixtures(&[["system", "product", "serial", "CZ3404YWP2"]]),
            ["05"]
        );
        // A size test on a value written with a unit-less number of bytes.
        assert_eq!(
            matching_fixtures(&[["memory", "bank:0:2", "size", "range(8GiB,16GiB)"]]),
            all[4..].to_vec()
        );
    }

    // -- properties ---------------------------------------------------------------

    fn arb_fact() -> impl Strategy<Value = Fact> {
        (
            prop::sample::select(vec!["cpu", "disk", "mem"]),
            prop::sample::select(vec!["a", "b", "c"]),
            prop::sample::select(vec!["size", "n"]),
            prop::sample::select(vec!["1", "2", "16GiB", "x", "10.0.0.1", "2001:db8::1", "a"]),
        )
            .prop_map(|(c, t, k, v)| Fact::new(c, t, k, v))
    }

    fn arb_spec() -> impl Strategy<Value = [String; 4]> {
        (
            prop::sample::select(vec!["cpu", "disk", "mem"]),
            prop::sample::select(vec![
                "a",
                "b",
                "$t1",
                "$t2",
                "$t3",
                "in(a,c)",
                "$t1=regexp(^[ab]$)",
            ]),
            prop::sample::select(vec!["size", "n", "$k1", "$k2"]),
            prop::sample::select(vec![
                "1",
                "x",
                "a",
                "$v1",
                "$v2",
                "$t1",
                "ge(2)",
                "le(16GiB)",
                "not(x)",
                "network(10.0.0.0/8)",
                "or(x,1)",
                "regexp(^2)",
                "$$v3",
            ]),
        )
            .prop_map(|(c, t, k, v)| [c, t, k, v].map(String::from))
    }

    fn outcome(list: &[[String; 4]], inv: Vec<Fact>) -> bool {
        let s = SpecSet::parse(list).expect("generated specs parse");
        matches(&s, &Facts::new(inv), usize::MAX)
            .expect("no limit")
            .is_some()
    }

    /// Tries every assignment of distinct facts to specs, in spec order.
    fn brute_force(s: &SpecSet, f: &Facts) -> bool {
        fn go(
            s: &SpecSet,
            f: &Facts,
            i: usize,
            used: &mut Vec<bool>,
            b: &mut Vec<Option<String>>,
        ) -> bool {
            if i == s.len() {
                return true;
            }
            for fact in 0..f.len() {
                if used[fact] || !s.specs[i].accepts(f, fact) {
                    continue;
                }
                let saved = b.clone();
                let mut ok = true;
                for (field, p) in s.specs[i].fields.iter().enumerate() {
                    if let Pattern::Var { id, .. } = p {
                        let text = f.as_slice()[fact].field(field).to_owned();
                        match &b[*id] {
                            Some(bound) if *bound != text => ok = false,
                            Some(_) => {}
                            None => b[*id] = Some(text),
                        }
                    }
                }
                if ok {
                    used[fact] = true;
                    if go(s, f, i + 1, used, b) {
                        return true;
                    }
                    used[fact] = false;
                }
                *b = saved;
            }
            false
        }
        go(
            s,
            f,
            0,
            &mut vec![false; f.len()],
            &mut vec![None; s.variables().len()],
        )
    }

    /// Checks a match against the rules directly.
    fn valid(s: &SpecSet, f: &Facts, m: &Match) -> bool {
        let mut seen = BTreeSet::new();
        m.facts.len() == s.len()
            && m.facts.iter().all(|&fact| seen.insert(fact))
            && s.specs.iter().zip(&m.facts).all(|(spec, &fact)| {
                spec.accepts(f, fact)
                    && spec.fields.iter().enumerate().all(|(i, p)| match p {
                        Pattern::Var { id, .. } => {
                            m.bindings.get(&s.vars[*id]).map(String::as_str)
                                == Some(f.as_slice()[fact].field(i))
                        }
                        _ => true,
                    })
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn search_agrees_with_brute_force(
            list in prop::collection::vec(arb_spec(), 0..5),
            inv in prop::collection::vec(arb_fact(), 0..8),
        ) {
            let s = SpecSet::parse(&list).unwrap();
            let f = Facts::new(inv);
            let found = matches(&s, &f, usize::MAX).unwrap();
            prop_assert_eq!(found.is_some(), brute_force(&s, &f));
            if let Some(m) = &found {
                prop_assert!(valid(&s, &f, m), "{:?}", m);
            }
            let why = explain(&s, &f, usize::MAX).unwrap();
            prop_assert_eq!(why.is_none(), found.is_some());
        }

        #[test]
        fn irrelevant_facts_never_change_the_outcome(
            list in prop::collection::vec(arb_spec(), 0..6),
            inv in prop::collection::vec(arb_fact(), 0..10),
            noise in prop::collection::vec((arb_fact(), any::<prop::sample::Index>()), 0..10),
        ) {
            let before = outcome(&list, inv.clone());
            let mut noisy = inv;
            for (mut fact, at) in noise {
                fact.class = "unrelated".into();
                let at = at.index(noisy.len() + 1);
                noisy.insert(at, fact);
            }
            prop_assert_eq!(outcome(&list, noisy), before);
        }

        #[test]
        fn spec_order_never_changes_the_outcome(
            (list, shuffled) in prop::collection::vec(arb_spec(), 0..6)
                .prop_flat_map(|l| (Just(l.clone()), Just(l).prop_shuffle())),
            inv in prop::collection::vec(arb_fact(), 0..10),
        ) {
            prop_assert_eq!(outcome(&list, inv.clone()), outcome(&shuffled, inv));
        }

        #[test]
        fn parser_never_panics(text in ".{0,40}") {
            let _ = SpecSet::parse(&[["c", "t", "k", text.as_str()]]);
        }

        #[test]
        fn parser_never_panics_on_syntax_soup(
            text in "[a-z$=(),' \"0-9.:/]{0,30}",
        ) {
            let _ = SpecSet::parse(&[[text.as_str(), "t", "k", text.as_str()]]);
        }
    }
}
