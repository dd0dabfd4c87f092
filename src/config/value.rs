//! The value types and helpers the sections share: durations as people write them, lists a
//! file may give as one value, values a key reads as its flag does, and a default in help.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, IntoDeserializer, SeqAccess, Visitor};

/// A duration as flags and the file write it: `0s`, `30s`, `5m`, `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl FromStr for Span {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s.trim())
            .map(Span)
            .map_err(|e| format!("invalid duration {s:?}: {e} (examples: 0s, 30s, 5m, 1h)"))
    }
}

/// In the largest of h, m and s that divides it (`24h`, `5m`, `0s`), as the README writes defaults.
impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        match (self.0.subsec_nanos(), secs) {
            (0, s) if s > 0 && s % 3600 == 0 => write!(f, "{}h", s / 3600),
            (0, s) if s > 0 && s % 60 == 0 => write!(f, "{}m", s / 60),
            (0, s) => write!(f, "{s}s"),
            _ => write!(f, "{}", humantime::format_duration(self.0)),
        }
    }
}

/// A type's config-file value is read from the same text as its flag (its `FromStr`), so a
/// key accepts exactly what its flag does and fails with the same message. (The text is
/// parsed inside the YAML reader's call, so that its errors get the key and line.)
macro_rules! deserialize_from_str {
    ($($t:ty),+ $(,)?) => {$(
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str($crate::config::value::FromText(std::marker::PhantomData))
            }
        }
    )+};
}
pub(super) use deserialize_from_str;

/// The visitor of [`deserialize_from_str!`].
pub struct FromText<T>(pub std::marker::PhantomData<T>);

impl<T: FromStr<Err = String>> Visitor<'_> for FromText<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }
}

deserialize_from_str!(Span);

/// A flag's help text with its default, as clap would show one: `text [default: value]`.
pub fn with_default(text: &str, default: impl fmt::Display) -> String {
    format!("{text} [default: {default}]")
}

/// The name a [`clap::ValueEnum`] value has on the command line and in the file.
pub fn enum_name(value: &impl clap::ValueEnum) -> String {
    value.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
}

/// A repeatable flag's key: a list, or one value (`crl-file: a.pem`); no value is none.
/// Each element is read as its flag reads it, and its error names the key.
pub fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    struct OneOrMany<T>(std::marker::PhantomData<T>);

    impl<'de, T: serde::Deserialize<'de>> Visitor<'de> for OneOrMany<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a value or a list of values")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<T>, E> {
            T::deserialize(v.into_deserializer()).map(|one| vec![one])
        }

        fn visit_unit<E: de::Error>(self) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut all = Vec::new();
            while let Some(one) = seq.next_element()? {
                all.push(one);
            }
            Ok(all)
        }
    }

    d.deserialize_any(OneOrMany(std::marker::PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_and_show_as_the_readme_writes_them() {
        for (text, secs) in [("0s", 0), ("30s", 30), ("5m", 300), ("1h", 3600), ("24h", 86400), ("90s", 90)] {
            let span: Span = text.parse().unwrap();
            assert_eq!(span.0, Duration::from_secs(secs), "{text}");
            assert_eq!(span.to_string(), text);
        }
        assert_eq!(Span(Duration::from_millis(1500)).to_string(), "1s 500ms");
        let e = "soon".parse::<Span>().unwrap_err();
        assert!(e.contains("invalid duration \"soon\"") && e.contains("examples"), "{e}");
    }
}
