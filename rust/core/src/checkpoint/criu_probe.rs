//! Proving, not assuming, that a provider can checkpoint and restore a container: a tiny probe
//! container is checkpointed and restored through the provider's Docker Engine.
//!
//! No registry is reachable and the provider may hold no other image, so the probe image is built
//! here: a tar with one hand-assembled static x86_64 program, imported with
//! `POST /images/create?fromSrc=-`. The program opens a listening TCP socket before it waits,
//! because a CRIU that passes `criu check` may still fail to dump inet sockets (CRIU 4.1.1 on
//! Linux 6.16 and later): the probe must own one to catch that.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptionsBuilder, CreateImageOptionsBuilder, StartContainerOptions};
use futures_util::TryStreamExt;
use serde::Serialize;

use bollard::models::HostConfig;
use vimigrate_protocol::{CriuOptions, RUNTIME_NAME};

use crate::error::{is_not_found, Error, ProviderError};
use crate::migration::host::Host;
use crate::migration::path::direct_transfer::{local_restore_directive, place_directive, MOUNT};
use crate::provider::labels;
use crate::provider::Provider;

/// Repository of the probe image on every provider; its tag is the engine's version.
const PROBE_REPO: &str = "vimigrate/criu-probe";
/// The probe program's path inside the image.
pub(crate) const PROBE_PATH: &str = "/probe";
/// Name of the probe's checkpoint.
const PROBE_CHECKPOINT: &str = "vimigrate-criu-probe";
/// Prefix of probe container names.
const PROBE_CONTAINER_PREFIX: &str = "vimigrate-criu-probe-";
/// The requirement a failed probe reports.
const REQUIREMENT: &str = "CRIU checkpoint/restore";
/// Where the probe's single loadable segment is mapped.
const LOAD_ADDRESS: u64 = 0x40_0000;

/// What a successful [`Provider::check_criu`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct CriuCheck {
    /// How the probe was restored: `runtime` (a plain start that vimigrate-runtime turns into
    /// a restore, as the direct path restores) or `docker` (Docker's `start --checkpoint`).
    pub restored_by: &'static str,
    /// How long Docker took to checkpoint the probe container (CRIU dump included).
    pub checkpoint_ms: u64,
    /// How long Docker took to restore it (CRIU restore included).
    pub restore_ms: u64,
    /// The probe image used, `vimigrate/criu-probe:<engine version>`.
    pub image: String,
}

/// The probe program: a minimal static x86_64 Linux ELF executable that opens a TCP socket,
/// binds it to 0.0.0.0 on a port the kernel picks, listens, then loops on `pause`, so it stays
/// alive until killed and holds the kind of socket CRIU has to dump. One PT_LOAD segment maps
/// the whole file read+execute; the socket address lives in that segment after the code.
pub(crate) fn probe_elf() -> Vec<u8> {
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    let code_offset = EHDR + PHDR;

    let mut code: Vec<u8> = Vec::new();
    code.extend_from_slice(&[0xBF, 2, 0, 0, 0]); // mov edi, 2 (AF_INET)
    code.extend_from_slice(&[0xBE, 1, 0, 0, 0]); // mov esi, 1 (SOCK_STREAM)
    code.extend_from_slice(&[0x31, 0xD2]); // xor edx, edx (protocol 0)
    code.extend_from_slice(&[0xB8, 41, 0, 0, 0]); // mov eax, 41 (socket)
    code.extend_from_slice(&[0x0F, 0x05]); // syscall
    code.extend_from_slice(&[0x89, 0xC7]); // mov edi, eax (the socket; syscalls keep rdi)
    let lea_at = code.len();
    code.extend_from_slice(&[0x48, 0x8D, 0x35, 0, 0, 0, 0]); // lea rsi, [rip + sockaddr]
    code.extend_from_slice(&[0xBA, 16, 0, 0, 0]); // mov edx, 16 (sizeof sockaddr_in)
    code.extend_from_slice(&[0xB8, 49, 0, 0, 0]); // mov eax, 49 (bind)
    code.extend_from_slice(&[0x0F, 0x05]); // syscall
    code.extend_from_slice(&[0xBE, 8, 0, 0, 0]); // mov esi, 8 (backlog)
    code.extend_from_slice(&[0xB8, 50, 0, 0, 0]); // mov eax, 50 (listen)
    code.extend_from_slice(&[0x0F, 0x05]); // syscall
    let pause_at = code.len();
    code.extend_from_slice(&[0xB8, 34, 0, 0, 0]); // mov eax, 34 (pause)
    code.extend_from_slice(&[0x0F, 0x05]); // syscall
    let back = pause_at as i64 - (code.len() as i64 + 2);
    code.extend_from_slice(&[0xEB, back as i8 as u8]); // jmp pause_at
    let sockaddr_at = code.len();
    // struct sockaddr_in: AF_INET, port 0 (any free one), INADDR_ANY, 8 bytes of padding.
    code.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0]);
    code.extend_from_slice(&[0; 8]);
    let displacement = (sockaddr_at - (lea_at + 7)) as u32;
    code[lea_at + 3..lea_at + 7].copy_from_slice(&displacement.to_le_bytes());

    let file_len = (code_offset + code.len()) as u64;
    let entry = LOAD_ADDRESS + code_offset as u64;
    let mut elf = Vec::with_capacity(file_len as usize);
    // ELF header.
    elf.extend_from_slice(&[0x7F, b'E', b'L', b'F', 2, 1, 1, 0]); // magic, 64-bit, little-endian, v1, SysV
    elf.extend_from_slice(&[0; 8]); // ABI version and padding
    elf.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    elf.extend_from_slice(&0x3Eu16.to_le_bytes()); // e_machine: x86-64
    elf.extend_from_slice(&1u32.to_le_bytes()); // e_version
    elf.extend_from_slice(&entry.to_le_bytes()); // e_entry
    elf.extend_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff: no sections
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    elf.extend_from_slice(&(EHDR as u16).to_le_bytes()); // e_ehsize
    elf.extend_from_slice(&(PHDR as u16).to_le_bytes()); // e_phentsize
    elf.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    elf.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
    elf.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    elf.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
                                                // Program header: the whole file, loaded read+execute at LOAD_ADDRESS.
    elf.extend_from_slice(&1u32.to_le_bytes()); // p_type: PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // p_flags: R + X
    elf.extend_from_slice(&0u64.to_le_bytes()); // p_offset
    elf.extend_from_slice(&LOAD_ADDRESS.to_le_bytes()); // p_vaddr
    elf.extend_from_slice(&LOAD_ADDRESS.to_le_bytes()); // p_paddr
    elf.extend_from_slice(&file_len.to_le_bytes()); // p_filesz
    elf.extend_from_slice(&file_len.to_le_bytes()); // p_memsz
    elf.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
    elf.extend_from_slice(&code);
    elf
}

/// The probe image's root filesystem as a tar: `/probe` (0755) and the empty directories a
/// container's mounts go on.
pub(crate) fn probe_rootfs_tar() -> Vec<u8> {
    use crate::transfer::tar::writer::ustar_header;
    let program = probe_elf();
    let mut tar = Vec::new();
    for dir in ["dev/", "etc/", "proc/", "sys/"] {
        tar.extend_from_slice(&ustar_header(dir, 0o755, 0, b'5'));
    }
    tar.extend_from_slice(&ustar_header(PROBE_PATH.trim_start_matches('/'), 0o755, program.len(), b'0'));
    tar.extend_from_slice(&program);
    tar.resize(tar.len().div_ceil(512) * 512, 0);
    // End of archive: two zero blocks.
    tar.resize(tar.len() + 1024, 0);
    tar
}

/// A probe container name no other probe, in this process or another, uses at the same time:
/// `vimigrate-criu-probe-<pid>-<nanoseconds>-<counter>`.
pub(crate) fn probe_container_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{PROBE_CONTAINER_PREFIX}{}-{nanos}-{count}", std::process::id())
}

/// Turns Docker's refusal of a checkpoint or restore (400, 500 with CRIU's message, 501 when
/// experimental features are off) into [`ProviderError::Unsuitable`]; other errors (the daemon
/// unreachable, the container gone) stay as they are.
fn refused_as_unsuitable(err: Error) -> Error {
    match err {
        Error::Provider(ProviderError::Api {
            provider,
            step,
            source: bollard::errors::Error::DockerResponseServerError { status_code: 400 | 500 | 501, message },
        }) => ProviderError::Unsuitable {
            provider,
            requirement: REQUIREMENT,
            detail: format!("{step} was refused: {message}"),
        }
        .into(),
        other => other,
    }
}

/// Removes a probe's container if the probe is dropped half-way (its caller gave up on it, e.g.
/// a timeout), so that no probe container is ever left behind.
pub(crate) struct ProbeGuard {
    provider: Option<Provider>,
    container: String,
}

impl ProbeGuard {
    /// Guards `container` on `provider` until [`ProbeGuard::disarm`].
    pub(crate) fn new(provider: Provider, container: String) -> ProbeGuard {
        ProbeGuard { provider: Some(provider), container }
    }

    /// The probe finished, and its own cleanup takes over.
    pub(crate) fn disarm(&mut self) {
        self.provider = None;
    }
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        let Some(provider) = self.provider.take() else { return };
        let container = std::mem::take(&mut self.container);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = provider.force_remove(&container).await {
                        tracing::warn!(provider = %provider.name(), %container, error = %e.report(), "removing an abandoned CRIU probe container");
                    }
                });
            }
            Err(_) => {
                tracing::warn!(provider = %provider.name(), %container, "CRIU probe abandoned outside a runtime; its container may remain");
            }
        }
    }
}

impl Provider {
    /// Proves that this provider can checkpoint and restore a container the way a migration
    /// will: a probe container (image imported when absent) is started, checkpointed, restored
    /// and checked to be running; then its checkpoint and the container are removed, whatever
    /// happened. Where the provider has `vimigrate-runtime`, the probe runs under it and is
    /// restored as the direct path restores (Docker's own `start --checkpoint` is broken from
    /// Docker 28 on, moby/moby#50750, and the direct path does not use it); elsewhere through
    /// Docker's checkpoint API.
    ///
    /// A provider that cannot do it (CRIU missing or too old, no experimental mode, another
    /// architecture than x86_64, for which no probe program exists) gives
    /// [`ProviderError::Unsuitable`] with Docker's message; an unreachable one gives the usual
    /// connection or API errors, so callers can tell the two apart.
    pub async fn check_criu(&self) -> Result<CriuCheck, Error> {
        self.require_probe_platform().await?;
        let image = self.ensure_probe_image().await?;
        let via_runtime = self.has_runtime().await?;
        let container = probe_container_name();
        let helper = format!("{container}-helper");
        let mut guards =
            [ProbeGuard::new(self.clone(), container.clone()), ProbeGuard::new(self.clone(), helper.clone())];
        let outcome = self.run_probe(&container, &image, via_runtime.then_some(helper.as_str())).await;
        for guard in &mut guards {
            guard.disarm();
        }
        let cleanup = match via_runtime {
            true => self.force_remove(&helper).await.map(|_| ()),
            false => Ok(()),
        };
        let cleanup = cleanup.and(self.remove_probe(&container).await);
        match (outcome, cleanup) {
            (Ok(check), Ok(())) => {
                tracing::info!(provider = %self.name(), checkpoint_ms = check.checkpoint_ms, restore_ms = check.restore_ms, "CRIU checkpoint/restore works");
                Ok(check)
            }
            (Err(e), Ok(())) | (Ok(_), Err(e)) => Err(e),
            (Err(e), Err(cleanup)) => {
                tracing::warn!(provider = %self.name(), %container, error = %cleanup.report(), "cleanup after a failed CRIU probe");
                Err(e)
            }
        }
    }

    /// Refuses early, without touching the provider, when the probe program cannot run there or
    /// Docker says it has no experimental mode.
    async fn require_probe_platform(&self) -> Result<(), Error> {
        let version = self.docker().version().await.map_err(self.api_error("read version"))?;
        let unsuitable = |detail: String| -> Error {
            ProviderError::Unsuitable { provider: self.name().to_string(), requirement: REQUIREMENT, detail }.into()
        };
        let arch = version.arch.unwrap_or_default();
        let os = version.os.unwrap_or_default();
        if !matches!(arch.as_str(), "amd64" | "x86_64") || os != "linux" {
            return Err(unsuitable(format!(
                "not tested: the probe program is for linux/amd64 and the provider runs {os}/{arch}"
            )));
        }
        if version.experimental == Some(false) {
            return Err(unsuitable(
                "the Docker daemon does not run in experimental mode (dockerd --experimental)".into(),
            ));
        }
        Ok(())
    }

    /// Imports the probe image unless the provider has it already; returns its reference.
    pub(crate) async fn ensure_probe_image(&self) -> Result<String, Error> {
        let image = format!("{PROBE_REPO}:{}", crate::VERSION);
        match self.docker().inspect_image(&image).await {
            Ok(_) => return Ok(image),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(self.api_error(format!("inspect image `{image}`"))(e)),
        }
        let options = CreateImageOptionsBuilder::default()
            .from_src("-")
            .repo(PROBE_REPO)
            .tag(crate::VERSION)
            .message("vimigrate CRIU probe")
            .changes(vec![format!("CMD [\"{PROBE_PATH}\"]")])
            .build();
        let body = bollard::body_full(bytes::Bytes::from(probe_rootfs_tar()));
        self.docker()
            .create_image(Some(options), Some(body), None)
            .try_collect::<Vec<_>>()
            .await
            .map_err(self.api_error(format!("import probe image `{image}`")))?;
        tracing::debug!(provider = %self.name(), %image, "imported the CRIU probe image");
        Ok(image)
    }

    /// Whether the daemon offers runtime `vimigrate`.
    async fn has_runtime(&self) -> Result<bool, Error> {
        let info = self.docker().info().await.map_err(self.api_error("read system info"))?;
        Ok(info.runtimes.is_some_and(|r| r.contains_key(RUNTIME_NAME)))
    }

    /// Creates, starts, checkpoints and restores the probe container, and checks it runs. With
    /// a `helper` name, the probe runs under `vimigrate-runtime` and is restored through it
    /// (the helper mounts its directory to leave the restore directive there).
    async fn run_probe(&self, container: &str, image: &str, helper: Option<&str>) -> Result<CriuCheck, Error> {
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            cmd: Some(vec![PROBE_PATH.to_string()]),
            labels: Some(labels::with_managed(&BTreeMap::from([(
                "io.vimigrate.role".to_string(),
                "criu-probe".to_string(),
            )]))),
            host_config: helper.map(|_| HostConfig { runtime: Some(RUNTIME_NAME.to_string()), ..Default::default() }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(container).build();
        self.docker()
            .create_container(Some(options), body)
            .await
            .map_err(self.api_error(format!("create probe container `{container}`")))?;
        self.docker()
            .start_container(container, None::<StartContainerOptions>)
            .await
            .map_err(self.api_error(format!("start probe container `{container}`")))?;
        // The start returns once the process exists; give it a moment to open its socket, so
        // that the dump includes one.
        tokio::time::sleep(Duration::from_millis(100)).await;

        let started = Instant::now();
        self.create_checkpoint(container, PROBE_CHECKPOINT).await.map_err(refused_as_unsuitable)?;
        let checkpoint_ms = started.elapsed().as_millis() as u64;

        let started = Instant::now();
        match helper {
            Some(helper) => self.restore_probe_by_runtime(container, image, helper).await?,
            None => self.start_from_checkpoint(container, PROBE_CHECKPOINT).await.map_err(refused_as_unsuitable)?,
        }
        let restore_ms = started.elapsed().as_millis() as u64;

        // Checked twice: a restored process that crashes at once shows up only a moment later.
        for pause in [Duration::ZERO, Duration::from_millis(200)] {
            tokio::time::sleep(pause).await;
            self.require_probe_running(container).await?;
        }
        let restored_by = if helper.is_some() { "runtime" } else { "docker" };
        Ok(CriuCheck { restored_by, checkpoint_ms, restore_ms, image: image.to_string() })
    }

    /// Restores the checkpointed probe as the direct path restores a container: a local
    /// restore directive in its directory, then a plain `docker start`. First waits until
    /// Docker sees it stopped: Docker 28 with containerd 2.1 reports a checkpointed container
    /// as paused for a moment after the checkpoint call has returned.
    async fn restore_probe_by_runtime(&self, container: &str, image: &str, helper: &str) -> Result<(), Error> {
        let deadline = Instant::now() + Duration::from_secs(self.timeout_secs().clamp(5, 30));
        while self.is_running(container).await? {
            if Instant::now() > deadline {
                return Err(ProviderError::Unsuitable {
                    provider: self.name().to_string(),
                    requirement: REQUIREMENT,
                    detail: "the probe container still ran after its checkpoint".into(),
                }
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let dir = self.container_dir(container).await?;
        self.create_helper(helper, image, &dir, MOUNT, false, container).await?;
        let criu = CriuOptions { tcp: None, skip_in_flight: false };
        place_directive(self, helper, &local_restore_directive(&dir, PROBE_CHECKPOINT, &criu)).await?;
        self.docker()
            .start_container(container, None::<StartContainerOptions>)
            .await
            .map_err(self.api_error(format!("restore probe container `{container}` through vimigrate-runtime")))
            .map_err(refused_as_unsuitable)
    }

    /// Fails with [`ProviderError::Unsuitable`] unless the restored probe container is running.
    async fn require_probe_running(&self, container: &str) -> Result<(), Error> {
        let state = self
            .docker()
            .inspect_container(container, None)
            .await
            .map_err(self.api_error(format!("inspect probe container `{container}`")))?
            .state
            .unwrap_or_default();
        if state.running == Some(true) {
            return Ok(());
        }
        Err(ProviderError::Unsuitable {
            provider: self.name().to_string(),
            requirement: REQUIREMENT,
            detail: format!(
                "the probe container was not running after its restore (status {}, exit code {}{})",
                state.status.map(|s| s.to_string()).unwrap_or_else(|| "unknown".into()),
                state.exit_code.unwrap_or_default(),
                state.error.filter(|e| !e.is_empty()).map(|e| format!(", error: {e}")).unwrap_or_default(),
            ),
        }
        .into())
    }

    /// Deletes the probe's checkpoint and removes its container.
    async fn remove_probe(&self, container: &str) -> Result<(), Error> {
        // Removing the container takes its checkpoints with it; deleting first only frees the
        // (small) checkpoint early, so its failure is not an error.
        if let Err(e) = self.delete_checkpoint(container, PROBE_CHECKPOINT).await {
            tracing::debug!(provider = %self.name(), %container, error = %e.report(), "deleting the probe checkpoint");
        }
        self.remove_container(container).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(bytes: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([bytes[at], bytes[at + 1]])
    }

    fn u64_at(bytes: &[u8], at: usize) -> u64 {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(word)
    }

    #[test]
    fn probe_is_a_static_x86_64_executable() {
        let elf = probe_elf();
        assert_eq!(&elf[..4], b"\x7FELF");
        assert_eq!(elf[4], 2, "64-bit");
        assert_eq!(elf[5], 1, "little-endian");
        assert_eq!(u16_at(&elf, 16), 2, "ET_EXEC");
        assert_eq!(u16_at(&elf, 18), 0x3E, "x86-64");
        assert_eq!(u16_at(&elf, 56), 1, "one program header");
        let entry = u64_at(&elf, 24);
        let (phoff, filesz) = (u64_at(&elf, 32) as usize, u64_at(&elf, 64 + 32));
        assert_eq!(phoff, 64);
        assert_eq!(filesz, elf.len() as u64, "the segment maps the whole file");
        assert_eq!(u64_at(&elf, phoff + 16), LOAD_ADDRESS);
        let entry_offset = (entry - LOAD_ADDRESS) as usize;
        assert_eq!(entry_offset, 120, "code starts right after the headers");
        assert_eq!(&elf[entry_offset..entry_offset + 5], &[0xBF, 2, 0, 0, 0], "socket(AF_INET, ...)");
        // The loop: `mov eax, 34; syscall; jmp` back onto the mov.
        let jmp = elf.len() - 16 - 2;
        assert_eq!(elf[jmp], 0xEB);
        let target = (jmp + 2) as i64 + i64::from(elf[jmp + 1] as i8);
        assert_eq!(&elf[target as usize..target as usize + 7], &[0xB8, 34, 0, 0, 0, 0x0F, 0x05]);
        // The address bind() reads: AF_INET, port 0, INADDR_ANY.
        assert_eq!(&elf[elf.len() - 16..], &[2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    #[test]
    fn probe_runs_and_waits_until_killed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("vimigrate-probe-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("probe");
        std::fs::write(&path, probe_elf()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut child = std::process::Command::new(&path).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let still_running = child.try_wait().unwrap().is_none();
        child.kill().unwrap();
        child.wait().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(still_running, "the probe exited by itself");
    }

    #[test]
    fn tar_headers_are_valid_ustar() {
        let tar = probe_rootfs_tar();
        assert_eq!(tar.len() % 512, 0);
        assert!(tar[tar.len() - 1024..].iter().all(|&b| b == 0), "ends with two zero blocks");
        let mut at = 0;
        let mut entries = Vec::new();
        while tar[at..at + 512].iter().any(|&b| b != 0) {
            let header = &tar[at..at + 512];
            let field = |range: std::ops::Range<usize>| {
                String::from_utf8_lossy(&header[range]).trim_end_matches(['\0', ' ']).to_string()
            };
            let stored = u32::from_str_radix(&field(148..156), 8).unwrap();
            let computed: u32 = header
                .iter()
                .enumerate()
                .map(|(i, &b)| if (148..156).contains(&i) { u32::from(b' ') } else { u32::from(b) })
                .sum();
            assert_eq!(stored, computed, "checksum of {}", field(0..100));
            assert_eq!(&header[257..263], b"ustar\0");
            let size = usize::from_str_radix(&field(124..136), 8).unwrap();
            entries.push((field(0..100), field(100..108), header[156], tar[at + 512..at + 512 + size].to_vec()));
            at += 512 + size.div_ceil(512) * 512;
        }
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["dev/", "etc/", "proc/", "sys/", "probe"]);
        let probe = &entries[4];
        assert_eq!((probe.1.as_str(), probe.2), ("0000755", b'0'));
        assert_eq!(probe.3, probe_elf());
        assert!(entries[..4].iter().all(|e| e.2 == b'5' && e.3.is_empty()));
    }

    #[test]
    fn probe_names_are_unique_and_recognisable() {
        let (a, b) = (probe_container_name(), probe_container_name());
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("{PROBE_CONTAINER_PREFIX}{}-", std::process::id())), "{a}");
    }

    #[test]
    fn refused_checkpoint_becomes_unsuitable_but_unreachable_does_not() {
        let api = |source| -> Error {
            ProviderError::Api { provider: "p".into(), step: "checkpoint container `x` as `cp`".into(), source }.into()
        };
        let refused =
            api(bollard::errors::Error::DockerResponseServerError { status_code: 500, message: "criu failed".into() });
        let err = refused_as_unsuitable(refused);
        assert_eq!(err.kind(), crate::ErrorKind::Unsuitable);
        let report = err.report();
        assert!(
            report.contains(
                "CRIU checkpoint/restore is not met: checkpoint container `x` as `cp` was refused: criu failed"
            ),
            "{report}"
        );
        let gone = api(bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            message: "no such container".into(),
        });
        assert_eq!(refused_as_unsuitable(gone).kind(), crate::ErrorKind::NotFound);
        let timeout = api(bollard::errors::Error::RequestTimeoutError);
        assert_eq!(refused_as_unsuitable(timeout).kind(), crate::ErrorKind::Unavailable);
    }
}
