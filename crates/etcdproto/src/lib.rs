//! etcd's v3 API as Rust types: the protocol definitions vendored from a registry package
//! (see `proto/README.md` for origin and licence), compiled with prost and tonic.
//!
//! This crate owns the *wire types* of the etcd v3 API and nothing else: no behaviour, no
//! validation. `kvstore` uses the messages (`etcdserverpb::RangeRequest`, `mvccpb::KeyValue`, …)
//! as the vocabulary of its multi-version keyspace; `api` implements the generated gRPC service
//! traits (`etcdserverpb::kv_server::Kv`, …) on top of it. Field names and numbers are etcd's,
//! so any etcd v3 client (etcdctl, the `etcd-client` crate) speaks to raftkv unchanged.
//!
//! Invariant: the `.proto` files are never edited by hand; an update replaces them from a newer
//! package and records the version in `proto/README.md`.

#![allow(missing_docs, clippy::all, rust_2018_idioms)]

/// `mvccpb`: `KeyValue` and `Event`, the keyspace's stored records.
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// `authpb`: users and roles (referenced by `etcdserverpb`; raftkv has no auth yet).
pub mod authpb {
    tonic::include_proto!("authpb");
}

/// `etcdserverpb`: every request and response of the v3 API and the gRPC services
/// (KV, Watch, Lease, Cluster, Maintenance, Auth), clients and servers.
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// The prost version the messages implement `Message` for (0.14; raft's is 0.11).
pub use prost;
/// The tonic version the services are generated for.
pub use tonic;
