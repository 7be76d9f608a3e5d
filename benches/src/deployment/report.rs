//! The printed table: one row per phase.

use super::{Phase, Report};
use crate::table::{markdown, thousands};

fn row(name: &str, r: &Report, p: &Phase) -> Vec<String> {
    let u = &p.usage;
    vec![
        name.into(),
        format!(
            "{} x {}",
            thousands(r.nodes as f64),
            thousands(r.replicas as f64)
        ),
        format!(
            "{:.2} ({})",
            p.seconds,
            if p.seconds <= p.target_s {
                "met"
            } else {
                "missed"
            }
        ),
        format!("{:.0}", p.target_s),
        thousands(p.pods_per_s),
        format!(
            "{} / {} / {}",
            thousands(p.pods_seen as f64),
            thousands(p.pods_bound as f64),
            thousands(p.pods_ready as f64)
        ),
        thousands(p.pods_deleted as f64),
        format!(
            "{} / {} / {}",
            p.peak_created_per_s, p.peak_bound_per_s, p.peak_ready_per_s
        ),
        format!(
            "{:.1} / {:.1} / {:.1}",
            p.last_seen_s, p.last_bound_s, p.last_ready_s
        ),
        format!(
            "{} / {}",
            thousands(p.to_bound.p50_ms),
            thousands(p.to_bound.p99_ms)
        ),
        format!(
            "{} / {}",
            thousands(p.to_ready.p50_ms),
            thousands(p.to_ready.p99_ms)
        ),
        format!(
            "{} / {} / {}",
            thousands(p.most_replicas as f64),
            thousands(p.most_live_pods as f64),
            thousands(p.fewest_available as f64)
        ),
        match (u.raft_entries, p.raft_entries_per_pod) {
            (Some(e), Some(per)) => format!("{} ({per:.1})", thousands(e as f64)),
            (Some(e), None) => thousands(e as f64),
            _ => "-".into(),
        },
        match p.writes {
            Some(w) if p.pods_seen > 0 => {
                let per = |n: u64| n as f64 / p.pods_seen as f64;
                format!(
                    "{:.1} ({:.1} / {:.1} / {:.1} / {:.1})",
                    per(w.all),
                    per(w.pods),
                    per(w.events),
                    per(w.workload),
                    per(w.other())
                )
            }
            _ => "-".into(),
        },
        u.elections.map_or("-".into(), |e| e.to_string()),
        if p.pods_seen > 0 {
            let all: f64 = u.masters.iter().map(|m| m.cpu_s).sum();
            format!(
                "{:.1} / {:.1}",
                all * 1000.0 / p.pods_seen as f64,
                u.agents_cpu_s * 1000.0 / p.pods_seen as f64
            )
        } else {
            "-".into()
        },
        u.masters
            .iter()
            .map(|m| format!("{:.1}", m.cpu_s))
            .collect::<Vec<_>>()
            .join(" / "),
        u.masters
            .iter()
            .map(|m| format!("{} / {}", thousands(m.rss_mib), thousands(m.peak_rss_mib)))
            .collect::<Vec<_>>()
            .join(", "),
        format!("{:.1}", u.agents_cpu_s),
        u.others_cores.map_or("-".into(), |o| format!("{o:.2}")),
    ]
}

pub fn render(r: &Report) -> String {
    let header = [
        "phase",
        "nodes x replicas",
        "s",
        "target s",
        "pods/s",
        "pods seen / bound / Ready",
        "pods deleted",
        "peak created / bound / Ready per s",
        "last created / bound / Ready at s",
        "seen→bound p50 / p99 ms",
        "seen→Ready p50 / p99 ms",
        "most replicas (status) / most live pods / fewest available",
        "Raft entries (per pod)",
        "writes per pod (pods / Events / Deployment+ReplicaSets / other)",
        "elections",
        "CPU ms per pod: masters / agents",
        "masters' CPU s (leader first)",
        "masters' RSS / peak MiB",
        "agents' CPU s",
        "other cores",
    ];
    let mut body = Vec::new();
    if let Some(p) = &r.available {
        body.push(row("create → all Available", r, p));
    }
    if let Some(p) = &r.rollout {
        body.push(row("rolling update", r, p));
    }
    let mut out = markdown(&header, &body, 2);
    out.push_str(&format!(
        "\nnodes Ready after {:.1} s; load average at start {}",
        r.nodes_ready_s, r.load_average
    ));
    if let Some((spec, status)) = r.old_replicaset {
        out.push_str(&format!(
            "; old ReplicaSet at spec {spec} / status {status}"
        ));
    }
    if let Some(e) = &r.error {
        out.push_str(&format!("\nerror: {e}"));
    }
    out
}
