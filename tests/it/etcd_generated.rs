//! The etcd client's gRPC code (src/cluster/etcd/generated/) is checked in
//! so that no build needs `protoc`; this test regenerates it from the
//! `.proto` files beside it, in pure Rust (protox), and fails if the two
//! differ. After changing a `.proto` file or upgrading tonic or prost:
//! `CUTOVER_REGENERATE=1 cargo test etcd_generated` writes the new code.

use std::path::{Path, PathBuf};

/// etcd's own API files; their imports (annotations for etcd's HTTP
/// gateway and OpenAPI) are read but generate nothing we keep.
const PROTOS: [&str; 3] = [
    "etcd/api/etcdserverpb/rpc.proto",
    "etcd/api/mvccpb/kv.proto",
    "etcd/api/authpb/auth.proto",
];
/// The packages cutover compiles in (src/cluster/etcd.rs includes them).
const PACKAGES: [&str; 3] = ["etcdserverpb", "mvccpb", "authpb"];

fn etcd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cluster/etcd")
}

fn generate(out: &Path) {
    let proto = etcd_dir().join("proto");
    let mut files = protox::compile(PROTOS, [&proto]).expect("etcd's .proto files compile");
    files.file.retain(|file| PACKAGES.contains(&file.package()));
    tonic_prost_build::configure()
        .build_server(false)
        .build_transport(false)
        .emit_rerun_if_changed(false)
        .out_dir(out)
        .compile_fds(files)
        .expect("tonic-prost-build writes the etcd client code");
}

#[test]
fn etcd_client_code_matches_its_proto_files() {
    let checked_in = etcd_dir().join("generated");
    let fresh = tempfile::tempdir().unwrap();
    generate(fresh.path());
    let regenerate = std::env::var_os("CUTOVER_REGENERATE").is_some();
    let mut stale = Vec::new();
    for package in PACKAGES {
        let name = format!("{package}.rs");
        let new = std::fs::read_to_string(fresh.path().join(&name)).unwrap();
        let old = std::fs::read_to_string(checked_in.join(&name)).unwrap_or_default();
        if new != old {
            if regenerate {
                std::fs::create_dir_all(&checked_in).unwrap();
                std::fs::write(checked_in.join(&name), new).unwrap();
            } else {
                stale.push(name);
            }
        }
    }
    assert!(
        stale.is_empty(),
        "src/cluster/etcd/generated/{stale:?} differ from what the .proto files generate; \
         run `CUTOVER_REGENERATE=1 cargo test etcd_generated` and commit the result"
    );
}
