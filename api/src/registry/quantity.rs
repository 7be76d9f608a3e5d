//! Resource quantities (`500m`, `1Gi`, `2`, `1e3`) as quota and LimitRange
//! admission add and compare them, printed back in Kubernetes' canonical
//! form (the format of the first operand, the largest exact suffix).

use std::cmp::Ordering;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    DecimalSi,
    BinarySi,
}

/// A quantity in thousandths of its unit (millicores, millibytes), rounded
/// up as Kubernetes rounds sub-milli values.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quantity {
    pub milli: i128,
    pub format: Format,
}

impl PartialEq for Quantity {
    fn eq(&self, o: &Self) -> bool {
        self.milli == o.milli
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Quantity {
    fn cmp(&self, o: &Self) -> Ordering {
        self.milli.cmp(&o.milli)
    }
}

const BINARY: [(&str, u32); 6] = [
    ("Ki", 10),
    ("Mi", 20),
    ("Gi", 30),
    ("Ti", 40),
    ("Pi", 50),
    ("Ei", 60),
];
const DECIMAL: [(&str, i32); 9] = [
    ("n", -9),
    ("u", -6),
    ("m", -3),
    ("k", 3),
    ("M", 6),
    ("G", 9),
    ("T", 12),
    ("P", 15),
    ("E", 18),
];

fn pow10(e: u32) -> i128 {
    10i128.pow(e)
}

impl Quantity {
    pub fn from_units(units: i128) -> Self {
        Self {
            milli: units * 1000,
            format: Format::DecimalSi,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
            .unwrap_or(s.len());
        let (num, suffix) = s.split_at(split);
        let (neg, num) = match num.strip_prefix('-') {
            Some(n) => (true, n),
            None => (false, num.strip_prefix('+').unwrap_or(num)),
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        if !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()) || frac.len() > 18 {
            return None;
        }
        let mantissa: i128 = format!("{int}{frac}").parse().ok()?;
        let den_digits = frac.len() as i32;
        // value = mantissa * 10^-den_digits * 2^bin * 10^dec
        let (bin, dec, format) = if suffix.is_empty() {
            (0, 0, Format::DecimalSi)
        } else if let Some((_, b)) = BINARY.iter().find(|(n, _)| *n == suffix) {
            (*b, 0, Format::BinarySi)
        } else if let Some((_, d)) = DECIMAL.iter().find(|(n, _)| *n == suffix) {
            (0, *d, Format::DecimalSi)
        } else if let Some(e) = suffix.strip_prefix(['e', 'E']) {
            (
                0,
                e.parse::<i32>().ok().filter(|e| e.abs() <= 18)?,
                Format::DecimalSi,
            )
        } else {
            return None;
        };
        let exp = dec + 3 - den_digits;
        let scaled = mantissa.checked_mul(1i128 << bin)?;
        let milli = if exp >= 0 {
            scaled.checked_mul(pow10(exp as u32))?
        } else {
            let d = pow10((-exp) as u32);
            (scaled + d - 1) / d
        };
        Some(Self {
            milli: if neg { -milli } else { milli },
            format,
        })
    }

    pub fn plus(self, o: Quantity) -> Quantity {
        let format = if self.milli == 0 {
            o.format
        } else {
            self.format
        };
        Quantity {
            milli: self.milli + o.milli,
            format,
        }
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.milli % 1000 != 0 {
            return write!(f, "{}m", self.milli);
        }
        let v = self.milli / 1000;
        if v == 0 {
            return write!(f, "0");
        }
        match self.format {
            Format::BinarySi => {
                for (name, bits) in BINARY.iter().rev() {
                    if v % (1i128 << bits) == 0 {
                        return write!(f, "{}{name}", v >> bits);
                    }
                }
            }
            Format::DecimalSi => {
                for (name, e) in DECIMAL.iter().rev().filter(|(_, e)| *e > 0) {
                    let d = pow10(*e as u32);
                    if v % d == 0 {
                        return write!(f, "{}{name}", v / d);
                    }
                }
            }
        }
        write!(f, "{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    #[test]
    fn parse_compare_print() {
        assert_eq!(q("500m").milli, 500);
        assert_eq!(q("1").milli, 1000);
        assert_eq!(q("1.5").milli, 1500);
        assert_eq!(q("1Ki").milli, 1024 * 1000);
        assert_eq!(q("1e3"), q("1k"));
        assert_eq!(q("100n").milli, 1);
        assert!(q("1Gi") > q("1G"));
        assert!(Quantity::parse("1Gb").is_none());
        assert!(Quantity::parse("").is_none());
        for s in ["500m", "1", "2", "1Gi", "512Mi", "1k", "1500m", "0", "3G"] {
            assert_eq!(q(s).to_string(), s);
        }
        assert_eq!(q("1024Mi").to_string(), "1Gi");
        assert_eq!(q("500m").plus(q("500m")).to_string(), "1");
        assert_eq!(q("0").plus(q("512Mi")).plus(q("512Mi")).to_string(), "1Gi");
    }
}
