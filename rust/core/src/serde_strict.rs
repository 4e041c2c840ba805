//! Strict deserializers for fields where a lenient conversion would hide a user's mistake.

use std::fmt;

use serde::de::{Deserializer, Error as _, Visitor};

/// A boolean that must be given as a boolean: some front ends (a Python dict through
/// pythonize) would otherwise read any truthy value, e.g. the string "no", as `true`.
pub(crate) fn strict_bool<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    struct Strict;
    impl Visitor<'_> for Strict {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("true or false")
        }
        fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<bool, E> {
            Ok(value)
        }
        fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<bool, E> {
            Err(E::invalid_type(serde::de::Unexpected::Str(value), &self))
        }
    }
    deserializer.deserialize_any(Strict).map_err(D::Error::custom)
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize)]
    struct Flag {
        #[serde(deserialize_with = "super::strict_bool")]
        on: bool,
    }

    #[test]
    fn only_booleans_pass() {
        assert!(serde_json::from_str::<Flag>(r#"{"on": true}"#).unwrap().on);
        assert!(serde_json::from_str::<Flag>(r#"{"on": "yes"}"#).is_err());
        assert!(serde_json::from_str::<Flag>(r#"{"on": 1}"#).is_err());
    }
}
