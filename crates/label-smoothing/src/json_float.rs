//! Floats that keep their value through JSON, infinities and NaN included (`serde` feature).
//!
//! JSON has no number for an infinity or a NaN, and serde_json writes them as `null`, which reads back as
//! nothing (or fails). The fields of this crate's reports that can be non-finite (a negative log-likelihood of
//! probabilities with a zero on the true class is `+inf`) use this module instead: a finite value is a JSON
//! number as before, `+inf` is the string `"inf"`, `-inf` is `"-inf"` and NaN is `"nan"` (the spellings
//! Python's `float()` and Rust's `str::parse::<f64>` read). Reading accepts numbers and those three strings,
//! and refuses `null` and anything else with a message naming what it got.
//!
//! Use it on a field of type `f64`, `[f64; 2]` or `Vec<f64>`, the same with `f32` (written in `f32`'s shortest
//! form, as serde_json writes it), or an `Option` of one of those. It reads JSON (any self-describing format),
//! not formats that need the type up front:
//!
//! ```
//! # #[cfg(feature = "serde")] {
//! #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
//! struct Row {
//!     #[serde(with = "label_smoothing::json_float")]
//!     nll: f64,
//! }
//! let json = serde_json::to_string(&Row { nll: f64::INFINITY }).unwrap();
//! assert_eq!(json, r#"{"nll":"inf"}"#);
//! assert_eq!(serde_json::from_str::<Row>(&json).unwrap(), Row { nll: f64::INFINITY });
//! # }
//! ```

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// One float in the representation above: `f64`, or `f32` written in its own shortest form.
#[derive(Clone, Copy)]
struct F<T>(T);

trait Float: Copy {
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
    fn write_finite<S: Serializer>(self, s: S) -> Result<S::Ok, S::Error>;
}

impl Float for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
    fn write_finite<S: Serializer>(self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self)
    }
}

impl Float for f32 {
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn write_finite<S: Serializer>(self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f32(self)
    }
}

impl<T: Float> Serialize for F<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.0.to_f64();
        if v.is_finite() {
            self.0.write_finite(s)
        } else if v.is_nan() {
            s.serialize_str("nan")
        } else if v > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }
}

impl<'de, T: Float> Deserialize<'de> for F<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<T: Float> Visitor<'_> for V<T> {
            type Value = F<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(r#"a number, "inf", "-inf" or "nan""#)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<F<T>, E> {
                Ok(F(T::from_f64(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<F<T>, E> {
                Ok(F(T::from_f64(v as f64)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<F<T>, E> {
                Ok(F(T::from_f64(v as f64)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<F<T>, E> {
                match v {
                    "inf" => Ok(F(T::from_f64(f64::INFINITY))),
                    "-inf" => Ok(F(T::from_f64(f64::NEG_INFINITY))),
                    "nan" => Ok(F(T::from_f64(f64::NAN))),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// The shapes of float fields this module serialises.
pub trait JsonFloats: Sized {
    /// Writes `self` with non-finite values as strings.
    fn write<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error>;
    /// Reads what [`JsonFloats::write`] wrote.
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error>;
}

macro_rules! floats {
    ($t:ty) => {
        impl JsonFloats for $t {
            fn write<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                F(*self).serialize(s)
            }
            fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                F::<$t>::deserialize(d).map(|f| f.0)
            }
        }

        impl JsonFloats for [$t; 2] {
            fn write<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                [F(self[0]), F(self[1])].serialize(s)
            }
            fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                <[F<$t>; 2]>::deserialize(d).map(|[a, b]| [a.0, b.0])
            }
        }

        impl JsonFloats for Vec<$t> {
            fn write<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.iter().map(|&v| F(v)))
            }
            fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Vec::<F<$t>>::deserialize(d).map(|v| v.into_iter().map(|f| f.0).collect())
            }
        }
    };
}

floats!(f64);
floats!(f32);

/// `None` is `null`; a present value as its type writes it.
impl<T: JsonFloats> JsonFloats for Option<T> {
    fn write<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Inner<'a, T>(&'a T);
        impl<T: JsonFloats> Serialize for Inner<'_, T> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.0.write(s)
            }
        }
        match self {
            Some(v) => s.serialize_some(&Inner(v)),
            None => s.serialize_none(),
        }
    }
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Inner<T>(T);
        impl<'de, T: JsonFloats> Deserialize<'de> for Inner<T> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                T::read(d).map(Inner)
            }
        }
        Option::<Inner<T>>::deserialize(d).map(|o| o.map(|i| i.0))
    }
}

/// Serialises a float field (for `#[serde(with = "label_smoothing::json_float")]`).
pub fn serialize<T: JsonFloats, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    v.write(s)
}

/// Deserialises a float field written by [`serialize`].
pub fn deserialize<'de, T: JsonFloats, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    T::read(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, Debug)]
    struct All {
        #[serde(with = "super")]
        a: f64,
        #[serde(with = "super")]
        b: [f64; 2],
        #[serde(with = "super")]
        c: Option<[f64; 2]>,
        #[serde(with = "super")]
        d: Vec<f64>,
        #[serde(with = "super")]
        e: Option<f64>,
    }

    fn same(x: f64, y: f64) -> bool {
        x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
    }

    #[test]
    fn every_value_round_trips_and_finite_ones_stay_numbers() {
        let values = [
            0.0,
            -0.0,
            1.5,
            f64::MAX,
            f64::MIN_POSITIVE / 3.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ];
        for &v in &values {
            let all = All {
                a: v,
                b: [v, 1.0],
                c: Some([2.0, v]),
                d: vec![v, v],
                e: Some(v),
            };
            let json = serde_json::to_string(&all).unwrap();
            let back: All = serde_json::from_str(&json).unwrap();
            assert!(
                same(back.a, v) && same(back.b[0], v) && same(back.c.unwrap()[1], v),
                "{json}"
            );
            assert!(back.d.iter().all(|&x| same(x, v)) && same(back.e.unwrap(), v), "{json}");
            // serde_json's own number for finite values; the standard JSON parser of serde_json reads it.
            let plain: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(plain["a"].is_number(), v.is_finite(), "{json}");
        }
        let none = All {
            a: 1.0,
            b: [0.0, 0.0],
            c: None,
            d: vec![],
            e: None,
        };
        let json = serde_json::to_string(&none).unwrap();
        assert!(json.contains(r#""c":null"#) && json.contains(r#""e":null"#), "{json}");
        let back: All = serde_json::from_str(&json).unwrap();
        assert!(back.c.is_none() && back.e.is_none());
    }

    #[test]
    fn spellings_are_fixed_and_null_is_refused() {
        let json = serde_json::to_string(&All {
            a: f64::INFINITY,
            b: [f64::NEG_INFINITY, f64::NAN],
            c: None,
            d: vec![],
            e: None,
        })
        .unwrap();
        assert!(json.starts_with(r#"{"a":"inf","b":["-inf","nan"]"#), "{json}");
        let err = serde_json::from_str::<All>(r#"{"a":null,"b":[0,0],"c":null,"d":[],"e":null}"#).unwrap_err();
        assert!(err.to_string().contains(r#"a number, "inf", "-inf" or "nan""#), "{err}");
        let err = serde_json::from_str::<All>(r#"{"a":"Infinity","b":[0,0],"c":null,"d":[],"e":null}"#).unwrap_err();
        assert!(err.to_string().contains("Infinity"), "{err}");
    }

    #[test]
    fn float32_losses_keep_their_shortest_form() {
        use crate::Loss;
        assert_eq!(serde_json::to_string(&Loss::Scalar(0.1)).unwrap(), "0.1");
        let per_row = Loss::PerRow(vec![0.1, f32::INFINITY, 2.5]);
        let json = serde_json::to_string(&per_row).unwrap();
        assert_eq!(json, r#"[0.1,"inf",2.5]"#);
        assert_eq!(serde_json::from_str::<Loss>(&json).unwrap(), per_row);
        assert_eq!(
            serde_json::from_str::<Loss>(r#""inf""#).unwrap(),
            Loss::Scalar(f32::INFINITY)
        );
    }
}
