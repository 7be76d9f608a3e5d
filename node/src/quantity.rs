//! Kubernetes resource quantities (`500m`, `128Mi`, `1.5`, `2e3`) as numbers.
//!
//! The node only needs them as numbers (cgroup limits, downward API, eviction
//! ranking), so a quantity becomes an `f64` of base units; whatever rounding
//! kubelet does (cpu up to the milli-core, bytes up to the byte) is done by the
//! helpers below, never by callers.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The value of a quantity in base units (cores, bytes), or `None` when it does
/// not parse.
pub fn parse(text: &str) -> Option<f64> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => 10f64.powi(exp[1..].parse().ok()?),
        _ => return None,
    };
    Some(number * factor)
}

/// The value of a quantity object, `None` when it does not parse.
pub fn value(q: &Quantity) -> Option<f64> {
    parse(&q.0)
}

/// CPU in milli-cores, rounded up as kubelet does (`0.0001` is 1m).
pub fn cpu_millis(q: &Quantity) -> Option<u64> {
    value(q).map(|v| (v * 1000.0).ceil().max(0.0) as u64)
}

/// Bytes, rounded up.
pub fn bytes(q: &Quantity) -> Option<u64> {
    value(q).map(|v| v.ceil().max(0.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_suffixes() {
        assert_eq!(parse("500m"), Some(0.5));
        assert_eq!(parse("2"), Some(2.0));
        assert_eq!(parse("128Mi"), Some(128.0 * 1024.0 * 1024.0));
        assert_eq!(parse("1G"), Some(1e9));
        assert_eq!(parse("2e3"), Some(2000.0));
        assert_eq!(parse("1.5Gi"), Some(1.5 * 1024.0 * 1024.0 * 1024.0));
        assert_eq!(parse("12x"), None);
        assert_eq!(parse(""), None);
        assert_eq!(cpu_millis(&Quantity("0.0001".into())), Some(1));
        assert_eq!(bytes(&Quantity("1Ki".into())), Some(1024));
    }
}
