//! `kiroku agents`: retiring an agent (admins): its certificate revoked
//! through the agents' issuing CA the collector holds, its connections cut,
//! its events kept under retention.

use kiroku_common::quote::terminal;
use kiroku_proto::RetireAgentRequest;

use crate::client::ConnectArgs;

#[derive(clap::Subcommand, Debug)]
pub enum AgentsCmd {
    /// Retire an agent that no longer reports: revoke its certificate (in
    /// the agents' revocation list the collector writes), cut its
    /// connections and refuse new ones; its events stay searchable and are
    /// kept under the retention policy. Audited. `kiroku hosts --stale 30d`
    /// lists the candidates.
    Retire {
        /// The agent id (as `kiroku hosts` shows it).
        name: String,
        /// Why (required): kept in the audit log and the host record.
        #[arg(long)]
        reason: String,
    },
}

pub async fn run(connect: &ConnectArgs, cmd: AgentsCmd) -> anyhow::Result<()> {
    match cmd {
        AgentsCmd::Retire { name, reason } => {
            let r = connect
                .admin()
                .await?
                .retire_agent(RetireAgentRequest {
                    agent_id: name,
                    reason,
                })
                .await?
                .into_inner();
            println!("{}", terminal(&r.message));
        }
    }
    Ok(())
}
