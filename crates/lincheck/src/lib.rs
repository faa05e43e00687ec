//! Client histories of a key-value store and what checks them: the
//! operations clients saw ([`history`]), per-key linearizability with
//! unknown outcomes ([`checker`]), and an HTML timeline of a failing window
//! ([`timeline`]). Shared by the chaos suite (`cargo xtask chaos`, real
//! processes) and the deterministic simulation (`kvsim`, one thread).

pub mod checker;
pub mod history;
pub mod timeline;
