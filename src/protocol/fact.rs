//! One hardware fact, eDeploy's `(class, type, key, value)`, and its JSON
//! form: a 4-element array. The agent makes facts from its inventory
//! ([`super::facts`]); the server's matcher reads them
//! (`crate::profiles::matcher`).

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};
use std::fmt;

/// One hardware fact: `(class, type, key, value)`.
///
/// In JSON a fact is a 4-element array. When reading, numbers and booleans
/// are accepted in place of texts and turned into their text
/// (`["memory", "banks", "count", 16]` reads as value `"16"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fact {
    pub class: String,
    /// The fact's type (`type` is a Rust keyword).
    pub kind: String,
    pub key: String,
    pub value: String,
}

impl Fact {
    pub fn new(
        class: impl Into<String>,
        kind: impl Into<String>,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        Fact {
            class: class.into(),
            kind: kind.into(),
            key: key.into(),
            value: value.into(),
        }
    }

    /// Field by position: 0 class, 1 type, 2 key, 3 value.
    pub fn field(&self, i: usize) -> &str {
        match i {
            0 => &self.class,
            1 => &self.kind,
            2 => &self.key,
            _ => &self.value,
        }
    }
}

impl Serialize for Fact {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut t = serializer.serialize_tuple(4)?;
        t.serialize_element(&self.class)?;
        t.serialize_element(&self.kind)?;
        t.serialize_element(&self.key)?;
        t.serialize_element(&self.value)?;
        t.end()
    }
}

impl<'de> Deserialize<'de> for Fact {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(FactVisitor)
    }
}

struct FactVisitor;

impl<'de> Visitor<'de> for FactVisitor {
    type Value = Fact;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a fact: an array of 4 texts [class, type, key, value]")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Fact, A::Error> {
        let mut next = |i: usize| match seq.next_element::<Scalar>() {
            Ok(Some(Scalar(s))) => Ok(s),
            Ok(None) => Err(de::Error::invalid_length(i, &self)),
            Err(e) => Err(e),
        };
        let fact = Fact {
            class: next(0)?,
            kind: next(1)?,
            key: next(2)?,
            value: next(3)?,
        };
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_length(5, &self));
        }
        Ok(fact)
    }
}

/// A fact field read from JSON: a text, a number or a boolean.
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl Visitor<'_> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a text, a number or a boolean")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }
}
