//! Compiles the vendored etcd v3 `.proto` files with tonic's prost generator.
//! `PROTOC` is set by the workspace's `.cargo/config.toml` (tools/protoc), so no system
//! protoc is needed.

fn main() {
    let root = "proto";
    println!("cargo:rerun-if-changed={root}");
    let files = [
        "proto/etcd/api/mvccpb/kv.proto",
        "proto/etcd/api/authpb/auth.proto",
        "proto/etcd/api/etcdserverpb/rpc.proto",
    ];
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&files, &[root])
        .unwrap_or_else(|e| panic!("compiling etcd's .proto files: {e}"));
}
