//! raftkv binary
fn main() {}
