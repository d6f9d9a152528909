//! Profile files: one TOML file per profile in the profiles directory.
//!
//! ```toml
//! name = "compute"
//! order = 20                  # lower is tried first
//! quota = 200                 # or "unlimited"
//! role = "compute"            # settings later phases consume
//! os = "debian-12"
//! specs = [
//!   ["cpu", "physical", "number", "ge(2)"],
//!   ["memory", "total", "size", "ge(64GiB)"],
//!   ["system", "product", "serial", "$$serial"],
//! ]
//! [hostnames]
//! range = "compute-{001..250}"        # or: list = ["a", "b"]
//! [networks.provisioning]
//! range = "10.0.1.10-10.0.1.250"      # IPv4 or IPv6; or: list = [...]
//! [[pin]]                              # a given machine gets given entries
//! match = { serial = "CZ3404YWNN" }   # keys are the specs' $$ variables
//! hostname = "compute-special"
//! addresses = { provisioning = "10.0.1.5" }
//! [bios]                               # BIOS attributes, set and verified while cleaning
//! ProcVirtualization = "Enabled"
//! [raid]                               # one volume, made while cleaning:
//! level = "1"                          # 0 1 5 6 10 50 60; and disks = N (free disks)
//! disks = 2                            # or drives = ["id", ...]; capacity_bytes, name
//! [root_disk]                          # free-form, for later phases
//! ```
//!
//! A broken file is refused with its path, line and reason; [`load_dir`]
//! refuses the whole set so the last good one stays in force.

use super::matcher::{DEFAULT_STEP_LIMIT, Facts, MatchError, SpecSet, explain, matches};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use utoipa::ToSchema;

/// The most entries one pool may expand to.
pub const MAX_POOL: usize = 65_536;

/// A profile file that cannot be used, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, ToSchema)]
#[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ProfileError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

/// How many nodes a profile may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Quota {
    Count(u32),
    #[serde(serialize_with = "unlimited", deserialize_with = "the_word_unlimited")]
    Unlimited,
}

fn unlimited<S: serde::Serializer>(s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("unlimited")
}

fn the_word_unlimited<'de, D: serde::Deserializer<'de>>(d: D) -> Result<(), D::Error> {
    match String::deserialize(d)?.as_str() {
        "unlimited" => Ok(()),
        o => Err(serde::de::Error::custom(format!(
            "'{o}' is not a count or \"unlimited\""
        ))),
    }
}

impl std::fmt::Display for Quota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Quota::Count(n) => write!(f, "{n}"),
            Quota::Unlimited => f.write_str("unlimited"),
        }
    }
}

/// A pinned machine: the node whose `$$` captures equal `matches` gets these entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Pin {
    #[serde(rename = "match")]
    pub matches: BTreeMap<String, String>,
    pub hostname: Option<String>,
    pub addresses: BTreeMap<String, String>,
}

/// A loaded, validated profile.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Profile {
    pub name: String,
    pub order: i64,
    pub quota: Quota,
    #[schema(value_type = Vec<Vec<String>>)]
    #[serde(serialize_with = "spec_source")]
    pub specs: SpecSet,
    /// Hostnames in the order they are handed out.
    pub hostnames: Vec<String>,
    /// Addresses per network, in the order they are handed out.
    pub networks: BTreeMap<String, Vec<String>>,
    pub pins: Vec<Pin>,
    pub role: Option<String>,
    pub os: Option<String>,
    #[schema(value_type = Object)]
    pub bios: serde_json::Value,
    #[schema(value_type = Object)]
    pub raid: serde_json::Value,
    #[schema(value_type = Object)]
    pub root_disk: serde_json::Value,
    pub file: String,
}

fn spec_source<S: serde::Serializer>(s: &SpecSet, ser: S) -> Result<S::Ok, S::Error> {
    s.source().serialize(ser)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireProfile {
    name: String,
    #[serde(default)]
    order: i64,
    quota: toml::Spanned<toml::Value>,
    specs: Vec<toml::Spanned<[String; 4]>>,
    #[serde(default)]
    hostnames: Option<toml::Spanned<WirePool>>,
    #[serde(default)]
    networks: BTreeMap<String, toml::Spanned<WirePool>>,
    #[serde(default)]
    pin: Vec<toml::Spanned<WirePin>>,
    role: Option<String>,
    os: Option<String>,
    #[serde(default)]
    bios: toml::Table,
    #[serde(default)]
    raid: toml::Table,
    #[serde(default)]
    root_disk: toml::Table,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WirePool {
    range: Option<String>,
    list: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WirePin {
    #[serde(rename = "match")]
    matches: BTreeMap<String, String>,
    hostname: Option<String>,
    #[serde(default)]
    addresses: BTreeMap<String, String>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Expands `prefix{001..250}suffix` into names (the width of the first number pads).
pub fn expand_names(range: &str) -> Result<Vec<String>, String> {
    let (Some(open), Some(close)) = (range.find('{'), range.find('}')) else {
        return Err(format!(
            "'{range}' has no {{first..last}} part (write e.g. compute-{{001..250}})"
        ));
    };
    let inner = range.get(open + 1..close).ok_or("'}' before '{'")?;
    let (a, b) = inner
        .split_once("..")
        .ok_or_else(|| format!("'{{{inner}}}' is not first..last"))?;
    let (first, last): (u64, u64) = (
        a.parse().map_err(|_| format!("'{a}' is not a number"))?,
        b.parse().map_err(|_| format!("'{b}' is not a number"))?,
    );
    if last < first {
        return Err(format!("{{{inner}}} counts down"));
    }
    if (last - first) as usize >= MAX_POOL {
        return Err(format!("{{{inner}}} has more than {MAX_POOL} entries"));
    }
    let width = a.len();
    let (pre, post) = (&range[..open], &range[close + 1..]);
    Ok((first..=last)
        .map(|n| format!("{pre}{n:0width$}{post}"))
        .collect())
}

/// Expands `10.0.1.10-10.0.1.250` (or an IPv6 pair) into addresses.
pub fn expand_addresses(range: &str) -> Result<Vec<String>, String> {
    let (a, b) = range
        .split_once('-')
        .ok_or_else(|| format!("'{range}' is not first-last (write e.g. 10.0.1.10-10.0.1.250)"))?;
    let parse = |s: &str| {
        s.trim()
            .parse::<IpAddr>()
            .map_err(|_| format!("'{}' is not an IP address", s.trim()))
    };
    let (a, b) = (parse(a)?, parse(b)?);
    let (lo, hi, v4) = match (a, b) {
        (IpAddr::V4(x), IpAddr::V4(y)) => {
            (u128::from(u32::from(x)), u128::from(u32::from(y)), true)
        }
        (IpAddr::V6(x), IpAddr::V6(y)) => (u128::from(x), u128::from(y), false),
        _ => return Err(format!("'{range}' mixes IPv4 and IPv6")),
    };
    if hi < lo {
        return Err(format!("'{range}' counts down"));
    }
    if hi - lo >= MAX_POOL as u128 {
        return Err(format!("'{range}' has more than {MAX_POOL} addresses"));
    }
    Ok((lo..=hi)
        .map(|n| {
            if v4 {
                std::net::Ipv4Addr::from(n as u32).to_string()
            } else {
                std::net::Ipv6Addr::from(n).to_string()
            }
        })
        .collect())
}

fn pool(p: &WirePool, names: bool) -> Result<Vec<String>, String> {
    let entries = match (&p.range, &p.list) {
        (Some(r), None) if names => expand_names(r)?,
        (Some(r), None) => expand_addresses(r)?,
        (None, Some(l)) => {
            if !names {
                for a in l {
                    a.parse::<IpAddr>()
                        .map_err(|_| format!("'{a}' is not an IP address"))?;
                }
            }
            l.clone()
        }
        _ => return Err("give exactly one of 'range' or 'list'".into()),
    };
    let mut seen = BTreeSet::new();
    if let Some(d) = entries.iter().find(|e| !seen.insert(e.as_str())) {
        return Err(format!("'{d}' is listed twice"));
    }
    Ok(entries)
}

fn to_json(t: toml::Table) -> serde_json::Value {
    serde_json::to_value(t).unwrap_or(serde_json::Value::Null)
}

/// Parses one profile file's text (`file` names it in errors).
pub fn parse_profile(text: &str, file: &str) -> Result<Profile, ProfileError> {
    let err = |line: Option<usize>, message: String| ProfileError {
        file: file.to_string(),
        line,
        message,
    };
    let w: WireProfile = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start));
        err(line, e.message().to_string())
    })?;
    crate::node::validate_label("name", &w.name).map_err(|e| err(None, e.to_string()))?;
    let quota_line = Some(line_of(text, w.quota.span().start));
    let quota = match w.quota.get_ref() {
        toml::Value::Integer(n) if *n >= 0 && *n <= i64::from(u32::MAX) => Quota::Count(*n as u32),
        toml::Value::String(s) if s == "unlimited" => Quota::Unlimited,
        other => {
            return Err(err(
                quota_line,
                format!("quota: {other} is not a count or \"unlimited\""),
            ));
        }
    };
    let raw: Vec<[String; 4]> = w.specs.iter().map(|s| s.get_ref().clone()).collect();
    let specs = SpecSet::parse(&raw).map_err(|e| {
        let line = w.specs.get(e.spec).map(|s| line_of(text, s.span().start));
        err(line, e.to_string())
    })?;
    let hostnames = match &w.hostnames {
        Some(h) => pool(h.get_ref(), true).map_err(|m| {
            err(
                Some(line_of(text, h.span().start)),
                format!("hostnames: {m}"),
            )
        })?,
        None => Vec::new(),
    };
    let mut networks = BTreeMap::new();
    for (net, p) in &w.networks {
        let entries = pool(p.get_ref(), false).map_err(|m| {
            err(
                Some(line_of(text, p.span().start)),
                format!("networks.{net}: {m}"),
            )
        })?;
        networks.insert(net.clone(), entries);
    }
    let keys = specs.cmdb_keys();
    let mut pins = Vec::new();
    for p in &w.pin {
        let line = Some(line_of(text, p.span().start));
        let p = p.get_ref();
        if p.matches.is_empty() {
            return Err(err(line, "pin: 'match' names no $$ variable".into()));
        }
        for k in p.matches.keys() {
            if !keys.contains(k) {
                let known = keys
                    .iter()
                    .map(|k| format!("$${k}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(err(
                    line,
                    format!(
                        "pin: '{k}' is not a $$ variable of the specs (they have: {})",
                        if known.is_empty() {
                            "none".into()
                        } else {
                            known
                        }
                    ),
                ));
            }
        }
        for (net, a) in &p.addresses {
            if !networks.contains_key(net) {
                return Err(err(
                    line,
                    format!("pin: network '{net}' is not defined in [networks]"),
                ));
            }
            a.parse::<IpAddr>()
                .map_err(|_| err(line, format!("pin: '{a}' is not an IP address")))?;
        }
        pins.push(Pin {
            matches: p.matches.clone(),
            hostname: p.hostname.clone(),
            addresses: p.addresses.clone(),
        });
    }
    Ok(Profile {
        name: w.name,
        order: w.order,
        quota,
        specs,
        hostnames,
        networks,
        pins,
        role: w.role,
        os: w.os,
        bios: to_json(w.bios),
        raid: to_json(w.raid),
        root_disk: to_json(w.root_disk),
        file: file.to_string(),
    })
}

/// Every profile of a directory, sorted by order then name. Any broken file, or
/// two files with one name, refuses the whole set.
pub fn load_dir(dir: &Path) -> Result<Vec<Profile>, ProfileError> {
    let io = |p: &Path, e: std::io::Error| ProfileError {
        file: p.display().to_string(),
        line: None,
        message: e.to_string(),
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut out: Vec<Profile> = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| io(&f, e))?;
        let p = parse_profile(&text, &f.display().to_string())?;
        if let Some(other) = out.iter().find(|o| o.name == p.name) {
            return Err(ProfileError {
                file: p.file.clone(),
                line: None,
                message: format!("profile '{}' is also defined in {}", p.name, other.file),
            });
        }
        out.push(p);
    }
    out.sort_by(|a, b| (a.order, &a.name).cmp(&(b.order, &b.name)));
    Ok(out)
}

/// Whether one profile fits a node's facts, and why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Verdict {
    pub profile: String,
    pub matched: bool,
    /// Why it did not match (the first spec no fact satisfies, and the closest facts).
    pub reason: Option<String>,
    /// What the specs captured, when it matched.
    pub captures: BTreeMap<String, String>,
}

/// Tries every profile, in order, against the facts.
pub fn evaluate(profiles: &[Profile], facts: &Facts) -> Vec<Verdict> {
    profiles
        .iter()
        .map(|p| {
            let verdict = |matched, reason, captures| Verdict {
                profile: p.name.clone(),
                matched,
                reason,
                captures,
            };
            match matches(&p.specs, facts, DEFAULT_STEP_LIMIT) {
                Ok(Some(m)) => verdict(true, None, m.bindings),
                Ok(None) => {
                    let why = match explain(&p.specs, facts, DEFAULT_STEP_LIMIT) {
                        Ok(Some(e)) => e.message,
                        Ok(None) => "no match".into(),
                        Err(MatchError::SearchLimit { steps }) => {
                            format!("search gave up after {steps} steps")
                        }
                    };
                    verdict(false, Some(format!("{}: {why}", p.name)), BTreeMap::new())
                }
                Err(MatchError::SearchLimit { steps }) => verdict(
                    false,
                    Some(format!(
                        "{}: the specs are too ambiguous: search gave up after {steps} steps",
                        p.name
                    )),
                    BTreeMap::new(),
                ),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Fact;

    fn fixture(n: u32) -> Facts {
        let path = format!(
            "{}/tests/fixtures/hw-samples/hp-bl460c-gen8-{n:02}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let facts: Vec<Fact> =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        Facts::new(facts)
    }

    fn shipped() -> Vec<Profile> {
        load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles"))
            .expect("the shipped profiles load")
    }

    #[test]
    fn quota_reads_what_it_writes() {
        for (q, text) in [(Quota::Count(3), "3"), (Quota::Unlimited, "\"unlimited\"")] {
            assert_eq!(serde_json::to_string(&q).unwrap(), text);
            assert_eq!(serde_json::from_str::<Quota>(text).unwrap(), q);
        }
        assert_eq!(Quota::Unlimited.to_string(), "unlimited");
        assert!(serde_json::from_str::<Quota>("\"many\"").is_err());
    }

    #[test]
    fn shipped_examples_load_in_order() {
        let p = shipped();
        let names: Vec<&str> = p.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["controller", "storage", "network", "compute"]);
        let compute = p.iter().find(|p| p.name == "compute").unwrap();
        assert_eq!(compute.quota, Quota::Unlimited);
        assert_eq!(
            compute.hostnames.first().map(String::as_str),
            Some("compute-001")
        );
        assert_eq!(compute.networks["provisioning"].len(), 241);
        let storage = p.iter().find(|p| p.name == "storage").unwrap();
        assert_eq!(
            storage.hostnames.last().map(String::as_str),
            Some("storage-100")
        );
        let controller = p.iter().find(|p| p.name == "controller").unwrap();
        assert_eq!(controller.quota, Quota::Count(3));
        assert_eq!(controller.pins.len(), 1);
    }

    #[test]
    fn shipped_examples_against_the_fixtures() {
        let p = shipped();
        let mut chosen = BTreeMap::new();
        for n in 1..=19 {
            let v = evaluate(&p, &fixture(n));
            let first = v
                .iter()
                .find(|v| v.matched)
                .map(|v| v.profile.clone())
                .unwrap_or_else(|| "none".into());
            *chosen.entry(first).or_insert(0) += 1;
            for r in v.iter().filter(|v| !v.matched) {
                assert!(
                    r.reason
                        .as_deref()
                        .is_some_and(|s| s.len() > r.profile.len() + 2),
                    "{r:?}"
                );
            }
        }
        // Three blades are controllers by serial, the 12-disk one is storage,
        // none has the four NICs a network node needs, the rest are computes.
        assert_eq!(chosen.get("controller"), Some(&3), "{chosen:?}");
        assert_eq!(chosen.get("storage"), Some(&1), "{chosen:?}");
        assert_eq!(chosen.get("compute"), Some(&15), "{chosen:?}");
        assert_eq!(chosen.get("network"), None, "{chosen:?}");
        let v = evaluate(&p, &fixture(2));
        let storage = v.iter().find(|v| v.profile == "storage").unwrap();
        assert!(
            storage.reason.as_deref().unwrap().starts_with("storage: "),
            "{storage:?}"
        );
        let network = v.iter().find(|v| v.profile == "network").unwrap();
        assert!(!network.matched && network.reason.is_some(), "{network:?}");
        let m = v.iter().find(|v| v.profile == "controller").unwrap();
        assert_eq!(
            m.captures.get("serial").map(String::as_str),
            Some("CZ3404YWNR")
        );
    }

    #[test]
    fn broken_files_name_file_line_and_reason() {
        let ok = "name = \"x\"\nquota = 1\nspecs = [\n  [\"cpu\", \"physical\", \"number\", \"ge(2)\"],\n]\n";
        assert!(parse_profile(ok, "x.toml").is_ok());
        let cases = [
            (
                "name = \"x\"\nquota = 1\nspecs = [\n  [\"cpu\", \"physical\", \"number\", \"ge(2\"],\n]\n",
                Some(4),
                "unclosed",
            ),
            ("name = \"x\"\nquota = -1\nspecs = []\n", Some(2), "quota"),
            (
                "name = \"x\"\nquota = 1\nspecs = []\ncolour = 1\n",
                Some(4),
                "colour",
            ),
            (
                "name = \"x\"\nquota = 1\nspecs = []\n[hostnames]\nrange = \"c-{9..1}\"\n",
                Some(4),
                "counts down",
            ),
            (
                "name = \"x\"\nquota = 1\nspecs = []\n[networks.p]\nrange = \"10.0.0.1-10.0.0.300\"\n",
                Some(4),
                "not an IP",
            ),
            (
                "name = \"x\"\nquota = 1\nspecs = [[\"a\",\"b\",\"c\",\"$$mac\"]]\n[[pin]]\nmatch = { serial = \"1\" }\n",
                Some(4),
                "$$mac",
            ),
            (
                "name = \"x\"\nquota = 1\nspecs = [[\"a\", \"b\"]]\n",
                Some(3),
                "",
            ),
        ];
        for (text, line, needle) in cases {
            let e = parse_profile(text, "x.toml").unwrap_err();
            assert_eq!(e.line, line, "{e}");
            assert!(
                e.to_string().starts_with("x.toml:") && e.message.contains(needle),
                "{e}"
            );
        }
    }

    #[test]
    fn a_broken_file_refuses_the_whole_set() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.toml"),
            "name = \"a\"\nquota = 1\nspecs = []\n",
        )
        .unwrap();
        assert_eq!(load_dir(dir.path()).unwrap().len(), 1);
        std::fs::write(
            dir.path().join("b.toml"),
            "name = \"a\"\nquota = 1\nspecs = []\n",
        )
        .unwrap();
        let e = load_dir(dir.path()).unwrap_err();
        assert!(e.message.contains("also defined"), "{e}");
    }

    #[test]
    fn pools_expand() {
        assert_eq!(
            expand_names("c-{08..11}.lab").unwrap(),
            ["c-08.lab", "c-09.lab", "c-10.lab", "c-11.lab"]
        );
        assert_eq!(
            expand_addresses("10.0.0.254-10.0.1.1").unwrap(),
            ["10.0.0.254", "10.0.0.255", "10.0.1.0", "10.0.1.1"]
        );
        assert_eq!(expand_addresses("fd00::fe-fd00::101").unwrap().len(), 4);
        assert!(expand_addresses("10.0.0.1-fd00::1").is_err());
        assert!(expand_names("c-{1..100000}").is_err());
    }
}
