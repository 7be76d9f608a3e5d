//! A short chaos run against a real three-master cluster, as CI runs it:
//! kills, pauses and (where network namespaces work) partitions under a
//! concurrent workload, and every checker must find nothing.

use std::time::Duration;

use balsa_chaos::check::Budget;
use balsa_chaos::cluster;
use balsa_chaos::nemesis::Fault;
use balsa_chaos::run::{self, Network, RunOptions};
use balsa_chaos::workload::WorkloadOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_with_kills_pauses_and_partitions_finds_no_violation() {
    let binary = cluster::default_binary()
        .expect("the balsa binary beside the test (cargo build --workspace builds it)");
    let dir = tempfile::tempdir().expect("temp dir");
    let opts = RunOptions {
        out: dir.path().to_path_buf(),
        binary,
        masters: 3,
        network: Network::Auto,
        duration: Duration::from_secs(30),
        workload: WorkloadOptions {
            clients: 6,
            keys: 4,
            rate: 120.0,
            timeout: Duration::from_secs(3),
            seed: 7,
        },
        faults: vec![
            Fault::KillLeader,
            Fault::Kill,
            Fault::PauseLeader,
            Fault::PartitionLeader,
            Fault::PartitionHalves,
        ],
        interval: Duration::from_millis(1500),
        hold: Duration::from_millis(1500),
        seed: 7,
        budget: Budget {
            per_key: Duration::from_secs(20),
        },
        keep_data: false,
    };
    let report = run::run(opts).await.expect("the run completes");
    let summary = report.summary();
    println!("{summary}");
    if !report.passed() {
        // Keep the history and logs for whoever reads the CI output.
        let kept = dir.keep();
        panic!(
            "the chaos run failed (history and logs in {}):\n{summary}",
            kept.display()
        );
    }
    let faults: usize = report.faults.values().sum();
    assert!(faults >= 4, "too few faults were injected:\n{summary}");
    assert!(
        report.acked_writes > 200,
        "too few writes were acknowledged:\n{summary}"
    );
    assert!(
        report.findings.ops_checked > 1000,
        "too few ops were checked:\n{summary}"
    );
}
