//! `kiroku certs`: the private CA (kept offline, on an admin workstation),
//! the agents' issuing CA the collector holds, certificates and the root's
//! revocation list.

use std::path::PathBuf;

use kiroku_common::pki::{PkiDir, Role};

#[derive(clap::Subcommand)]
pub enum CertsCmd {
    /// Create a new CA (ca.pem, ca.key) in the PKI directory.
    Init {
        #[arg(long, default_value = "kiroku-pki", env = "KIROKU_PKI")]
        dir: PathBuf,
    },
    /// Create the agents' issuing CA (agents-ca.pem, agents-ca.key), signed
    /// by the root CA of the directory. Give both files to the collector
    /// (`[agents_ca] cert`, `key`, and `crl`, the agents' revocation list
    /// it writes when it retires an agent); from then on `issue --role
    /// agent` signs with it. The root key stays here, offline: a
    /// collector holding the agents CA can mint agents, never people.
    AgentsCa {
        #[arg(long, default_value = "kiroku-pki", env = "KIROKU_PKI")]
        dir: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "Kiroku agents CA")]
        name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 1825)]
        days: u32,
    },
    /// Issue a key and certificate carrying a role and a name (an agent's
    /// from the agents' issuing CA when the directory has one).
    Issue {
        #[arg(long, default_value = "kiroku-pki", env = "KIROKU_PKI")]
        dir: PathBuf,
        /// agent, investigator, admin, collector or signer (the collector's
        /// checkpoint signing key: `[checkpoint] signing_cert/signing_key`).
        #[arg(long)]
        role: Role,
        /// Agent id, user name or collector host name.
        #[arg(long)]
        name: String,
        /// The agent's group (retention overrides by group), carried in
        /// the certificate so the agent cannot change it. Agents only.
        #[arg(long)]
        group: Option<String>,
        /// Extra DNS names or IP addresses the holder serves under
        /// (collector certificates), repeatable.
        #[arg(long = "san")]
        sans: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
    /// Create one-time enrollment tokens (asks the collector; admins): an
    /// agent with a token and no certificate makes its key and gets its
    /// certificate from the collector's enrollment listener, with the
    /// group given here and its computer name as agent id. Audited.
    EnrollToken(crate::enroll_token::EnrollTokenArgs),
    /// The enrollment token batches (asks the collector; admins): how many
    /// of each batch's tokens are unused, used, expired or revoked; with
    /// --batch, each of its tokens by reference and the agent it enrolled.
    EnrollTokens(crate::enroll_token::ListTokensArgs),
    /// Revoke unused enrollment tokens (asks the collector; admins): a
    /// whole batch, or single tokens (the token or its reference). A used
    /// token's agent is retired instead (`kiroku agents retire`). Audited.
    RevokeEnrollTokens(crate::enroll_token::RevokeTokensArgs),
    /// Revoke a certificate: adds it to the CA's revocation list and
    /// rewrites crl.pem. A collector with `crl = ".../crl.pem"` picks it up
    /// within seconds, without a restart. With no --cert, only rewrites
    /// crl.pem (to create an empty one, or renew it before it expires).
    /// An agent certificate from the agents' issuing CA is revoked by the
    /// collector instead: `kiroku agents retire NAME`.
    Revoke {
        #[arg(long, default_value = "kiroku-pki", env = "KIROKU_PKI")]
        dir: PathBuf,
        /// The certificate to revoke (PEM).
        #[arg(long)]
        cert: Option<PathBuf>,
        /// Days until the list's nextUpdate.
        #[arg(long, default_value_t = 30)]
        days: u32,
    },
}

pub fn run(cmd: CertsCmd) -> anyhow::Result<()> {
    match cmd {
        CertsCmd::EnrollToken(_) | CertsCmd::EnrollTokens(_) | CertsCmd::RevokeEnrollTokens(_) => {
            anyhow::bail!(
                "the enrollment token commands talk to the collector (handled by the caller)"
            )
        }
        CertsCmd::Init { dir } => {
            let pki = PkiDir::new(&dir);
            pki.init_ca("Kiroku CA")?;
            println!(
                "created CA {} (keep {} secret)",
                pki.ca_cert().display(),
                pki.ca_key().display()
            );
        }
        CertsCmd::AgentsCa { dir, name, days } => {
            let pki = PkiDir::new(&dir);
            let (cert, key) = pki.init_agents_ca(&name, days)?;
            println!(
                "created the agents' issuing CA {} (key {}), signed by {}.\n\
                 Give both to the collector: [agents_ca] cert = \"{}\", key = \"{}\", crl = \"agents-crl.pem\".\n\
                 Agent certificates issued from now on come from it.",
                cert.display(),
                key.display(),
                pki.ca_cert().display(),
                cert.display(),
                key.display(),
            );
        }
        CertsCmd::Issue {
            dir,
            role,
            name,
            group,
            sans,
            days,
        } => {
            let pki = PkiDir::new(&dir);
            let (cert, key) = pki.issue_with(role, &name, &sans, days, group.as_deref())?;
            let by = if role == Role::Agent && pki.has_agents_ca() {
                "the agents' issuing CA"
            } else {
                "the root CA"
            };
            let group = group.map(|g| format!(" in group {g}")).unwrap_or_default();
            println!(
                "issued {role} certificate for {name}{group} by {by}: {} (key {})",
                cert.display(),
                key.display()
            );
        }
        CertsCmd::Revoke { dir, cert, days } => {
            let pki = PkiDir::new(&dir);
            match cert {
                Some(cert) => {
                    let (crl, who) = pki.revoke(&cert, days)?;
                    println!(
                        "revoked {who} ({}); wrote {}",
                        cert.display(),
                        crl.display()
                    );
                }
                None => {
                    let crl = pki.write_crl(days)?;
                    println!("wrote {}", crl.display());
                }
            }
        }
    }
    Ok(())
}
