//! What every request carries besides the TLS identity: the bearer token, the tenant an
//! admin acts for, the cluster node an admin addresses.

use tonic::metadata::{Ascii, MetadataValue};

use crate::ClientError;

/// What every request carries besides the TLS identity.
#[derive(Clone, Default)]
pub struct Credentials {
    token: Option<MetadataValue<Ascii>>,
    tenant: Option<MetadataValue<Ascii>>,
    pub(crate) node: Option<MetadataValue<Ascii>>,
}

impl Credentials {
    /// Each given value as the header it is sent in, refused if a header cannot carry it.
    pub(crate) fn new(
        token: Option<&str>,
        tenant: Option<&str>,
        node: Option<&str>,
    ) -> Result<Self, ClientError> {
        Ok(Self {
            token: token
                .map(|t| {
                    format!("Bearer {t}")
                        .parse()
                        .map_err(|_| ClientError::Invalid {
                            what: "token",
                            detail: "it contains characters a header cannot carry".into(),
                        })
                })
                .transpose()?,
            tenant: tenant.map(|t| header("tenant", t)).transpose()?,
            node: node.map(|n| header("node", n)).transpose()?,
        })
    }
}

/// `value` (naming `what`) as a header value.
pub(crate) fn header(what: &'static str, value: &str) -> Result<MetadataValue<Ascii>, ClientError> {
    value.parse().map_err(|_| ClientError::Invalid {
        what,
        detail: format!("{value:?} cannot be sent as a header"),
    })
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &self.token.as_ref().map(|_| "redacted"))
            .field("tenant", &self.tenant)
            .field("node", &self.node)
            .finish()
    }
}

impl tonic::service::Interceptor for Credentials {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.token {
            req.metadata_mut().insert("authorization", t.clone());
        }
        if let Some(t) = &self.tenant {
            req.metadata_mut().insert(solo_proto::TENANT_KEY, t.clone());
        }
        if let Some(n) = &self.node {
            req.metadata_mut().insert(solo_proto::NODE_KEY, n.clone());
        }
        Ok(req)
    }
}
