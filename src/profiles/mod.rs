//! Role profiles: what each machine becomes, decided by matching its hardware
//! facts against profile specs (eDeploy semantics, without eDeploy's bugs).
//!
//! - [`matcher`]: the pure pattern language, the backtracking search and the
//!   explanations of why a spec set does not match.
//! - [`profile`]: profile files (specs, quota, hostname and IP pools, pins,
//!   the settings later phases use), their loading and evaluation.

pub mod matcher;
pub mod profile;

pub use profile::{Profile, ProfileError, Verdict, evaluate, load_dir};

/// The profile set in force, shared by the API (which replaces it whole on a
/// reload) and the conductor (which reads a node's BIOS and RAID settings).
pub type SharedProfiles = std::sync::Arc<std::sync::RwLock<std::sync::Arc<Vec<Profile>>>>;

use crate::protocol::Fact;
use serde_json::Value;

/// The eDeploy-style facts of a stored inventory.
///
/// racklift-agent's inventory gives [`crate::protocol::facts::facts`]; an
/// inventory carrying `"facts": [[class, type, key, value], ...]` gives those;
/// otherwise nested objects `{class: {type: {key: value}}}` are flattened (a
/// list at the type level names each element by its `name` field, or its index).
pub fn facts_from_inventory(inventory: &Value) -> Vec<Fact> {
    if inventory.get("agent").is_some()
        && let Ok(inv) = serde_json::from_value::<crate::protocol::Inventory>(inventory.clone())
    {
        return crate::protocol::facts::facts(&inv);
    }
    if let Some(list) = inventory.get("facts").and_then(Value::as_array) {
        return list
            .iter()
            .filter_map(|f| serde_json::from_value(f.clone()).ok())
            .collect();
    }
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let mut out = Vec::new();
    let Some(classes) = inventory.as_object() else {
        return out;
    };
    for (class, types) in classes {
        let entries: Vec<(String, &Value)> = match types {
            Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), v)).collect(),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    (
                        v.get("name")
                            .and_then(text)
                            .unwrap_or_else(|| i.to_string()),
                        v,
                    )
                })
                .collect(),
            scalar => {
                if let Some(v) = text(scalar) {
                    out.push(Fact::new(class.clone(), "value", "value", v));
                }
                continue;
            }
        };
        for (kind, keys) in entries {
            match keys {
                Value::Object(m) => out.extend(m.iter().filter_map(|(k, v)| {
                    text(v).map(|v| Fact::new(class.clone(), kind.clone(), k.clone(), v))
                })),
                scalar => out.extend(
                    text(scalar).map(|v| Fact::new(class.clone(), kind.clone(), "value", v)),
                ),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn facts_from_lists_and_nested_objects() {
        let f = facts_from_inventory(
            &json!({"facts": [["disk", "sda", "size", "100"], ["memory", "banks", "count", 16]]}),
        );
        assert_eq!(
            f,
            [
                Fact::new("disk", "sda", "size", "100"),
                Fact::new("memory", "banks", "count", "16")
            ]
        );
        let f = facts_from_inventory(
            &json!({"system": {"product": {"serial": "SN1", "vendor": "HP"}}, "disk": [{"name": "vda", "size": 4}], "boot": "uefi"}),
        );
        assert!(f.contains(&Fact::new("system", "product", "serial", "SN1")));
        assert!(f.contains(&Fact::new("disk", "vda", "size", "4")));
        assert!(f.contains(&Fact::new("disk", "vda", "name", "vda")));
        assert!(f.contains(&Fact::new("boot", "value", "value", "uefi")));
    }
}
