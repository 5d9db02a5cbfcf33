//! `solo init` and `solo certs issue`: the local certificates (no server needed).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;

use super::data_dir;
use crate::Global;
use crate::output::{self, fields};

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Another name (DNS or IP) the server certificate is valid for; repeatable.
    #[arg(long = "server-name", value_name = "NAME")]
    server_names: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum CertsCmd {
    /// Issue a client certificate for TENANT (its CN): writes DIR/TENANT.pem,
    /// DIR/TENANT-key.pem (0600) and DIR/ca.pem.
    Issue {
        /// The tenant the certificate names (its CN).
        #[arg(id = "tenant_name", value_name = "TENANT")]
        tenant: String,
        /// Make it an admin certificate (O solo-admin).
        #[arg(long)]
        admin: bool,
        /// Where to write the files (default DATA_DIR/certs/clients).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

/// `solo init`.
pub fn init(g: &Global, args: &InitArgs) -> anyhow::Result<()> {
    let dir = data_dir(g);
    let done = solo_gateway::pki::init(&dir, &args.server_names)?;
    let certs = solo_gateway::pki::CertPaths::new(&dir);
    if g.json {
        output::json(&json!({ "created": done.created, "certs": certs.dir }));
    } else if done.created {
        println!(
            "created the CA, the server and the admin certificates in {}",
            certs.dir.display()
        );
    } else {
        println!(
            "certificates already exist in {}; nothing to do",
            certs.dir.display()
        );
    }
    Ok(())
}

/// `solo certs issue`.
pub fn certs(g: &Global, cmd: CertsCmd) -> anyhow::Result<()> {
    let CertsCmd::Issue { tenant, admin, out } = cmd;
    let dir = data_dir(g);
    let out = out.unwrap_or_else(|| dir.join("certs").join("clients"));
    let cert = solo_gateway::pki::issue(&dir, &tenant, admin, &out)?;
    let key = out.join(format!("{tenant}-key.pem"));
    let ca = out.join("ca.pem");
    if g.json {
        output::json(
            &json!({ "tenant": tenant, "admin": admin, "cert": cert, "key": key, "ca": ca }),
        );
    } else {
        println!(
            "issued {} certificate for {tenant}:",
            if admin { "an admin" } else { "a" }
        );
        fields(&[
            ("cert", cert.display().to_string()),
            ("key", key.display().to_string()),
            ("ca", ca.display().to_string()),
        ]);
        println!(
            "use it with: SOLO_CERT={} SOLO_KEY={} SOLO_CA={} solo list",
            cert.display(),
            key.display(),
            ca.display()
        );
    }
    Ok(())
}
