//! Accepting under a cap, for the small listeners outside the gateway's connection table
//! (a standby's relay and its metrics page).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// What [`accept`] got.
pub enum Accepted {
    /// A connection, holding one of the cap's permits while it lives.
    Conn(TcpStream, OwnedSemaphorePermit),
    /// A connection over the cap, closed at once.
    OverCap,
    /// `stop` was cancelled.
    Stopped,
}

/// Accepts the next connection on `listener` within `limit`, until `stop`. A failure to
/// accept (out of descriptors and the like) is logged as `what`'s and waited out a
/// little rather than spun on.
pub async fn accept(
    listener: &TcpListener,
    limit: &Arc<Semaphore>,
    stop: &CancellationToken,
    what: &str,
) -> Accepted {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return Accepted::Stopped,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                return match Arc::clone(limit).try_acquire_owned() {
                    Ok(permit) => Accepted::Conn(stream, permit),
                    Err(_) => Accepted::OverCap,
                };
            }
            Err(e) => {
                tracing::warn!(error = %e, listener = what, "could not accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
