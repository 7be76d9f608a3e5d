//! The gRPC edge: the Objects service over any `Store`, the node agents'
//! stream, the typed client, and the one mapping between `StoreError` and
//! gRPC status.

pub mod client;
pub mod fence;
mod node_changes;
mod node_fanout;
pub mod node_stream;
pub mod server;
pub mod status;
pub mod transport;
