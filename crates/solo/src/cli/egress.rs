//! `solo egress allow | deny | list`: where a tenant's services may send HTTP requests.

use clap::Subcommand;
use solo_types::api::EgressRules;

use super::Cmd;

#[derive(Subcommand, Debug)]
pub enum EgressCmd {
    /// Let a tenant's services reach these destinations (admin). A rule is
    /// `[http(s)://]host[:port]` (https and its port by default), `*.domain` for any
    /// name below it, `:*` for any port; a private address only as its exact IP and port.
    Allow {
        /// The tenant.
        tenant: String,
        /// The rules to add.
        #[arg(required = true)]
        rules: Vec<String>,
    },
    /// Remove rules from a tenant's list (admin).
    Deny {
        /// The tenant.
        tenant: String,
        /// The rules to remove.
        #[arg(required = true)]
        rules: Vec<String>,
    },
    /// Show egress rules: yours, or (admin) a tenant's or every tenant's.
    List {
        /// The tenant (admin).
        tenant: Option<String>,
    },
}

fn show(r: &EgressRules) {
    match r.rules.as_slice() {
        [] => println!("{}: no egress (deny all)", r.tenant),
        rules => println!("{}: {}", r.tenant, rules.join(", ")),
    }
}

pub(super) async fn run(c: &Cmd, cmd: EgressCmd) -> anyhow::Result<()> {
    match cmd {
        EgressCmd::Allow { tenant, rules } => {
            c.out(&c.client.change_egress(&tenant, &rules, true).await?, show);
        }
        EgressCmd::Deny { tenant, rules } => {
            c.out(&c.client.change_egress(&tenant, &rules, false).await?, show);
        }
        EgressCmd::List { tenant } => {
            c.out(&c.client.egress_rules(tenant.as_deref()).await?, |l| {
                if l.tenants.is_empty() {
                    println!("no tenant has egress rules");
                }
                l.tenants.iter().for_each(show);
            });
        }
    }
    Ok(())
}
