//! Kubernetes resource quantities (`"100m"`, `"1.5"`, `"128Mi"`, `"1G"`, `"1e3"`).
//!
//! A quantity is kept exactly as `mantissa * 10^exp10 * 2^exp2` and converted
//! to integers the way apimachinery does: `value()` and `milli_value()` round
//! up, away from zero. Anything the grammar does not accept is an error, never
//! a panic; values beyond `i64` are an error too.

use std::fmt;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;

/// Why a quantity string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("quantity {input:?} is invalid: {reason}")]
pub struct QuantityError {
    pub input: String,
    pub reason: &'static str,
}

/// A parsed quantity: `mantissa * 10^exp10 * 2^exp2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    mantissa: i128,
    exp10: i32,
    exp2: u32,
}

/// More significant digits than this cannot be a real resource amount.
const MAX_DIGITS: usize = 30;
/// Exponents beyond this only ever overflow (or round to 0 / 1).
const MAX_EXP10: i32 = 60;

impl Quantity {
    pub fn parse(input: &str) -> Result<Quantity, QuantityError> {
        let err = |reason| QuantityError {
            input: input.to_string(),
            reason,
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(err("empty quantity"));
        }
        let bytes = s.as_bytes();
        let mut i = 0;
        let mut negative = false;
        if bytes[0] == b'+' || bytes[0] == b'-' {
            negative = bytes[0] == b'-';
            i = 1;
        }
        let mut mantissa: i128 = 0;
        let mut digits = 0usize;
        let mut frac_digits = 0i32;
        let mut seen_digit = false;
        let mut seen_dot = false;
        while i < bytes.len() {
            let c = bytes[i];
            if c.is_ascii_digit() {
                seen_digit = true;
                if mantissa != 0 || c != b'0' {
                    digits += 1;
                }
                if digits > MAX_DIGITS {
                    return Err(err("too many digits"));
                }
                mantissa = mantissa * 10 + i128::from(c - b'0');
                if seen_dot {
                    frac_digits += 1;
                }
            } else if c == b'.' && !seen_dot {
                seen_dot = true;
            } else {
                break;
            }
            i += 1;
        }
        if !seen_digit {
            return Err(err("expected a number"));
        }
        let suffix = &s[i..];
        let (exp10, exp2) = match suffix {
            "" => (0, 0),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            _ if suffix.starts_with('e') || suffix.starts_with('E') => {
                let exp = &suffix[1..];
                let digits_part = exp.strip_prefix(['+', '-']).unwrap_or(exp);
                if digits_part.is_empty()
                    || digits_part.len() > 4
                    || !digits_part.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(err("invalid exponent"));
                }
                let e: i32 = exp.parse().map_err(|_| err("invalid exponent"))?;
                (e, 0)
            }
            _ => return Err(err("unknown suffix")),
        };
        let exp10 = exp10 - frac_digits;
        if mantissa != 0 && exp10 > MAX_EXP10 {
            return Err(err("value too large"));
        }
        Ok(Quantity {
            mantissa: if negative { -mantissa } else { mantissa },
            exp10: exp10.clamp(-MAX_EXP10 - 1, MAX_EXP10),
            exp2,
        })
    }

    /// The value scaled by `10^scale`, rounded up away from zero.
    fn scaled(&self, scale: i32) -> Option<i64> {
        if self.mantissa == 0 {
            return Some(0);
        }
        let mut v = self.mantissa.checked_mul(1i128.checked_shl(self.exp2)?)?;
        let e = self.exp10 + scale;
        if e >= 0 {
            v = v.checked_mul(10i128.checked_pow(e as u32)?)?;
        } else {
            let Some(div) = 10i128.checked_pow((-e) as u32) else {
                // Smaller than any representable unit: rounds up to one unit.
                return Some(v.signum() as i64);
            };
            let q = v / div;
            v = if v % div != 0 { q + v.signum() } else { q };
        }
        i64::try_from(v).ok()
    }

    /// The value in units, rounded up (apimachinery's `Value()`).
    pub fn value(&self) -> Option<i64> {
        self.scaled(0)
    }

    /// The value in thousandths, rounded up (apimachinery's `MilliValue()`).
    pub fn milli_value(&self) -> Option<i64> {
        self.scaled(3)
    }

    pub fn is_negative(&self) -> bool {
        self.mantissa < 0
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}e{}*2^{}", self.mantissa, self.exp10, self.exp2)
    }
}

fn convert(q: &K8sQuantity, milli: bool) -> Result<i64, QuantityError> {
    let parsed = Quantity::parse(&q.0)?;
    let v = if milli {
        parsed.milli_value()
    } else {
        parsed.value()
    };
    v.ok_or_else(|| QuantityError {
        input: q.0.clone(),
        reason: "value too large",
    })
}

/// `q` in whole units, rounded up.
pub fn value_of(q: &K8sQuantity) -> Result<i64, QuantityError> {
    convert(q, false)
}

/// `q` in thousandths (millicores for cpu), rounded up.
pub fn milli_value_of(q: &K8sQuantity) -> Result<i64, QuantityError> {
    convert(q, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn milli(s: &str) -> i64 {
        Quantity::parse(s).unwrap().milli_value().unwrap()
    }
    fn val(s: &str) -> i64 {
        Quantity::parse(s).unwrap().value().unwrap()
    }

    #[test]
    fn cpu_forms() {
        assert_eq!(milli("100m"), 100);
        assert_eq!(milli("1.5"), 1500);
        assert_eq!(milli("2"), 2000);
        assert_eq!(milli("0.1"), 100);
        assert_eq!(milli(".5"), 500);
        assert_eq!(milli("1."), 1000);
        assert_eq!(milli("+250m"), 250);
        assert_eq!(milli("0"), 0);
        // Below a millicore rounds up, as MilliValue does.
        assert_eq!(milli("1u"), 1);
        assert_eq!(milli("100n"), 1);
        assert_eq!(milli("0.0001"), 1);
    }

    #[test]
    fn memory_forms() {
        assert_eq!(val("128Mi"), 128 * 1024 * 1024);
        assert_eq!(val("1G"), 1_000_000_000);
        assert_eq!(val("1e3"), 1000);
        assert_eq!(val("1E3"), 1000);
        assert_eq!(val("1.5Gi"), 1536 * 1024 * 1024);
        assert_eq!(val("1k"), 1000);
        assert_eq!(val("1Ki"), 1024);
        assert_eq!(val("2Ti"), 2 << 40);
        assert_eq!(val("1Ei"), 1 << 60);
        assert_eq!(val("12e-1"), 2, "rounds up");
        assert_eq!(val("100m"), 1, "rounds up");
        assert_eq!(val("-1.5"), -2, "rounds away from zero");
        assert_eq!(val("0.000Ki"), 0);
        assert_eq!(val("00012"), 12);
    }

    #[test]
    fn bad_quantities_are_errors() {
        for bad in [
            "", " ", "abc", "1x", "1.2.3", "Mi", "1MiB", "1e", "1e+", "e3", "1ee3", "--1", "1 Mi",
            "1e99999", ".", "+", "1K", "1mi",
        ] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let e = Quantity::parse("12q").unwrap_err();
        assert_eq!(e.to_string(), "quantity \"12q\" is invalid: unknown suffix");
    }

    #[test]
    fn too_large_is_an_error_not_a_panic() {
        assert!(Quantity::parse("1e60").unwrap().value().is_none());
        assert!(Quantity::parse("9999999999999999999999999999").is_ok());
        assert!(Quantity::parse("9999999999999999999999999999Ei")
            .unwrap()
            .value()
            .is_none());
        assert!(Quantity::parse("1234567890123456789012345678901").is_err());
        let q = K8sQuantity("1e30".into());
        assert_eq!(
            value_of(&q).unwrap_err().to_string(),
            "quantity \"1e30\" is invalid: value too large"
        );
        // Tiny values are representable: they round up.
        assert_eq!(val("1e-59"), 1);
        assert_eq!(val("1e-70"), 1);
    }
}
