//! Docker's own checkpoint path: `docker checkpoint create` on the source, the images copied by
//! the broker from a helper container that mounts the source's checkpoint directory into one
//! that mounts the destination's, `docker start --checkpoint` there. Works with any Docker
//! Engine in experimental mode (up to 27: Docker 28 broke the restore, moby#50750); slow, since
//! containerd's content store copies the images twice each way (60-75 MB/s).

use vimigrate_protocol::{parse_dump_stats, rewrite_addresses};

use crate::error::{Error, InputError};
use crate::migration::path::{first_layer_pass, not_prepared, CheckpointPath, Ctx, InPhase, StepError};
use crate::migration::report::{MigrationStats, Phase};
use crate::migration::side::Side;
use crate::migration::undo::Undo;
use crate::provider::files::parent;
use crate::provider::Provider;
use crate::transfer::archive::{copy_archive, verify_copy};
use crate::transfer::layer_sync::LayerSync;
use crate::transfer::tar::manifest::TarManifest;

/// Where the source's helper mounts the container's checkpoints directory.
const SOURCE_MOUNT: &str = "/vimigrate-src";
/// Where the destination's helper mounts it.
const DESTINATION_MOUNT: &str = "/vimigrate-dst";

/// The state of one migration on Docker's checkpoint path.
#[derive(Default)]
pub(crate) struct DockerPath {
    /// The helpers that carry the checkpoint: (on the source, on the destination).
    helpers: Option<(String, String)>,
    /// The writable layer, after its first pass.
    layer: Option<LayerSync>,
    /// What the checkpoint's copy read, for the verify phase.
    sent: Option<TarManifest>,
    /// Peer files rewritten on the destination.
    rewrites: Vec<(String, usize)>,
}

impl DockerPath {
    fn helpers(&self) -> Result<&(String, String), Error> {
        self.helpers.as_ref().ok_or_else(|| not_prepared("helper containers"))
    }

    /// Declared peer files, read from the frozen source, addresses rewritten, written into the
    /// destination before its restore (the process reads the new addresses when it reconnects).
    async fn rewrite_peer_files(ctx: &Ctx<'_, Provider>, destination_id: &str) -> Result<Vec<(String, usize)>, Error> {
        let mut done = Vec::new();
        for path in &ctx.plan.peer_files {
            let Some(content) = ctx.src.read_file(&ctx.source.id, path).await? else {
                return Err(InputError::new("peer_files", "files that exist in the container", path).into());
            };
            let text = String::from_utf8_lossy(&content);
            let (rewritten, count) = rewrite_addresses(&text, &ctx.plan.address_map);
            ctx.dst.write_file(destination_id, path, rewritten.as_bytes()).await?;
            done.push((path.clone(), count));
        }
        Ok(done)
    }
}

impl CheckpointPath<Provider> for DockerPath {
    fn method(&self) -> &'static str {
        "docker"
    }

    async fn prepare(&mut self, ctx: &Ctx<'_, Provider>, undo: &mut Undo) -> Result<(), Error> {
        let destination_id = undo.destination_id.clone().ok_or_else(|| not_prepared("the destination container"))?;
        let src_dir = ctx.src.checkpoint_parent_dir(&ctx.source.id).await?;
        let dst_dir = ctx.dst.checkpoint_parent_dir(&destination_id).await?;
        let tag: String = destination_id.chars().take(12).collect();
        let (image, serves) = (&ctx.plan.image, &ctx.source.name);
        let src_helper = ctx
            .src
            .create_helper(&format!("vimigrate-helper-src-{tag}"), image, &src_dir, SOURCE_MOUNT, true, serves)
            .await?;
        undo.helpers.push((Side::Source, src_helper.clone()));
        let dst_helper = ctx
            .dst
            .create_helper(&format!("vimigrate-helper-dst-{tag}"), image, &dst_dir, DESTINATION_MOUNT, false, serves)
            .await?;
        undo.helpers.push((Side::Destination, dst_helper.clone()));
        self.helpers = Some((src_helper, dst_helper));
        Ok(())
    }

    async fn precopy(&mut self, ctx: &Ctx<'_, Provider>, undo: &Undo, stats: &mut MigrationStats) -> Result<(), Error> {
        self.layer = Some(first_layer_pass(ctx, undo, stats).await?);
        Ok(())
    }

    fn arms_host_wide(&self) -> bool {
        true
    }

    async fn arm(&mut self, ctx: &Ctx<'_, Provider>, undo: &mut Undo) -> Result<(), Error> {
        // Docker passes no per-container CRIU options: the hosts' runc.conf carries the TCP
        // mode for the length of the migration, and the undo log puts it back.
        let Some(option) = ctx.plan.criu_tcp_option() else { return Ok(()) };
        for side in [Side::Source, Side::Destination] {
            let previous = side.of((ctx.src, ctx.dst)).set_criu_tcp_option(&ctx.plan.image, option).await?;
            undo.criu_options.push((side, previous));
        }
        Ok(())
    }

    async fn freeze(&mut self, ctx: &Ctx<'_, Provider>) -> Result<(), Error> {
        ctx.src.create_checkpoint(&ctx.source.id, &ctx.plan.checkpoint).await
    }

    async fn transfer(
        &mut self,
        ctx: &Ctx<'_, Provider>,
        undo: &Undo,
        stats: &mut MigrationStats,
    ) -> Result<(), StepError> {
        let phase = Phase::Transfer;
        let destination_id =
            undo.destination_id.as_deref().ok_or_else(|| not_prepared("the destination")).in_phase(phase)?;
        let (src_helper, dst_helper) = self.helpers().in_phase(phase)?.clone();
        let layer = self.layer.as_mut().ok_or_else(|| not_prepared("the layer's first pass")).in_phase(phase)?;
        let mut total = layer.delta_pass(&|bytes| ctx.bytes(phase, bytes)).await.in_phase(phase)?.bytes;
        for volume in &ctx.source.volumes {
            let done = total;
            let each = |bytes: u64| ctx.bytes(phase, done + bytes);
            let copied = copy_archive(
                ctx.src,
                &ctx.source.id,
                &volume.destination,
                ctx.dst,
                destination_id,
                parent(&volume.destination),
                &each,
            )
            .await
            .in_phase(phase)?;
            total += copied.bytes;
        }
        let done = total;
        let each = |bytes: u64| ctx.bytes(phase, done + bytes);
        let from = format!("{SOURCE_MOUNT}/{}", ctx.plan.checkpoint);
        let copied = copy_archive(ctx.src, &src_helper, &from, ctx.dst, &dst_helper, DESTINATION_MOUNT, &each)
            .await
            .in_phase(phase)?;
        total += copied.bytes;
        stats.transfer_bytes = total;
        stats.checkpoint_bytes = copied.bytes;
        stats.criu_dump = copied.manifest.captured.get(vimigrate_protocol::DUMP_STATS_FILE).and_then(|bytes| {
            parse_dump_stats(bytes)
                .map_err(|e| tracing::warn!(error = %e, "CRIU dump statistics unreadable; reported without them"))
                .ok()
        });
        self.sent = Some(copied.manifest);
        self.rewrites = Self::rewrite_peer_files(ctx, destination_id).await.in_phase(phase)?;
        Ok(())
    }

    fn verifies(&self, options: &crate::migration::options::MigrationOptions) -> bool {
        options.verify
    }

    async fn verify(&mut self, ctx: &Ctx<'_, Provider>) -> Result<(), Error> {
        let (_, dst_helper) = self.helpers()?;
        let sent = self.sent.as_ref().ok_or_else(|| not_prepared("the checkpoint's copy"))?;
        let arrived = format!("{DESTINATION_MOUNT}/{}", ctx.plan.checkpoint);
        verify_copy(sent, ctx.dst, dst_helper, &arrived, "checkpoint images").await
    }

    async fn restore(&mut self, ctx: &Ctx<'_, Provider>, undo: &Undo) -> Result<(), Error> {
        let destination_id = undo.destination_id.as_deref().ok_or_else(|| not_prepared("the destination"))?;
        ctx.dst.start_from_checkpoint(destination_id, &ctx.plan.checkpoint).await
    }

    async fn finish(&mut self, _ctx: &Ctx<'_, Provider>, _stats: &mut MigrationStats) -> Vec<(String, usize)> {
        std::mem::take(&mut self.rewrites)
    }

    async fn withdraw(&mut self, _ctx: &Ctx<'_, Provider>) {}

    async fn restore_source(&self, ctx: &Ctx<'_, Provider>, name: &str) -> Result<(), Error> {
        ctx.src.start_from_checkpoint(&ctx.source.id, name).await
    }

    fn source_records(&self, _name: &str) -> Vec<String> {
        Vec::new()
    }
}
