//! How a client's gRPC calls reach a master: over a connection, or, for the
//! control loops a master runs itself, straight into that master's services.
//!
//! ```text
//!  ObjectsClient ─► Transport ─┬─ Remote: HTTP/2 over TCP ─► the master's listener ─► Routes
//!                              └─ Local: ─────────────────────────────────────────► Routes
//! ```
//!
//! A master's scheduler and controller manager used to reach their own API
//! over loopback TCP: every request, reply and watch event they exchanged
//! was framed as HTTP/2, written, woken for and read back in the same
//! process. A profile of a Deployment's create put that framing at a quarter
//! of the machine's CPU. `Local` hands the request to the same service
//! stack the listener serves (the same handlers, the same protobuf
//! messages, the same metadata, so the same fencing), in the caller's task;
//! only the HTTP/2 framing and the socket are gone.

use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::{BoxFuture, Service, StdError};
use tonic::service::Routes;
use tonic::transport::Channel;

/// Where a client's calls go.
#[derive(Clone, Debug)]
pub enum Transport {
    /// A connection to a master's API listener.
    Remote(Channel),
    /// This process's own API services.
    Local(Routes),
}

impl Service<Request<Body>> for Transport {
    type Response = Response<Body>;
    type Error = StdError;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self {
            Transport::Remote(channel) => channel.poll_ready(cx).map_err(Into::into),
            Transport::Local(routes) => {
                Service::<Request<Body>>::poll_ready(routes, cx).map_err(|never| match never {})
            }
        }
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        match self {
            Transport::Remote(channel) => {
                let call = channel.call(req);
                Box::pin(async move { call.await.map_err(Into::into) })
            }
            Transport::Local(routes) => {
                let call = routes.call(req);
                Box::pin(async move { call.await.map_err(|never| match never {}) })
            }
        }
    }
}
