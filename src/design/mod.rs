//! Design pages: how dockexec would map onto platforms it does not support yet. Nothing in
//! this module is code; each page is documentation that `cargo doc` checks (its links to the
//! crate's items must resolve) and that unit tests tie to the crate's internals.

pub mod kubernetes;
