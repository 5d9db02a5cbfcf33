//! `solo secrets set | get | list | rm | rotate | bind`.

use std::path::PathBuf;

use anyhow::Context;
use base64::Engine as _;
use clap::Subcommand;

use super::{Cmd, read_file};
use crate::output::spinner;

#[derive(Subcommand, Debug)]
pub enum SecretsCmd {
    /// Store a secret: the value from the argument, --from-file, or stdin.
    Set {
        /// The secret's name.
        name: String,
        /// The value (prefer --from-file or stdin: an argument is visible to other users
        /// of the machine).
        value: Option<String>,
        /// Read the value from this file.
        #[arg(long, value_name = "FILE", conflicts_with = "value")]
        from_file: Option<PathBuf>,
    },
    /// Print a secret's value.
    Get {
        /// The secret's name.
        name: String,
    },
    /// List secret names.
    List,
    /// Delete a secret.
    Rm {
        /// The secret's name.
        name: String,
    },
    /// Re-encrypt every secret under a new key (admin).
    Rotate,
    /// Let services send a secret to these hosts, as `{{secret:NAME}}` in a request
    /// header (or stop, with --unbind); with no --host, show where it may go.
    Bind {
        /// The secret's name.
        name: String,
        /// A host name, `*.domain` or an IP address (repeat for more).
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
        /// Remove these hosts instead.
        #[arg(long)]
        unbind: bool,
    },
}

pub(super) async fn run(c: &Cmd, cmd: SecretsCmd) -> anyhow::Result<()> {
    match cmd {
        SecretsCmd::Set {
            name,
            value,
            from_file,
        } => {
            let value = match (value, from_file) {
                (Some(v), _) => v.into_bytes(),
                (None, Some(f)) => read_file(&f)?,
                (None, None) => {
                    use std::io::Read;
                    let mut buf = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut buf)
                        .context("read the value from stdin")?;
                    if buf.ends_with(b"\n") {
                        buf.pop();
                    }
                    buf
                }
            };
            let r = c.client.put_secret(&name, &value).await?;
            c.out(&r, |r| println!("stored {}", r.name));
        }
        SecretsCmd::Get { name } => {
            let s = c.client.get_secret(&name).await?;
            c.out(&s, |s| match std::str::from_utf8(s.value.expose()) {
                Ok(text) => println!("{text}"),
                Err(_) => println!(
                    "{}",
                    base64::engine::general_purpose::STANDARD.encode(s.value.expose())
                ),
            });
        }
        SecretsCmd::List => {
            c.out(&c.client.list_secrets().await?, |l| {
                l.names.iter().for_each(|n| println!("{n}"));
            });
        }
        SecretsCmd::Rm { name } => {
            c.out(&c.client.delete_secret(&name).await?, |d| {
                if d.existed {
                    println!("deleted {}", d.name);
                } else {
                    println!("{} did not exist", d.name);
                }
            });
        }
        SecretsCmd::Bind {
            name,
            hosts,
            unbind,
        } => {
            let b = c.client.bind_secret(&name, &hosts, unbind).await?;
            c.out(&b, |b| match b.hosts.as_slice() {
                [] => println!("{} may be sent nowhere", b.name),
                hosts => println!("{} may be sent to {}", b.name, hosts.join(", ")),
            });
        }
        SecretsCmd::Rotate => {
            let pb = spinner("re-encrypting secrets");
            let r = c.client.rotate_secrets().await;
            pb.finish_and_clear();
            c.out(&r?, |r| println!("re-encrypted {} secrets", r.rotated));
        }
    }
    Ok(())
}
