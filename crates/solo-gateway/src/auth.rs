//! Who a request comes from: the client certificate of its connection (CN = tenant,
//! O `solo-admin` = admin), else a bearer capability token, else nobody.

use axum::http::HeaderMap;
use solo_kernel::{Caller, Kernel};
use solo_types::TenantId;

use crate::error::ApiError;
use crate::tls::PeerIdentity;

/// What the serving loop knows about a connection, attached to each of its requests.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: Option<PeerIdentity>,
    pub remote: std::net::SocketAddr,
}

/// Who is asking: the connection a request came on and the request's headers. Every
/// face hands this, untouched, to the operation it serves.
#[derive(Clone, Copy)]
pub struct Who<'a> {
    pub conn: Option<&'a ConnInfo>,
    pub headers: &'a HeaderMap,
}

/// The caller of a request. A certificate wins over a token; `x-solo-tenant` is honoured
/// only for admins (a tenant's header is ignored, never an error).
pub fn authenticate(
    kernel: &Kernel,
    conn: Option<&ConnInfo>,
    headers: &HeaderMap,
) -> Result<Caller, ApiError> {
    if let Some(peer) = conn.and_then(|c| c.peer.as_ref()) {
        let own = TenantId::new(peer.common_name.clone()).map_err(|e| {
            ApiError::unauthenticated(format!(
                "the certificate's CN {:?} is not a tenant id: {e}",
                peer.common_name
            ))
        })?;
        if !peer.admin {
            return Ok(Caller::tenant(own));
        }
        let acting = headers
            .get(solo_proto::TENANT_KEY)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty());
        return match acting {
            None => Ok(Caller::admin(own)),
            Some(t) => TenantId::new(t)
                .map(Caller::admin)
                .map_err(|e| ApiError::invalid("invalid_tenant", format!("x-solo-tenant: {e}"))),
        };
    }
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    match bearer {
        Some(token) => kernel.authenticate_token(token.trim()).map_err(|reason| {
            ApiError::new(
                solo_types::Code::Unauthenticated,
                format!("capability_{reason}"),
                format!("the bearer token was refused: {reason}"),
            )
        }),
        None => Err(ApiError::unauthenticated(
            "a client certificate signed by the Solo CA, or a bearer capability token, is required",
        )),
    }
}
