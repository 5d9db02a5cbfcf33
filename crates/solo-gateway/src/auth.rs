//! Who a request comes from: the client certificate of its connection (CN = tenant,
//! O `solo-admin` = admin), else a bearer capability token, else nobody.

use std::sync::Arc;

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

/// Who is asking, as a face hands it, untouched, to the operation it serves: the
/// connection's identity, the bearer token and the `x-solo-tenant` header, if any.
#[derive(Clone, Copy, Default)]
pub struct Who<'a> {
    pub conn: Option<&'a ConnInfo>,
    pub bearer: Option<&'a str>,
    pub acting_for: Option<&'a str>,
}

/// The credentials of one request, taken from its connection and headers (the two
/// headers that matter, not the whole map).
#[derive(Clone, Default)]
pub struct Asker {
    conn: Option<Arc<ConnInfo>>,
    bearer: Option<String>,
    acting_for: Option<String>,
}

impl Asker {
    /// From the connection and the `authorization` and `x-solo-tenant` values.
    pub fn new(
        conn: Option<Arc<ConnInfo>>,
        authorization: Option<&str>,
        acting_for: Option<&str>,
    ) -> Self {
        let bearer = authorization.and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .map(|t| t.trim().to_string())
        });
        Self {
            conn,
            bearer,
            acting_for: acting_for.filter(|t| !t.is_empty()).map(str::to_string),
        }
    }

    /// From the connection and the request's headers.
    pub fn from_headers(conn: Option<Arc<ConnInfo>>, headers: &HeaderMap) -> Self {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        Self::new(
            conn,
            text(axum::http::header::AUTHORIZATION.as_str()),
            text(solo_proto::TENANT_KEY),
        )
    }

    pub fn who(&self) -> Who<'_> {
        Who {
            conn: self.conn.as_deref(),
            bearer: self.bearer.as_deref(),
            acting_for: self.acting_for.as_deref(),
        }
    }
}

/// The caller of a request. A certificate wins over a token; `x-solo-tenant` is honoured
/// only for admins (a tenant's header is ignored, never an error).
pub fn authenticate(kernel: &Kernel, who: Who<'_>) -> Result<Caller, ApiError> {
    if let Some(peer) = who.conn.and_then(|c| c.peer.as_ref()) {
        let own = TenantId::new(peer.common_name.clone()).map_err(|e| {
            ApiError::unauthenticated(format!(
                "the certificate's CN {:?} is not a tenant id: {e}",
                peer.common_name
            ))
        })?;
        if !peer.admin {
            return Ok(Caller::tenant(own));
        }
        return match who.acting_for {
            None => Ok(Caller::admin(own)),
            Some(t) => TenantId::new(t)
                .map(Caller::admin)
                .map_err(|e| ApiError::invalid("invalid_tenant", format!("x-solo-tenant: {e}"))),
        };
    }
    match who.bearer {
        Some(token) => {
            let source = who.conn.map(|c| c.remote.to_string());
            kernel
                .authenticate_token(token, source.as_deref())
                .map_err(|reason| {
                    ApiError::new(
                        solo_types::Code::Unauthenticated,
                        format!("capability_{reason}"),
                        format!("the bearer token was refused: {reason}"),
                    )
                })
        }
        None => Err(ApiError::unauthenticated(
            "a client certificate signed by the Solo CA, or a bearer capability token, is required",
        )),
    }
}
