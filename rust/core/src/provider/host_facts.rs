//! Reading a provider host's facts (CPU features, kernel, cgroup version, its CRIU and the
//! features CRIU offers there) for the preflight. Docker's API says nothing of them, so the
//! host's own `vimigrate-runtime` answers (see [`vimigrate_protocol::host_facts`]): the broker
//! creates the CRIU probe container under runtime `vimigrate`, leaves a request in its
//! directory through a helper container, starts it (the runtime's `create` writes the facts),
//! reads the answer and removes both containers, whatever happened.

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, StartContainerOptions};
use vimigrate_protocol::{HostFacts, FACTS_FILE, FACTS_REQUEST_FILE, FACTS_VERSION, RUNTIME_NAME, STATE_DIR};

use crate::checkpoint::criu_probe::{probe_container_name, ProbeGuard, PROBE_PATH};
use crate::error::{Error, ProviderError};
use crate::migration::path::direct_transfer::MOUNT;
use crate::provider::labels;
use crate::provider::Provider;
use crate::transfer::tar::writer::private_files_tar;

/// The step a failed read of the facts names.
const STEP: &str = "read the host's facts through vimigrate-runtime";

/// How long a host's facts, once read, serve again: a group's members are preflighted at once
/// against the same hosts, each needing their facts, and a probe container costs about a second
/// on a loaded host; a CPU, kernel or CRIU does not change within a minute of a migration.
const FACTS_FRESH: std::time::Duration = std::time::Duration::from_secs(60);

/// The last facts read from a host, and when; shared by a provider's clones. Callers that come
/// while one reads them wait for its answer rather than starting a probe of their own.
#[derive(Debug, Clone, Default)]
pub(crate) struct FactsCache(std::sync::Arc<tokio::sync::Mutex<Option<ReadFacts>>>);

/// Facts as read (`None`: a runtime of another facts version), and when.
type ReadFacts = (std::time::Instant, Option<HostFacts>);

impl Provider {
    /// The host's facts, as its `vimigrate-runtime` reads them (once a minute at
    /// most: a group's members share them). Only for a provider that has the runtime (the caller knows from
    /// [`Provider::probe`]); an answer of another [`FACTS_VERSION`] (a runtime older or newer
    /// than this engine) is `None`.
    pub async fn host_facts(&self) -> Result<Option<HostFacts>, Error> {
        let mut cached = self.facts.0.lock().await;
        if let Some((at, facts)) = cached.as_ref().filter(|(at, _)| at.elapsed() < FACTS_FRESH) {
            tracing::debug!(provider = %self.name(), age_ms = at.elapsed().as_millis() as u64, "host facts as read");
            return Ok(facts.clone());
        }
        let facts = self.read_host_facts().await?;
        *cached = Some((std::time::Instant::now(), facts.clone()));
        Ok(facts)
    }

    /// [`Provider::host_facts`] read now, through a probe container.
    async fn read_host_facts(&self) -> Result<Option<HostFacts>, Error> {
        let answer = format!("{STATE_DIR}/{FACTS_FILE}");
        let bytes = self
            .run_runtime_probe("host-facts-probe", &[(FACTS_REQUEST_FILE, b"")], &answer, None)
            .await?
            .ok_or_else(|| self.failed(format!("the runtime wrote no {FACTS_FILE} (is it older than this engine?)")))?;
        let facts: HostFacts =
            serde_json::from_slice(&bytes).map_err(|e| self.failed(format!("its answer is not valid JSON: {e}")))?;
        if facts.version != FACTS_VERSION {
            tracing::warn!(provider = %self.name(), version = facts.version, expected = FACTS_VERSION,
                "vimigrate-runtime answers host facts of another version; host checks skipped");
            return Ok(None);
        }
        Ok(Some(facts))
    }

    /// Asks this host's `vimigrate-runtime` something through a probe container: creates it
    /// under the runtime (without a network: it only has to be created), leaves `files` in its
    /// state directory through a helper, starts it (the runtime's `create` acts on them before
    /// the probe runs), reads `answer` (a path in the probe's directory) and removes both
    /// containers, whatever happened. `start_timeout` bounds the start (the runtime's work)
    /// instead of the provider's call timeout.
    pub(crate) async fn run_runtime_probe(
        &self,
        role: &str,
        files: &[(&str, &[u8])],
        answer: &str,
        start_timeout: Option<std::time::Duration>,
    ) -> Result<Option<Vec<u8>>, Error> {
        let image = self.ensure_probe_image().await?;
        let probe = probe_container_name();
        let helper = format!("{probe}-helper");
        let mut guards = [ProbeGuard::new(self.clone(), probe.clone()), ProbeGuard::new(self.clone(), helper.clone())];
        let outcome = self.ask_runtime(role, (&probe, &helper), &image, files, answer, start_timeout).await;
        for guard in &mut guards {
            guard.disarm();
        }
        for container in [&helper, &probe] {
            if let Err(e) = self.force_remove(container).await {
                tracing::warn!(provider = %self.name(), %container, error = %e.report(), "removing a runtime probe");
            }
        }
        outcome
    }

    fn failed(&self, detail: impl Into<String>) -> Error {
        ProviderError::Failed { provider: self.name().to_string(), step: STEP.into(), detail: detail.into() }.into()
    }

    async fn ask_runtime(
        &self,
        role: &str,
        (probe, helper): (&str, &str),
        image: &str,
        files: &[(&str, &[u8])],
        answer: &str,
        start_timeout: Option<std::time::Duration>,
    ) -> Result<Option<Vec<u8>>, Error> {
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            cmd: Some(vec![PROBE_PATH.to_string()]),
            labels: Some(labels::with_managed(&std::collections::BTreeMap::from([(
                "io.vimigrate.role".to_string(),
                role.to_string(),
            )]))),
            // Network mode none, but not NetworkDisabled: that drops the /etc/hostname mount the
            // runtime finds the container's directory by.
            host_config: Some(HostConfig {
                runtime: Some(RUNTIME_NAME.to_string()),
                network_mode: Some("none".to_string()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(probe).build();
        self.docker()
            .create_container(Some(options), body)
            .await
            .map_err(self.api_error(format!("create runtime probe `{probe}` ({role})")))?;
        let dir = self.container_dir(probe).await?;
        self.create_helper(helper, image, &dir, MOUNT, false, probe).await?;
        self.put_archive(helper, MOUNT, private_files_tar(STATE_DIR, files)).await?;
        let docker = match start_timeout {
            Some(timeout) => self.docker().clone().with_timeout(timeout),
            None => self.docker().clone(),
        };
        docker
            .start_container(probe, None::<StartContainerOptions>)
            .await
            .map_err(self.api_error(format!("start runtime probe `{probe}` ({role})")))?;
        self.read_file(helper, &format!("{MOUNT}/{answer}")).await
    }
}
