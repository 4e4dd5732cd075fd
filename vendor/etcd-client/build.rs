//! mpc-wallet: etcd's API is generated ahead of time into `src/rpc/generated/` (see
//! PATCHED.md), so an ordinary build runs no code generation and needs no `protoc`. The
//! `regenerate` feature runs upstream's generation (same protos, same options) into that folder:
//! `cargo check -p mpc-coordination --features etcd-client/regenerate` (needs `protoc`).

fn main() {
    #[cfg(feature = "regenerate")]
    regenerate();
    #[cfg(not(feature = "regenerate"))]
    println!("cargo:rerun-if-changed=build.rs");
}

#[cfg(feature = "regenerate")]
fn regenerate() {
    let package = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let generated = package.join("src/rpc/generated");
    let proto_root = package.join("proto");
    println!("cargo:rerun-if-changed={}", proto_root.display());

    tonic_prost_build::configure()
        .build_server(false)
        .out_dir(&generated)
        .compile_protos(
            &[
                "proto/etcd/api/authpb/auth.proto",
                "proto/etcd/api/etcdserverpb/rpc.proto",
                "proto/etcd/api/mvccpb/kv.proto",
                "proto/etcd/server/etcdserver/api/v3election/v3electionpb/v3election.proto",
                "proto/etcd/server/etcdserver/api/v3lock/v3lockpb/v3lock.proto",
            ]
            .map(|proto| package.join(proto)),
            &[proto_root],
        )
        .expect("Failed to compile proto files");
    // The annotations etcd's protos import for its HTTP gateway: generated, never included.
    for unused in [
        "google.api.rs",
        "grpc.gateway.protoc_gen_openapiv2.options.rs",
    ] {
        std::fs::remove_file(generated.join(unused)).expect("remove unused generated file");
    }
}
