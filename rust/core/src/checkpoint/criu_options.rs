//! What CRIU does with a container's TCP connections, and where that is set: Docker's checkpoint
//! API passes no per-container CRIU options, so for that path the option goes into the provider
//! host's `/etc/criu/runc.conf` (through a helper container that bind-mounts `/etc/criu`) for the
//! length of the migration; the direct path gives each container its own file instead
//! ([`vimigrate_protocol::CriuOptions`]).

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::provider::Provider;

/// Where runc's CRIU reads its options on a provider host.
const RUNC_CRIU_DIR: &str = "/etc/criu";
const RUNC_CRIU_FILE: &str = "runc.conf";

/// What CRIU does with established TCP connections, set for a migration on both hosts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CriuTcp {
    /// `tcp-established` when every network keeps its addresses (connections between
    /// containers that move together survive), `tcp-close` otherwise (they come back closed and
    /// the peers reconnect).
    #[default]
    Auto,
    /// Always `tcp-established`.
    Established,
    /// Always `tcp-close`.
    Close,
    /// Leave the hosts' `/etc/criu/runc.conf` as it is.
    Host,
}

impl Provider {
    /// Sets the TCP option of runc-driven CRIU runs on this provider's host to `option`
    /// (`tcp-established` or `tcp-close`) through a helper container that bind-mounts
    /// `/etc/criu` (Docker 20.10 passes no per-container CRIU options; this file is what runc's
    /// CRIU reads). Returns the file's previous content, for [`Provider::restore_criu_options`].
    pub(crate) async fn set_criu_tcp_option(&self, image: &str, option: &str) -> Result<Option<Vec<u8>>, Error> {
        let helper = self.criu_options_helper(image).await?;
        let result = async {
            let previous = self.read_file(&helper, &format!("/vimigrate-criu/{RUNC_CRIU_FILE}")).await?;
            let text = previous.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            let mut lines: Vec<&str> = text
                .lines()
                .filter(|l| !matches!(l.trim(), "tcp-established" | "tcp-close" | "skip-in-flight"))
                .collect();
            lines.push(option);
            // A server under load always has connections in its accept queue; CRIU refuses to
            // dump those ("In-flight connection") unless told to drop them. Their clients see a
            // reset or retry, as with any restart, while the accepted connections follow `option`.
            lines.push("skip-in-flight");
            let content = format!("{}\n", lines.join("\n"));
            self.write_file(&helper, &format!("/vimigrate-criu/{RUNC_CRIU_FILE}"), content.as_bytes()).await?;
            Ok(previous)
        }
        .await;
        if let Err(e) = self.force_remove(&helper).await {
            tracing::warn!(provider = %self.name(), error = %e.report(), "helper container left behind");
        }
        result
    }

    /// Puts back what [`Provider::set_criu_tcp_option`] found (an absent file comes back empty).
    pub(crate) async fn restore_criu_options(&self, image: &str, previous: Option<Vec<u8>>) -> Result<(), Error> {
        let helper = self.criu_options_helper(image).await?;
        let content = previous.unwrap_or_default();
        let result = self.write_file(&helper, &format!("/vimigrate-criu/{RUNC_CRIU_FILE}"), &content).await;
        if let Err(e) = self.force_remove(&helper).await {
            tracing::warn!(provider = %self.name(), error = %e.report(), "helper container left behind");
        }
        result
    }

    async fn criu_options_helper(&self, image: &str) -> Result<String, Error> {
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        self.create_helper(
            &format!("vimigrate-helper-criu-{unique}"),
            image,
            RUNC_CRIU_DIR,
            "/vimigrate-criu",
            false,
            "",
        )
        .await
    }
}
