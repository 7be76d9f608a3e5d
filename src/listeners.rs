//! Every listening socket a master or a node agent opens, opened here and
//! nowhere else, so TLS and address policy have one place to live.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

pub struct Listeners {
    pub peer: TcpListener,
    /// gRPC Objects and Cluster services.
    pub api: TcpListener,
    /// The Kubernetes REST API.
    pub rest: TcpListener,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {what} address {addr}: {source}")]
pub struct BindError {
    what: &'static str,
    addr: SocketAddr,
    #[source]
    source: std::io::Error,
}

async fn bind_one(what: &'static str, addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { what, addr, source })
}

impl Listeners {
    pub async fn bind(
        peer: SocketAddr,
        api: SocketAddr,
        rest: SocketAddr,
    ) -> Result<Self, BindError> {
        Ok(Self {
            peer: bind_one("peer", peer).await?,
            api: bind_one("api", api).await?,
            rest: bind_one("rest", rest).await?,
        })
    }

    pub fn addrs(&self) -> std::io::Result<(SocketAddr, SocketAddr, SocketAddr)> {
        Ok((
            self.peer.local_addr()?,
            self.api.local_addr()?,
            self.rest.local_addr()?,
        ))
    }
}

/// A node agent's log endpoint (`NodeLogs`, kubelet's port).
pub async fn bind_node_logs(addr: SocketAddr) -> Result<TcpListener, BindError> {
    bind_one("node log", addr).await
}

/// Accepted connections for a gRPC server. Small request/response messages
/// must not wait for Nagle's algorithm (a 40 ms stall per call otherwise).
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Accepted connections for the REST server, also without Nagle's delay (a
/// watch event or a small answer would otherwise wait for the peer's ACK).
pub fn rest_incoming(
    listener: TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY on a REST connection");
        }
    })
}
