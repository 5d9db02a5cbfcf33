//! Who a request comes from: the client certificate of its connection (CN = tenant,
//! O `solo-admin` = admin), else a bearer capability token, else nobody.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue};
use solo_kernel::{Caller, Kernel};
use solo_types::TenantId;

use crate::error::ApiError;
use crate::tls::PeerIdentity;

/// The header a forwarding node names its client's certificate in: `tenant CN` or
/// `admin CN`; absent, the client presented none. Honoured only on a connection that
/// presents a node certificate (O `solo-node`); removed from every other request.
pub const FORWARDED_PEER: &str = "x-solo-forwarded-peer";
/// The client's address, as the forwarding node saw it.
pub const FORWARDED_REMOTE: &str = "x-solo-forwarded-remote";

/// What the serving loop knows about a connection, attached to each of its requests.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: Option<PeerIdentity>,
    pub remote: std::net::SocketAddr,
}

/// The connection a request stands for: on a node's connection (a request another node
/// forwarded), the client that node names in the forwarded headers; on any other, the
/// connection itself. The headers are removed either way, so nothing further on reads
/// them and a client cannot claim them. A node's certificate never stands for anyone:
/// a forwarded request naming no certificate has none (a bearer token may still stand in).
pub(crate) fn on_behalf(conn: &Arc<ConnInfo>, headers: &mut HeaderMap) -> Arc<ConnInfo> {
    let peer = headers.remove(FORWARDED_PEER);
    let remote = headers.remove(FORWARDED_REMOTE);
    if !conn.peer.as_ref().is_some_and(|p| p.node) {
        return Arc::clone(conn);
    }
    let peer = peer.and_then(|v| {
        let (kind, cn) = v.to_str().ok()?.split_once(' ')?;
        let admin = match kind {
            "tenant" => false,
            "admin" => true,
            _ => return None,
        };
        Some(PeerIdentity {
            common_name: cn.to_string(),
            admin,
            node: false,
        })
    });
    let remote = remote
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(conn.remote);
    Arc::new(ConnInfo { peer, remote })
}

/// Names the client of `conn` in a request this node forwards (replacing whatever the
/// client sent under those names).
pub(crate) fn write_forwarded(conn: Option<&ConnInfo>, headers: &mut HeaderMap) {
    headers.remove(FORWARDED_PEER);
    headers.remove(FORWARDED_REMOTE);
    let Some(conn) = conn else { return };
    if let Some(peer) = &conn.peer
        && !peer.node
    {
        let kind = if peer.admin { "admin" } else { "tenant" };
        // A CN that is not header text cannot be a tenant id either: it goes unnamed,
        // and the request is authenticated as one without a certificate.
        if let Ok(v) = HeaderValue::try_from(format!("{kind} {}", peer.common_name)) {
            headers.insert(FORWARDED_PEER, v);
        }
    }
    if let Ok(v) = HeaderValue::try_from(conn.remote.to_string()) {
        headers.insert(FORWARDED_REMOTE, v);
    }
}

/// Whom a request says it acts for, as far as routing it on a cluster needs to know:
/// nothing here is verified (the node it is routed to authenticates it, and refuses a
/// tenant it does not serve), so a false claim only sends a request where it is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// A tenant's certificate; an admin's, for the tenant it acts for (`x-solo-tenant`)
    /// or else its own (the admin's services are its own tenant's).
    Tenant(TenantId),
    /// A bearer token on a connection without a certificate: its tenant is found from
    /// the token.
    Token(String),
    /// An admin's certificate addressing one node of the cluster (`x-solo-node`): served
    /// by that node, whichever tenant it acts for.
    Node(String),
    /// No credentials, or unusable ones: served where it arrived, which refuses it.
    Nobody,
}

/// The claim of a request on `conn` (as [`on_behalf`] made it) with `headers`.
pub fn claim(conn: Option<&ConnInfo>, headers: &HeaderMap) -> Claim {
    let asker = Asker::from_headers(None, headers);
    let who = asker.who();
    if let Some(peer) = conn.and_then(|c| c.peer.as_ref()) {
        let node = headers
            .get(solo_proto::NODE_KEY)
            .and_then(|v| v.to_str().ok())
            .filter(|n| !n.is_empty());
        if let Some(node) = node
            && peer.admin
            && !peer.node
        {
            return Claim::Node(node.to_string());
        }
        return match by_certificate(peer, who.acting_for) {
            Ok(c) => Claim::Tenant(c.tenant_id().clone()),
            Err(_) => Claim::Nobody,
        };
    }
    match who.bearer {
        Some(token) if !token.is_empty() => Claim::Token(token.to_string()),
        _ => Claim::Nobody,
    }
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

/// The caller a verified client certificate stands for.
fn by_certificate(peer: &PeerIdentity, acting_for: Option<&str>) -> Result<Caller, ApiError> {
    if peer.node {
        return Err(ApiError::unauthenticated(
            "a node's certificate acts for nobody: it only forwards its clients' requests",
        ));
    }
    let own = TenantId::new(peer.common_name.clone()).map_err(|e| {
        ApiError::unauthenticated(format!(
            "the certificate's CN {:?} is not a tenant id: {e}",
            peer.common_name
        ))
    })?;
    if !peer.admin {
        return Ok(Caller::tenant(own));
    }
    match acting_for {
        None => Ok(Caller::admin(own)),
        Some(t) => TenantId::new(t)
            .map(Caller::admin)
            .map_err(|e| ApiError::invalid("invalid_tenant", format!("x-solo-tenant: {e}"))),
    }
}

/// The caller of a request. A certificate wins over a token; `x-solo-tenant` is honoured
/// only for admins (a tenant's header is ignored, never an error).
pub fn authenticate(kernel: &Kernel, who: Who<'_>) -> Result<Caller, ApiError> {
    if let Some(peer) = who.conn.and_then(|c| c.peer.as_ref()) {
        return by_certificate(peer, who.acting_for);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(peer: Option<(&str, bool, bool)>) -> Arc<ConnInfo> {
        Arc::new(ConnInfo {
            peer: peer.map(|(cn, admin, node)| PeerIdentity {
                common_name: cn.into(),
                admin,
                node,
            }),
            remote: "10.0.0.9:4000".parse().unwrap(),
        })
    }

    fn claims(peer: &str, remote: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(FORWARDED_PEER, HeaderValue::from_str(peer).unwrap());
        h.insert(FORWARDED_REMOTE, HeaderValue::from_str(remote).unwrap());
        h
    }

    #[test]
    fn only_a_node_may_name_the_client_it_forwards() {
        // A tenant (or a client without a certificate) claiming to be forwarded gets
        // nothing from it: the headers are dropped, its own identity stands.
        for c in [conn(Some(("mallory", false, false))), conn(None)] {
            let mut h = claims("admin admin", "127.0.0.1:1");
            let got = on_behalf(&c, &mut h);
            assert_eq!(got.peer, c.peer);
            assert_eq!(got.remote, c.remote);
            assert!(h.get(FORWARDED_PEER).is_none() && h.get(FORWARDED_REMOTE).is_none());
        }
        // A node's connection stands for the client it names.
        let node = conn(Some(("node-b", false, true)));
        let mut h = claims("admin root", "192.0.2.1:5555");
        let got = on_behalf(&node, &mut h);
        let peer = got.peer.clone().unwrap();
        assert_eq!(
            (peer.common_name.as_str(), peer.admin, peer.node),
            ("root", true, false)
        );
        assert_eq!(got.remote.to_string(), "192.0.2.1:5555");
        // Naming nobody (or garbage) is a client without a certificate, never the node.
        for bad in ["", "node node-b", "tenant", "superuser x"] {
            let mut h = HeaderMap::new();
            if !bad.is_empty() {
                h.insert(FORWARDED_PEER, HeaderValue::from_str(bad).unwrap());
            }
            assert_eq!(on_behalf(&node, &mut h).peer, None, "{bad:?}");
        }
    }

    #[test]
    fn a_request_claims_a_tenant_by_certificate_or_token() {
        let with = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(
                    axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            h
        };
        let tenant = |s: &str| Claim::Tenant(TenantId::new(s).unwrap());
        let alice = conn(Some(("alice", false, false)));
        let root = conn(Some(("root", true, false)));
        let node = conn(Some(("node-b", false, true)));
        let none = conn(None);
        let bearer = with(&[("authorization", "Bearer solo_abc")]);
        let acting = with(&[(solo_proto::TENANT_KEY, "bob")]);
        // A certificate wins over a token; a tenant's x-solo-tenant changes nothing.
        assert_eq!(claim(Some(&alice), &bearer), tenant("alice"));
        assert_eq!(claim(Some(&alice), &acting), tenant("alice"));
        // An admin acting for a tenant goes where the tenant is; otherwise where its own
        // tenant is.
        assert_eq!(claim(Some(&root), &acting), tenant("bob"));
        assert_eq!(claim(Some(&root), &HeaderMap::new()), tenant("root"));
        // An admin may address a node; a tenant's x-solo-node changes nothing.
        let on_b = with(&[(solo_proto::NODE_KEY, "b"), (solo_proto::TENANT_KEY, "bob")]);
        assert_eq!(claim(Some(&root), &on_b), Claim::Node("b".into()));
        assert_eq!(claim(Some(&alice), &on_b), tenant("alice"));
        assert_eq!(claim(Some(&none), &on_b), Claim::Nobody);
        // A token without a certificate is looked up.
        assert_eq!(claim(Some(&none), &bearer), Claim::Token("solo_abc".into()));
        assert_eq!(claim(None, &bearer), Claim::Token("solo_abc".into()));
        // Nothing usable: a node's certificate, a CN that is no tenant id, an admin
        // acting for a bad id, an empty token, nothing at all.
        let bad_cn = conn(Some(("Not A Tenant", false, false)));
        let bad_acting = with(&[(solo_proto::TENANT_KEY, "B@D")]);
        assert_eq!(claim(Some(&node), &HeaderMap::new()), Claim::Nobody);
        assert_eq!(claim(Some(&bad_cn), &HeaderMap::new()), Claim::Nobody);
        assert_eq!(claim(Some(&root), &bad_acting), Claim::Nobody);
        let empty = with(&[("authorization", "Bearer ")]);
        assert_eq!(claim(None, &empty), Claim::Nobody);
        assert_eq!(claim(None, &HeaderMap::new()), Claim::Nobody);
    }

    #[test]
    fn a_node_certificate_is_no_caller() {
        let node = conn(Some(("node-b", false, true)));
        let peer = node.peer.as_ref().unwrap();
        for acting_for in [None, Some("alice")] {
            let e = by_certificate(peer, acting_for).unwrap_err();
            assert_eq!(e.0.code, solo_types::Code::Unauthenticated, "{e:?}");
        }
        let tenant = conn(Some(("alice", false, false)));
        let c = by_certificate(tenant.peer.as_ref().unwrap(), Some("bob")).unwrap();
        assert_eq!(
            c.tenant_id().as_str(),
            "alice",
            "a tenant's x-solo-tenant is ignored"
        );
        let mut out = HeaderMap::new();
        write_forwarded(Some(&node), &mut out);
        assert!(
            out.get(FORWARDED_PEER).is_none(),
            "a node is never named as a client"
        );
        assert_eq!(out[FORWARDED_REMOTE], "10.0.0.9:4000");
    }
}
