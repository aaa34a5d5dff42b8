//! The private Docker Engine client: transport, typed calls, stream demultiplexing.

pub(crate) mod api;
pub(crate) mod frames;
pub(crate) mod transport;

#[cfg(test)]
mod tests;
