//! How [`ExecutorConfig`](super::ExecutorConfig)'s values are written: durations, tmpfs
//! sizes, the block user and the builder's enums, each readable by hand and read back
//! exactly as written.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::ser::{Error as _, Serializer};
use serde::{Deserialize, Serialize};

use crate::execution::OutputLimit;
use crate::executor::PullPolicy;
use crate::runner::Strategy;

/// A duration: whole seconds as an integer (`60`), else the exact count with a unit
/// (`"1500ms"`, `"250000001ns"`); read from a number of seconds (`1.5`) or a string with
/// one of `ns`, `us`, `ms`, `s`, `m`, `h`.
pub(super) mod duration {
    use super::*;

    pub(in crate::config) fn serialize<S: Serializer>(
        d: &Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        if d.subsec_nanos() == 0 {
            s.serialize_u64(d.as_secs())
        } else if d.subsec_nanos() % 1_000_000 == 0 {
            s.serialize_str(&format!("{}ms", d.as_millis()))
        } else {
            s.serialize_str(&format!("{}ns", d.as_nanos()))
        }
    }

    pub(in crate::config) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor)
    }
}

/// An optional duration: `null` for none, else as [`duration`].
pub(super) mod opt_duration {
    use super::*;

    pub(in crate::config) fn serialize<S: Serializer>(
        d: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub(in crate::config) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        d.deserialize_any(OptVisitor(DurationVisitor))
    }
}

struct DurationVisitor;

impl<'de> Visitor<'de> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("seconds (60, 1.5) or a duration with a unit (\"500ms\", \"2m\")")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        u64::try_from(v)
            .map(Duration::from_secs)
            .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        Duration::try_from_secs_f64(v)
            .map_err(|_| E::invalid_value(de::Unexpected::Float(v), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        let bad = || E::invalid_value(de::Unexpected::Str(v), &self);
        let split = v.find(|c: char| c.is_ascii_alphabetic()).ok_or_else(bad)?;
        let (num, unit) = (v[..split].trim(), &v[split..]);
        let nanos_per: u64 = match unit {
            "ns" => 1,
            "us" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        // Integers exactly (a nanosecond count does not fit an f64), fractions through f64.
        if let Ok(n) = num.parse::<u64>() {
            let nanos = u128::from(n) * u128::from(nanos_per);
            let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| bad())?;
            return Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32));
        }
        let n: f64 = num.parse().map_err(|_| bad())?;
        Duration::try_from_secs_f64(n * nanos_per as f64 / 1e9).map_err(|_| bad())
    }
}

/// `null` as `None`, anything else through the inner visitor.
struct OptVisitor<V>(V);

macro_rules! forward {
    ($($name:ident: $t:ty),*) => {$(
        fn $name<E: de::Error>(self, v: $t) -> Result<Self::Value, E> {
            self.0.$name(v).map(Some)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for OptVisitor<V> {
    type Value = Option<V::Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)?;
        f.write_str(", or null")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    forward!(visit_u64: u64, visit_i64: i64, visit_f64: f64, visit_str: &str);
}

/// A tmpfs size: `"auto"` (`None`: the default, sized from the memory limit), `null`
/// (`Some(None)`: no tmpfs) or a byte count (`Some(Some(n))`).
pub(super) mod tmpfs {
    use super::*;

    pub(in crate::config) fn serialize<S: Serializer>(
        v: &Option<Option<u64>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            None => s.serialize_str("auto"),
            Some(None) => s.serialize_none(),
            Some(Some(n)) => s.serialize_u64(*n),
        }
    }

    pub(in crate::config) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<u64>>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Option<Option<u64>>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"auto\", null (no tmpfs) or a size in bytes")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Some(Some(v)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Some(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Some(None))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                match v {
                    "auto" => Ok(None),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A CPU count, which JSON cannot hold unless finite (serde_json would write `null`, read back
/// as no limit): refused instead.
pub(super) fn finite_cpus<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(c) if !c.is_finite() => Err(S::Error::custom(format!(
            "cpu_limit {c} is not a finite number"
        ))),
        _ => v.serialize(s),
    }
}

/// Who blocks run as, in an [`ExecutorConfig`](super::ExecutorConfig): the choices of
/// [`ExecutorBuilder::user`](crate::ExecutorBuilder::user),
/// [`host_user`](crate::ExecutorBuilder::host_user) and
/// [`trusted`](crate::ExecutorBuilder::trusted).
///
/// Written `null` ([`Default`](Self::Default)), a string (`"1000:1000"`,
/// [`Named`](Self::Named)), `{"from": "host"}` or `{"from": "image"}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BlockUser {
    /// Never root: the image's `USER` unless it is root, else the calling host user unless
    /// that is root, else [`NOBODY`](crate::NOBODY). The builder's default.
    #[default]
    Default,
    /// Exactly this user (`"1000"`, `"1000:1000"`, `"nobody"`, `"0"`).
    Named(String),
    /// The calling host user's uid:gid ([`host_user`](crate::ExecutorBuilder::host_user)).
    Host,
    /// The image's `USER`, root included ([`trusted`](crate::ExecutorBuilder::trusted)).
    Image,
}

#[derive(Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "a user (\"1000:1000\"), null, {\"from\": \"host\"} or {\"from\": \"image\"}"
)]
enum UserForm {
    Named(String),
    From { from: UserFrom },
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum UserFrom {
    Host,
    Image,
}

impl Serialize for BlockUser {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let form = match self {
            BlockUser::Default => None,
            BlockUser::Named(n) => Some(UserForm::Named(n.clone())),
            BlockUser::Host => Some(UserForm::From {
                from: UserFrom::Host,
            }),
            BlockUser::Image => Some(UserForm::From {
                from: UserFrom::Image,
            }),
        };
        form.serialize(s)
    }
}

impl<'de> Deserialize<'de> for BlockUser {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<BlockUser, D::Error> {
        Ok(match Option::<UserForm>::deserialize(d)? {
            None => BlockUser::Default,
            Some(UserForm::Named(n)) => BlockUser::Named(n),
            Some(UserForm::From {
                from: UserFrom::Host,
            }) => BlockUser::Host,
            Some(UserForm::From {
                from: UserFrom::Image,
            }) => BlockUser::Image,
        })
    }
}

/// [`Strategy`], as `"auto"`, `"agent"` or `"exec"`.
#[derive(Serialize, Deserialize)]
#[serde(remote = "Strategy", rename_all = "lowercase")]
pub(super) enum StrategyForm {
    Auto,
    Agent,
    Exec,
}

/// [`PullPolicy`], as `"missing"`, `"always"` or `"never"`.
#[derive(Serialize, Deserialize)]
#[serde(remote = "PullPolicy", rename_all = "lowercase")]
pub(super) enum PullForm {
    Missing,
    Always,
    Never,
}

/// [`OutputLimit`], as `"discard"` or `"kill"`.
#[derive(Serialize, Deserialize)]
#[serde(remote = "OutputLimit", rename_all = "lowercase")]
pub(super) enum OutputLimitForm {
    Discard,
    Kill,
}
