//! The private Docker Engine client: transport, typed calls, stream demultiplexing.

pub(crate) mod api;
pub(crate) mod dial;
pub(crate) mod frames;
pub(crate) mod transport;

// Against the real daemon, so only with the `engine-tests` feature (scripts/test.sh passes
// --all-features): a plain `cargo test --lib` needs no daemon.
#[cfg(all(test, feature = "engine-tests"))]
mod tests;
