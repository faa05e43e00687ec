//! etcd's v3 API as Rust types: the protocol definitions vendored from a registry package
//! (see `proto/README.md` for origin and licence), compiled with prost and tonic.
//!
//! This crate owns the *wire types* of the etcd v3 API and nothing else: no behaviour, no
//! validation. `kvstore` uses the messages (`etcdserverpb::RangeRequest`, `mvccpb::KeyValue`, …)
//! as the vocabulary of its multi-version keyspace; `api` implements the generated gRPC service
//! traits (`etcdserverpb::kv_server::Kv`, …) on top of it. Field names and numbers are etcd's,
//! so any etcd v3 client (etcdctl, the `etcd-client` crate) speaks to raftkv unchanged.
//! Every message also implements serde's `Serialize`/`Deserialize` with the proto3 JSON
//! mapping etcd's JSON gateway uses (proto field names, 64-bit integers as strings, bytes as
//! base64, enums by name, zero values omitted).
//!
//! Invariant: the `.proto` files are never edited by hand; an update replaces them from a newer
//! package and records the version in `proto/README.md`.

#![allow(missing_docs, clippy::all, rust_2018_idioms)]

/// `mvccpb`: `KeyValue` and `Event`, the keyspace's stored records.
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}

/// `authpb`: users and roles (referenced by `etcdserverpb`; raftkv has no auth yet).
pub mod authpb {
    tonic::include_proto!("authpb");
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}

/// `etcdserverpb`: every request and response of the v3 API and the gRPC services
/// (KV, Watch, Lease, Cluster, Maintenance, Auth), clients and servers.
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}

/// The pbjson helpers the JSON mapping uses.
pub use pbjson;
/// The prost version the messages implement `Message` for (0.14; raft's is 0.11).
pub use prost;
/// The tonic version the services are generated for.
pub use tonic;
