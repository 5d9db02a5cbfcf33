//! `solo caps grant | verify | revoke | attenuate | list`.

use clap::Subcommand;
use solo_types::api::{
    GrantRequest, Granted, Narrowing, permission_named, permissions_named, resource_named,
};

use super::Cmd;
use crate::output::{table, time};

#[derive(Subcommand, Debug)]
pub enum CapsCmd {
    /// Mint a token for RESOURCE (service:ID, secret:NAME, events, kernel) with PERMISSIONS.
    Grant {
        /// What the token is for: service:ID, secret:NAME, events, kernel or *.
        resource: String,
        /// What it allows: call, read, write, deploy, kill, swap, register (comma-separated).
        #[arg(required = true, value_delimiter = ',')]
        permissions: Vec<String>,
        /// Lifetime in seconds (0: the default, one hour).
        #[arg(long, default_value_t = 0)]
        ttl: i64,
    },
    /// Would TOKEN allow PERMISSION on RESOURCE?
    Verify {
        /// The token to check.
        #[arg(id = "token_arg", value_name = "TOKEN")]
        token: String,
        /// The resource it would act on.
        resource: String,
        /// The permission it would use.
        permission: String,
    },
    /// Revoke a token (or its hash) and everything attenuated from it.
    Revoke {
        /// The token, or its hash.
        #[arg(id = "token_arg", value_name = "TOKEN")]
        token: String,
    },
    /// Mint a narrower token from TOKEN.
    Attenuate {
        /// The token to narrow.
        #[arg(id = "token_arg", value_name = "TOKEN")]
        token: String,
        /// A narrower resource (default: the parent's).
        #[arg(long)]
        resource: Option<String>,
        /// Fewer permissions (default: the parent's), comma-separated.
        #[arg(long, value_delimiter = ',')]
        permissions: Vec<String>,
        /// A shorter lifetime in seconds (0: the parent's).
        #[arg(long, default_value_t = 0)]
        ttl: i64,
    },
    /// List your capabilities (never their tokens).
    List,
}

fn print_granted(c: &Cmd, g: &Granted) {
    c.out(g, |g| {
        println!("{}", g.token.expose());
        eprintln!(
            "{} on {} until {} (the token is shown once; only its hash is kept)",
            g.info.permissions,
            g.info.resource,
            time(g.info.expires_at)
        );
    });
}

pub(super) async fn run(c: &Cmd, cmd: CapsCmd) -> anyhow::Result<()> {
    match cmd {
        CapsCmd::Grant {
            resource,
            permissions,
            ttl,
        } => {
            let req = GrantRequest {
                resource: resource_named(&resource)?,
                permissions: permissions_named(&permissions)?,
                ttl_seconds: (ttl != 0).then_some(ttl),
            };
            print_granted(c, &c.client.grant(&req).await?);
        }
        CapsCmd::Attenuate {
            token,
            resource,
            permissions,
            ttl,
        } => {
            let n = Narrowing {
                resource: resource.as_deref().map(resource_named).transpose()?,
                permissions: (!permissions.is_empty())
                    .then(|| permissions_named(&permissions))
                    .transpose()?,
                ttl_seconds: (ttl != 0).then_some(ttl),
            };
            print_granted(c, &c.client.attenuate(&token, &n).await?);
        }
        CapsCmd::Verify {
            token,
            resource,
            permission,
        } => {
            let v = c
                .client
                .verify(
                    &token,
                    &resource_named(&resource)?,
                    permission_named(&permission)?,
                )
                .await?;
            c.out(&v, |v| match &v.reason {
                None => println!("valid"),
                Some(r) => println!("refused: {r}"),
            });
            if !v.valid && !c.json {
                anyhow::bail!(
                    "the token does not allow it ({})",
                    v.reason.unwrap_or_default()
                );
            }
        }
        CapsCmd::Revoke { token } => {
            c.out(&c.client.revoke(&token).await?, |r| {
                println!("revoked {} capabilities", r.revoked);
            });
        }
        CapsCmd::List => {
            c.out(&c.client.list_capabilities().await?, |l| {
                let rows = l
                    .capabilities
                    .iter()
                    .map(|c| {
                        vec![
                            c.hash.chars().take(12).collect(),
                            c.resource.to_string(),
                            c.permissions.to_string(),
                            time(c.expires_at),
                            c.revoked.to_string(),
                        ]
                    })
                    .collect();
                table(
                    &["HASH", "RESOURCE", "PERMISSIONS", "EXPIRES", "REVOKED"],
                    rows,
                );
            });
        }
    }
    Ok(())
}
