//! Compiles the .proto files with protox (no system protoc needed):
//! Balsa's own and the CRI subset the node's `cri` runtime speaks into tonic code, and the Kubernetes kinds Balsa accepts as
//! protobuf request bodies into a bare `FileDescriptorSet` (no generated code;
//! `balsa-api` reads objects with prost-reflect).
//!
//! Kubernetes' .proto files are not kept in this repository. The `k8s-rs-pb`
//! crate ships them (upstream's `generated.proto` files for 1.32); it is a
//! build-dependency under `cfg(any())`, so cargo resolves, pins and checksums it
//! but never compiles it, and `cargo metadata` says where its sources are
//! unpacked. That crate dropped the `k8s.io` prefix from packages and imports
//! (`api.core.v1` for upstream's `k8s.io.api.core.v1`); the resolver below puts
//! it back, so the descriptor carries upstream's names.

use std::path::{Path, PathBuf};
use std::process::Command;

use protox::file::{File, FileResolver};

/// The kinds Balsa serves, by file; protox adds their imports (meta/v1,
/// resource, intstr, runtime, schema).
const K8S_FILES: &[&str] = &[
    "k8s.io/api/core/v1/generated.proto",
    "k8s.io/api/apps/v1/generated.proto",
    "k8s.io/api/batch/v1/generated.proto",
    "k8s.io/api/coordination/v1/generated.proto",
    "k8s.io/api/discovery/v1/generated.proto",
    "k8s.io/api/events/v1/generated.proto",
    "k8s.io/api/autoscaling/v1/generated.proto",
    "k8s.io/api/autoscaling/v2/generated.proto",
    "k8s.io/api/networking/v1/generated.proto",
    "k8s.io/api/policy/v1/generated.proto",
    "k8s.io/api/scheduling/v1/generated.proto",
    "k8s.io/api/rbac/v1/generated.proto",
];

/// Which of the crate's versions to read; must match its enabled feature.
const K8S_VERSION_DIR: &str = "src/v1_32";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/balsa/peer.proto",
        "proto/balsa/objects.proto",
        "proto/balsa/node.proto",
        "proto/cri/api.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;

    let root = k8s_proto_root()?;
    let mut compiler = protox::Compiler::with_file_resolver(K8sResolver { root });
    compiler.include_imports(true).include_source_info(false);
    compiler.open_files(K8S_FILES)?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("k8s_descriptor_set.bin");
    std::fs::write(out, compiler.encode_file_descriptor_set())?;
    Ok(())
}

/// The directory holding `api/` and `apimachinery/` inside the unpacked
/// `k8s-rs-pb` package.
fn k8s_proto_root() -> Result<PathBuf, Box<dyn std::error::Error>> {
    let cargo = std::env::var("CARGO")?;
    let manifest = Path::new(&std::env::var("CARGO_MANIFEST_DIR")?).join("Cargo.toml");
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "cargo metadata (to find k8s-rs-pb's .proto files) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let manifest_path = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "k8s-rs-pb")
        .and_then(|p| p["manifest_path"].as_str())
        .ok_or("k8s-rs-pb is not in `cargo metadata`; is it still a build-dependency?")?;
    let root = Path::new(manifest_path)
        .parent()
        .ok_or("k8s-rs-pb's manifest has no parent directory")?
        .join(K8S_VERSION_DIR);
    Ok(root)
}

/// Opens `k8s.io/<path>` as `<root>/<path>` and restores the `k8s.io` prefix of
/// packages, imports and type references. A reference left unprefixed would no
/// longer resolve, so protox fails loudly rather than mis-rewrite silently.
struct K8sResolver {
    root: PathBuf,
}

impl FileResolver for K8sResolver {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        let Some(rel) = name.strip_prefix("k8s.io/") else {
            return Err(protox::Error::file_not_found(name));
        };
        let path = self.root.join(rel);
        let source =
            std::fs::read_to_string(&path).map_err(|_| protox::Error::file_not_found(name))?;
        println!("cargo:rerun-if-changed={}", path.display());
        let mut source = source;
        for top in ["api", "apimachinery"] {
            source = source
                .replace(
                    &format!("package {top}."),
                    &format!("package k8s.io.{top}."),
                )
                .replace(
                    &format!("import \"{top}/"),
                    &format!("import \"k8s.io/{top}/"),
                )
                .replace(&format!(" .{top}."), &format!(" .k8s.io.{top}."));
        }
        File::from_source(name, &source)
    }
}
