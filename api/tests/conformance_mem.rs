use balsa_api::conformance::{run_all, Setup};
use balsa_api::store::mem::MemStore;
use balsa_api::store::window::WindowConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_store_conforms() {
    let setup = Setup { window_events: 64 };
    run_all(
        MemStore::new(WindowConfig::events(setup.window_events)),
        setup,
    )
    .await;
}
