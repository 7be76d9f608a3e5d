//! Markdown tables: the store benchmark's side-by-side rows (one per metric,
//! Balsa against etcd) and a plain renderer any benchmark can fill.

use serde::Serialize;

/// Which direction of a metric is the good one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    OpsPerSec,
    Millis,
    Micros,
    Count,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub metric: String,
    pub unit: Unit,
    pub better: Better,
    pub balsa: Option<f64>,
    pub etcd: Option<f64>,
}

impl Row {
    pub fn new(
        metric: impl Into<String>,
        unit: Unit,
        better: Better,
        balsa: Option<f64>,
        etcd: Option<f64>,
    ) -> Self {
        Self {
            metric: metric.into(),
            unit,
            better,
            balsa,
            etcd,
        }
    }

    /// Always Balsa / etcd, whatever the direction; `None` when either is
    /// missing or etcd's is 0.
    pub fn ratio(&self) -> Option<f64> {
        match (self.balsa, self.etcd) {
            (Some(b), Some(e)) if e != 0.0 => Some(b / e),
            _ => None,
        }
    }

    pub fn winner(&self) -> Option<&'static str> {
        let (b, e) = (self.balsa?, self.etcd?);
        if b == e {
            return Some("tie");
        }
        let balsa_wins = match self.better {
            Better::Higher => b > e,
            Better::Lower => b < e,
        };
        Some(if balsa_wins { "Balsa" } else { "etcd" })
    }
}

pub fn format_value(unit: Unit, value: Option<f64>) -> String {
    match value {
        None => "n/a".into(),
        Some(v) => match unit {
            Unit::OpsPerSec => format!("{v:.1} ops/s"),
            Unit::Millis => format!("{v:.2} ms"),
            Unit::Micros => format!("{v:.0} µs"),
            Unit::Count => format!("{v:.0}"),
        },
    }
}

const HEADER: [&str; 6] = ["metric", "Balsa", "etcd", "Balsa/etcd", "better", "winner"];

fn cells(row: &Row) -> [String; 6] {
    [
        row.metric.clone(),
        format_value(row.unit, row.balsa),
        format_value(row.unit, row.etcd),
        row.ratio()
            .map_or_else(|| "-".into(), |r| format!("{r:.2}")),
        match row.better {
            Better::Higher => "higher".into(),
            Better::Lower => "lower".into(),
        },
        row.winner().unwrap_or("-").into(),
    ]
}

/// `v` rounded to a whole number with thousands separators (`12,345`), as
/// the benchmarks' tables print counts and rates.
pub fn thousands(v: f64) -> String {
    let s = format!("{:.0}", v.round());
    let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

/// A Markdown table: the metric left-aligned, the figures right-aligned.
pub fn render(rows: &[Row]) -> String {
    let body: Vec<Vec<String>> = rows.iter().map(|r| cells(r).to_vec()).collect();
    markdown(&HEADER, &body, 1)
}

/// A Markdown table whose first `left` columns are left-aligned and the rest
/// (the figures) right-aligned; every line is padded to the same width.
pub fn markdown(header: &[&str], body: &[Vec<String>], left: usize) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in body {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: &[String]| -> String {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, &w))| {
                if i < left {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        format!("| {} |", parts.join(" | "))
    };
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    out.push_str(&line(&header));
    out.push('\n');
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            if i < left {
                format!(":{}", "-".repeat(w + 1))
            } else {
                format!("{}:", "-".repeat(w + 1))
            }
        })
        .collect();
    out.push_str(&format!("|{}|", rule.join("|")));
    out.push('\n');
    for r in body {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated_and_rounded() {
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1234.5), "1,235");
        assert_eq!(thousands(1_000_000.0), "1,000,000");
        assert_eq!(thousands(-12345.0), "-12,345");
    }

    #[test]
    fn values_are_formatted_by_unit() {
        assert_eq!(format_value(Unit::OpsPerSec, Some(1234.56)), "1234.6 ops/s");
        assert_eq!(format_value(Unit::Millis, Some(2.0)), "2.00 ms");
        assert_eq!(format_value(Unit::Count, Some(1_000_000.0)), "1000000");
        assert_eq!(format_value(Unit::Millis, None), "n/a");
    }

    #[test]
    fn ratio_is_balsa_over_etcd_and_winner_follows_direction() {
        let tput = Row::new(
            "w",
            Unit::OpsPerSec,
            Better::Higher,
            Some(300.0),
            Some(150.0),
        );
        assert_eq!(tput.ratio(), Some(2.0));
        assert_eq!(tput.winner(), Some("Balsa"));
        let lat = Row::new("l", Unit::Millis, Better::Lower, Some(3.0), Some(1.5));
        assert_eq!(lat.ratio(), Some(2.0));
        assert_eq!(lat.winner(), Some("etcd"));
        let missed = Row::new("m", Unit::Count, Better::Lower, Some(0.0), Some(0.0));
        assert_eq!(missed.ratio(), None);
        assert_eq!(missed.winner(), Some("tie"));
        let partial = Row::new("p", Unit::Count, Better::Lower, None, Some(1.0));
        assert_eq!(partial.winner(), None);
    }

    #[test]
    fn table_is_aligned() {
        let rows = vec![
            Row::new(
                "sequential writes",
                Unit::OpsPerSec,
                Better::Higher,
                Some(312.24),
                Some(250.0),
            ),
            Row::new("p99", Unit::Millis, Better::Lower, Some(4.5), None),
        ];
        let text = render(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{text}");
        assert_eq!(
            lines[2],
            "| sequential writes | 312.2 ops/s | 250.0 ops/s |       1.25 | higher |  Balsa |"
        );
        assert_eq!(
            lines[3],
            "| p99               |     4.50 ms |         n/a |          - |  lower |      - |"
        );
        assert!(lines[1].starts_with("|:---"));
    }
}
