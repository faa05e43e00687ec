//! Compiles the vendored etcd v3 `.proto` files with tonic's prost generator, then generates
//! serde implementations (proto3 JSON mapping, proto field names) with pbjson-build for the
//! JSON gateway. `PROTOC` is set by the workspace's `.cargo/config.toml` (tools/protoc), so no
//! system protoc is needed.

use std::path::PathBuf;

fn main() {
    let root = "proto";
    println!("cargo:rerun-if-changed={root}");
    let files = [
        "proto/etcd/api/mvccpb/kv.proto",
        "proto/etcd/api/authpb/auth.proto",
        "proto/etcd/api/etcdserverpb/rpc.proto",
    ];
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let descriptor_path = out_dir.join("etcd_descriptor.bin");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .file_descriptor_set_path(&descriptor_path)
        .compile_protos(&files, &[root])
        .unwrap_or_else(|e| panic!("compiling etcd's .proto files: {e}"));
    let descriptors = std::fs::read(&descriptor_path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", descriptor_path.display()));
    // etcd's gateway (grpc-gateway with OrigName) writes proto field names and accepts both
    // them and lowerCamelCase, ignoring unknown fields; zero values are omitted (pbjson's
    // default).
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)
        .unwrap_or_else(|e| panic!("reading the descriptor set: {e}"))
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        .build(&[".mvccpb", ".authpb", ".etcdserverpb"])
        .unwrap_or_else(|e| panic!("generating the JSON mapping: {e}"));
}
