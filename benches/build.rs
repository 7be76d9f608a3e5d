//! Compiles the benches' own etcd API subset with protox (no system protoc),
//! the same way `proto/build.rs` compiles Balsa's.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/etcd.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
