//! The bounds on what the API accepts, in one place: how many ports a node
//! may have and how long each kind of string in a request body may be.
//!
//! Every handler checks its body against these before anything reaches the
//! store, so an oversized field is a `400 invalid_field` naming the field and
//! its limit, never a slow write or a database error. The body itself is
//! bounded by `http.max_body_bytes` (1 MiB by default, `413` past it).

use super::FieldError;

/// Ports (MACs) of one node, the boot MAC included.
pub const MACS: usize = 64;
/// Node, profile and role names (DNS labels).
pub const NAME: usize = 63;
/// A BMC address: a host name (253) or a URL around one, with a port.
pub const BMC_ADDRESS: usize = 270;
/// A BMC user name.
pub const BMC_USERNAME: usize = 64;
/// A BMC password.
pub const BMC_PASSWORD: usize = 256;
/// An action's reason (maintenance, abort ...).
pub const REASON: usize = 1000;
/// An API token's name (what it is for).
pub const TOKEN_NAME: usize = 100;
/// A short word picked from a list (a power action, a boot mode, a RAID level).
pub const WORD: usize = 32;
/// An identifier the BMC gave (a disk, a volume, a storage controller) or a
/// volume's name.
pub const BMC_ID: usize = 256;
/// Member disks of one RAID volume.
pub const VOLUME_DRIVES: usize = 64;
/// BIOS attributes changed by one request.
pub const BIOS_ATTRIBUTES: usize = 512;
/// A BIOS attribute's name, or its value when it is a string.
pub const BIOS_VALUE: usize = 1024;
/// The agent's own bounds (a result message, a log line, lines per
/// request), kept with what the agent says.
pub use crate::protocol::{AGENT_LOG_LINE, AGENT_LOG_LINES, AGENT_MESSAGE};
/// Facts in one profile test.
pub const FACTS: usize = 20_000;
/// One part (class, type, key or value) of a fact.
pub const FACT_PART: usize = 4096;

/// Refuses a string longer than `max` characters, naming the field and the limit.
pub fn check_len(field: &str, value: &str, max: usize) -> Result<(), FieldError> {
    // Bytes bound characters from above: count characters only when needed.
    if value.len() <= max {
        return Ok(());
    }
    let n = value.chars().count();
    if n <= max {
        return Ok(());
    }
    Err(FieldError::new(
        field,
        format!("at most {max} characters (this one has {n})"),
    ))
}

/// [`check_len`] for an optional string.
pub fn check_opt(field: &str, value: Option<&str>, max: usize) -> Result<(), FieldError> {
    value.map_or(Ok(()), |v| check_len(field, v, max))
}

/// Refuses a list of more than `max` items, naming the field and the limit.
pub fn check_count(field: &str, n: usize, max: usize) -> Result<(), FieldError> {
    if n <= max {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("at most {max} entries (this one has {n})"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_name_the_field_and_the_limit() {
        assert!(check_len("name", &"a".repeat(63), NAME).is_ok());
        let e = check_len("name", &"a".repeat(10_000), NAME).unwrap_err();
        assert_eq!(
            e.to_string(),
            "name: at most 63 characters (this one has 10000)"
        );
        // Characters, not bytes.
        assert!(check_len("reason", &"é".repeat(1000), REASON).is_ok());
        assert!(check_opt("bmc.username", None, BMC_USERNAME).is_ok());
        let e = check_count("macs", 65, MACS).unwrap_err();
        assert_eq!(e.to_string(), "macs: at most 64 entries (this one has 65)");
    }
}
