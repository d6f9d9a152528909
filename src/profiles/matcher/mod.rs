//! Hardware matching: does a node's hardware fit a profile, and which values
//! does the profile capture from it?
//!
//! The parts, in the order a match needs them: `facts.rs` (the facts indexed
//! by class and key), `numbers.rs` and `networks.rs` (values with units, IP
//! networks), `parser.rs` (the spec language, with the position of every
//! error), `specs.rs` (the compiled spec set and its variable groups),
//! `search.rs` (the bounded backtracking) and `explain.rs` (why not). All pure.
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
pub(super) const FIELD_NAMES: [&str; 4] = ["class", "type", "key", "value"];

const FUNCTION_NAMES: [&str; 11] = [
    "gt", "ge", "lt", "le", "range", "in", "regexp", "network", "not", "and", "or",
];

/// How many closest facts an explanation shows.
const SHOWN_FACTS: usize = 3;

/// Largest compiled size of one regular expression in a spec.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Deepest nesting of functions in a spec field.
const MAX_NESTING: usize = 32;

mod explain;
mod facts;
mod networks;
mod numbers;
mod parser;
mod search;
mod specs;
#[cfg(test)]
mod tests;

pub use explain::*;
pub use facts::*;
use networks::*;
use numbers::*;
pub use parser::*;
pub use search::*;
pub use specs::*;
