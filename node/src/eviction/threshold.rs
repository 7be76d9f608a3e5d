//! Hard eviction thresholds as kubelet's `--eviction-hard` spells them
//! (`memory.available<100Mi,nodefs.available<10%`): parsing, and whether an
//! observation is under them.
//!
//! A threshold is a quantity or a percentage of the signal's capacity. Only
//! the `<` operator exists (kubelet's only one); a value of `0` or `0%`
//! switches the signal off, as kubelet skips zero thresholds. Signals this
//! node cannot observe (`imagefs.*`, `nodefs.inodesFree`, `pid.available`)
//! are refused by name rather than ignored, so a typo never turns eviction
//! off silently.

use std::fmt;
use std::str::FromStr;

use crate::quantity;

/// kubelet's `--eviction-hard` default (its Linux entries this node observes).
pub const DEFAULT_HARD: &str = "memory.available<100Mi,nodefs.available<10%";

/// An eviction signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signal {
    /// `memory.available`: the machine's (or the agent's cgroup's) memory
    /// not in the working set.
    MemoryAvailable,
    /// `nodefs.available`: free space on the node root's filesystem.
    NodefsAvailable,
}

impl Signal {
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::NodefsAvailable => "nodefs.available",
        }
    }

    /// The resource a pod is evicted to reclaim (kubelet's
    /// `signalToResource`), as named in the eviction message.
    pub fn resource(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory",
            Signal::NodefsAvailable => "ephemeral-storage",
        }
    }
}

/// How low a signal may go.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Bytes, with the quantity as written (kubelet prints it back in the
    /// eviction message).
    Quantity { bytes: u64, text: String },
    /// A percentage of the signal's capacity, `0 < p <= 100`.
    Percentage(f64),
}

impl Value {
    /// The threshold in bytes for a signal whose capacity is `capacity`.
    pub fn bytes(&self, capacity: u64) -> u64 {
        match self {
            Value::Quantity { bytes, .. } => *bytes,
            Value::Percentage(p) => (capacity as f64 * p / 100.0) as u64,
        }
    }

    /// The threshold as a quantity, for messages: as written, or a
    /// percentage resolved against `capacity` (kubelet does the same).
    pub fn display(&self, capacity: u64) -> String {
        match self {
            Value::Quantity { text, .. } => text.clone(),
            Value::Percentage(_) => format_bytes(self.bytes(capacity)),
        }
    }
}

/// A byte count as Kubernetes prints a binary-SI quantity: the largest of
/// `Ki`, `Mi`, `Gi`, `Ti`, `Pi`, `Ei` that divides it exactly, else plain.
pub fn format_bytes(bytes: u64) -> String {
    let units = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    let mut value = bytes;
    let mut unit = 0;
    while value != 0 && value.is_multiple_of(1024) && unit + 1 < units.len() {
        value /= 1024;
        unit += 1;
    }
    format!("{value}{}", units[unit])
}

/// The node's hard eviction thresholds; `None`: that signal never evicts.
#[derive(Clone, Debug, PartialEq)]
pub struct HardThresholds {
    pub memory_available: Option<Value>,
    pub nodefs_available: Option<Value>,
}

impl Default for HardThresholds {
    /// kubelet's defaults: `memory.available<100Mi,nodefs.available<10%`.
    fn default() -> Self {
        Self {
            memory_available: Some(Value::Quantity {
                bytes: 100 * 1024 * 1024,
                text: "100Mi".into(),
            }),
            nodefs_available: Some(Value::Percentage(10.0)),
        }
    }
}

impl HardThresholds {
    /// No thresholds at all (`--eviction-hard ""`).
    pub fn none() -> Self {
        Self {
            memory_available: None,
            nodefs_available: None,
        }
    }

    pub fn get(&self, signal: Signal) -> Option<&Value> {
        match signal {
            Signal::MemoryAvailable => self.memory_available.as_ref(),
            Signal::NodefsAvailable => self.nodefs_available.as_ref(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ThresholdError {
    #[error("eviction threshold {0:?}: expected SIGNAL<VALUE, e.g. memory.available<100Mi")]
    Syntax(String),
    #[error("eviction signal {0:?} is not supported here (supported: memory.available, nodefs.available)")]
    UnknownSignal(String),
    #[error("eviction signal {0} is given twice")]
    Duplicate(&'static str),
    #[error("eviction threshold {signal}<{value}: not a quantity (e.g. 100Mi, 1Gi) or percentage (e.g. 10%)")]
    BadValue { signal: &'static str, value: String },
    #[error("eviction threshold {signal}<{value}: a percentage must be between 0% and 100%")]
    BadPercentage { signal: &'static str, value: String },
}

fn parse_value(signal: Signal, text: &str) -> Result<Option<Value>, ThresholdError> {
    let bad = || ThresholdError::BadValue {
        signal: signal.as_str(),
        value: text.to_string(),
    };
    if let Some(number) = text.strip_suffix('%') {
        let pct: f64 = number.trim().parse().map_err(|_| bad())?;
        if !(0.0..=100.0).contains(&pct) || !pct.is_finite() {
            return Err(ThresholdError::BadPercentage {
                signal: signal.as_str(),
                value: text.to_string(),
            });
        }
        return Ok((pct > 0.0).then_some(Value::Percentage(pct)));
    }
    let v = quantity::parse(text).ok_or_else(bad)?;
    if v < 0.0 || !v.is_finite() || v > u64::MAX as f64 {
        return Err(bad());
    }
    let bytes = v.ceil() as u64;
    Ok((bytes > 0).then(|| Value::Quantity {
        bytes,
        text: text.trim().to_string(),
    }))
}

impl FromStr for HardThresholds {
    type Err = ThresholdError;

    /// `SIGNAL<VALUE[,SIGNAL<VALUE]`; empty text is no thresholds.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut out = HardThresholds::none();
        let mut seen = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, value) = item
                .split_once('<')
                .ok_or_else(|| ThresholdError::Syntax(item.to_string()))?;
            let (name, value) = (name.trim(), value.trim());
            if name.is_empty() || value.is_empty() {
                return Err(ThresholdError::Syntax(item.to_string()));
            }
            let signal = match name {
                "memory.available" => Signal::MemoryAvailable,
                "nodefs.available" => Signal::NodefsAvailable,
                other => return Err(ThresholdError::UnknownSignal(other.to_string())),
            };
            if seen.contains(&signal) {
                return Err(ThresholdError::Duplicate(signal.as_str()));
            }
            seen.push(signal);
            let value = parse_value(signal, value)?;
            match signal {
                Signal::MemoryAvailable => out.memory_available = value,
                Signal::NodefsAvailable => out.nodefs_available = value,
            }
        }
        Ok(out)
    }
}

impl fmt::Display for HardThresholds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for signal in [Signal::MemoryAvailable, Signal::NodefsAvailable] {
            match self.get(signal) {
                Some(Value::Quantity { text, .. }) => {
                    parts.push(format!("{}<{text}", signal.as_str()))
                }
                Some(Value::Percentage(p)) => parts.push(format!("{}<{p}%", signal.as_str())),
                None => {}
            }
        }
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubelets_default_and_round_trips() {
        let t: HardThresholds = DEFAULT_HARD.parse().unwrap();
        assert_eq!(t, HardThresholds::default());
        assert_eq!(t.to_string(), DEFAULT_HARD);
        assert_eq!(t.memory_available.as_ref().unwrap().bytes(0), 100 << 20);
        assert_eq!(t.nodefs_available.as_ref().unwrap().bytes(1000), 100);
    }

    #[test]
    fn quantities_percentages_and_zero() {
        let t: HardThresholds = " memory.available < 1.5Gi , nodefs.available<0"
            .parse()
            .unwrap();
        assert_eq!(
            t.memory_available,
            Some(Value::Quantity {
                bytes: 3 << 29,
                text: "1.5Gi".into()
            })
        );
        assert_eq!(t.nodefs_available, None, "0 switches a signal off");
        let t: HardThresholds = "memory.available<5%".parse().unwrap();
        assert_eq!(t.memory_available, Some(Value::Percentage(5.0)));
        assert_eq!(t.nodefs_available, None, "an unnamed signal is off");
        assert_eq!(
            "".parse::<HardThresholds>().unwrap(),
            HardThresholds::none()
        );
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        let err = |s: &str| s.parse::<HardThresholds>().unwrap_err();
        assert_eq!(
            err("memory.available>1Gi"),
            ThresholdError::Syntax("memory.available>1Gi".into())
        );
        assert_eq!(
            err("imagefs.available<15%"),
            ThresholdError::UnknownSignal("imagefs.available".into())
        );
        assert!(matches!(
            err("memory.available<lots"),
            ThresholdError::BadValue { .. }
        ));
        assert!(matches!(
            err("memory.available<-1Mi"),
            ThresholdError::BadValue { .. }
        ));
        assert!(matches!(
            err("nodefs.available<150%"),
            ThresholdError::BadPercentage { .. }
        ));
        assert_eq!(
            err("memory.available<1Mi,memory.available<2Mi"),
            ThresholdError::Duplicate("memory.available")
        );
        assert!(err("memory.available<")
            .to_string()
            .contains("SIGNAL<VALUE"));
    }

    #[test]
    fn bytes_print_as_kubernetes_quantities() {
        assert_eq!(format_bytes(100 << 20), "100Mi");
        assert_eq!(format_bytes(1536), "1536");
        assert_eq!(format_bytes(3 << 10), "3Ki");
        assert_eq!(format_bytes(1000), "1000");
        assert_eq!(format_bytes(0), "0");
        assert_eq!(
            Value::Percentage(10.0).display(10 << 30),
            format_bytes((10u64 << 30) / 10)
        );
    }
}
