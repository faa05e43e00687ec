//! Library part of `cargo xtask`: harnesses that tests reuse.
//!
//! * [`chaos`]: the Jepsen-style fault suite (`cargo xtask chaos`), also run
//!   in a bounded form by `crates/raftkv/tests/`.

pub mod chaos;
