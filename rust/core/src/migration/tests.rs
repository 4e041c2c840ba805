//! The orchestration's unit tests: the phase sequence, the rollback and the cleanup of one
//! migration, against in-memory hosts and a scripted path (`fake.rs`). Each test makes one step
//! fail (or none) and checks where the service runs afterwards, what is left on each host, and
//! what was called in which order.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::migration::error::{MigrationError, Rollback};
use crate::migration::fake::{FakeContainer, FakeHost, FakePath, Flavour, Journal, Step};
use crate::migration::options::MigrationOptions;
use crate::migration::path::Ctx;
use crate::migration::plan::tests::sample_plan;
use crate::migration::plan::MigrationPlan;
use crate::migration::report::{MigrationReport, MigrationStats, Phase, ProgressEvent};
use crate::migration::sequence::Migration;
use crate::migration::source::tests::inspect;
use crate::migration::source::SourceContainer;
use crate::network::NetworkSpec;

/// Two fake providers, the container on the first, and its plan.
struct World {
    journal: Journal,
    src: FakeHost,
    dst: FakeHost,
    source: SourceContainer,
    plan: MigrationPlan,
    options: MigrationOptions,
    events: Arc<Mutex<Vec<ProgressEvent>>>,
    patience: Duration,
}

impl World {
    fn new() -> World {
        let journal = Journal::default();
        let source = SourceContainer::from_inspect(inspect());
        let running = FakeContainer { running: true, ..FakeContainer::default() };
        let src = FakeHost::new("provider-a", &journal).with(&source.id, running).with_network("app");
        let dst = FakeHost::new("provider-b", &journal);
        let mut plan = sample_plan();
        // `app` is missing on the destination: the migration creates it there.
        plan.networks[0].create =
            Some(NetworkSpec { name: "app".into(), subnet: None, gateway: None, labels: BTreeMap::new() });
        World {
            journal,
            src,
            dst,
            source,
            plan,
            options: MigrationOptions::new("web"),
            events: Arc::default(),
            patience: Duration::ZERO,
        }
    }

    async fn migrate(&self, path: FakePath) -> Result<MigrationReport, MigrationError> {
        let events = self.events.clone();
        let progress = move |event: &ProgressEvent| events.lock().unwrap().push(event.clone());
        let ctx = Ctx {
            src: &self.src,
            dst: &self.dst,
            source: &self.source,
            plan: &self.plan,
            options: &self.options,
            progress: &progress,
            patience: self.patience,
        };
        Migration::new(ctx, path, MigrationStats::default(), Instant::now()).run().await
    }

    async fn fail(&self, flavour: Flavour, step: Step) -> MigrationError {
        let path = FakePath::new(flavour, &self.journal).failing(step);
        self.migrate(path).await.expect_err("the step was set up to fail")
    }

    fn calls(&self) -> Vec<String> {
        self.journal.lock().unwrap().clone()
    }

    fn count(&self, call: &str) -> usize {
        self.calls().iter().filter(|c| c.starts_with(call)).count()
    }

    fn position(&self, call: &str) -> usize {
        self.calls()
            .iter()
            .position(|c| c.starts_with(call))
            .unwrap_or_else(|| panic!("no {call} in {:?}", self.calls()))
    }

    fn source_state(&self) -> FakeContainer {
        self.src.container(&self.source.id).expect("the source container is still there")
    }

    fn phases(&self) -> Vec<Phase> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                ProgressEvent::Phase { phase } => Some(*phase),
                ProgressEvent::Bytes { .. } => None,
            })
            .collect()
    }

    /// The service never stopped and nothing of the migration is left on the destination.
    fn assert_untouched(&self) {
        assert!(self.source_state().running, "the source runs");
        assert_eq!(self.count("provider-a restore_source"), 0, "the source was never restored: {:?}", self.calls());
        assert!(self.dst.containers().is_empty(), "left on the destination: {:?}", self.dst.containers());
        assert!(self.dst.networks().is_empty(), "networks left on the destination: {:?}", self.dst.networks());
    }

    /// The service runs on the source again, restored once, and nothing is left on the
    /// destination; the checkpoint (it holds process memory) is gone.
    fn assert_resumed_once(&self) {
        let source = self.source_state();
        assert!(source.running, "the source runs again");
        assert_eq!(self.count("provider-a restore_source"), 1, "resumed exactly once: {:?}", self.calls());
        assert!(source.checkpoints.is_empty(), "checkpoints left on the source: {:?}", source.checkpoints);
        assert!(self.dst.containers().is_empty(), "left on the destination: {:?}", self.dst.containers());
        assert!(self.src.containers() == vec![self.source.id.clone()], "helpers left: {:?}", self.src.containers());
        assert!(
            self.position("provider-b remove_container dst-1") < self.position("provider-a restore_source"),
            "the destination goes before the source resumes: {:?}",
            self.calls()
        );
    }
}

#[tokio::test]
async fn a_migration_ends_with_the_container_on_the_destination_and_nothing_left_behind() {
    for flavour in [Flavour::Docker, Flavour::Direct] {
        let world = World::new();
        world.src.set_criu_conf(b"log-file /x");
        let report = world.migrate(FakePath::new(flavour, &world.journal)).await.expect("migrates");
        assert_eq!(report.destination_id, "dst-1");
        assert_eq!(report.method, if flavour == Flavour::Docker { "docker" } else { "direct" });
        assert!(world.dst.container("dst-1").is_some_and(|c| c.running), "the destination runs");
        assert_eq!(world.src.containers(), Vec::<String>::new(), "the source and its helper went");
        assert_eq!(world.dst.containers(), vec!["dst-1".to_string()], "only the container is left there");
        assert!(world.dst.networks().contains("app"), "the network it needs stays");
        assert_eq!(world.src.criu_conf().as_deref(), Some(&b"log-file /x"[..]), "the host's CRIU options are back");
        assert_eq!(world.dst.criu_conf(), None);
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        assert_eq!(report.rewrites, vec![("/etc/peer.conf".to_string(), 1)]);
        assert_eq!(report.stats.dump_ms, 7, "the path's own figures reach the report");
    }
}

#[tokio::test]
async fn the_phases_come_in_order_and_verify_only_where_the_path_verifies() {
    use Phase::*;
    let world = World::new();
    world.migrate(FakePath::new(Flavour::Docker, &world.journal)).await.unwrap();
    assert_eq!(world.phases(), vec![Image, Prepare, Precopy, Checkpoint, Transfer, Verify, Restore, Cleanup]);
    let world = World::new();
    world.migrate(FakePath::new(Flavour::Direct, &world.journal)).await.unwrap();
    assert_eq!(world.phases(), vec![Image, Prepare, Precopy, Checkpoint, Transfer, Restore, Cleanup]);
    let mut world = World::new();
    world.options.verify = false;
    world.migrate(FakePath::new(Flavour::Docker, &world.journal)).await.unwrap();
    assert!(!world.phases().contains(&Verify));
}

#[tokio::test]
async fn keep_source_keeps_the_stopped_source_without_its_checkpoint() {
    let mut world = World::new();
    world.options.keep_source = true;
    let report = world.migrate(FakePath::new(Flavour::Direct, &world.journal)).await.unwrap();
    assert!(report.source_kept);
    let source = world.source_state();
    assert!(!source.running && source.checkpoints.is_empty(), "{source:?}");
}

#[tokio::test]
async fn the_address_changes_are_reported() {
    let world = World::new();
    let report = world.migrate(FakePath::new(Flavour::Docker, &world.journal)).await.unwrap();
    assert_eq!(report.address_changes, BTreeMap::from([("172.29.0.5".to_string(), "10.9.0.9".to_string())]));
}

#[tokio::test]
async fn a_cleanup_failure_is_a_warning_of_a_successful_migration() {
    let world = World::new();
    world.src.fail("delete_checkpoint", 1);
    let report = world.migrate(FakePath::new(Flavour::Docker, &world.journal)).await.expect("still a success");
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    assert!(report.warnings[0].contains("delete_checkpoint"), "{:?}", report.warnings);
}

#[tokio::test]
async fn a_failure_before_the_destination_exists_changes_nothing() {
    let world = World::new();
    world.dst.fail("ensure_image", 1);
    let err = world.migrate(FakePath::new(Flavour::Docker, &world.journal)).await.unwrap_err();
    assert_eq!(err.phase, Phase::Image);
    assert!(matches!(err.rollback, Rollback::Undone), "{}", err.rollback);
    world.assert_untouched();
}

#[tokio::test]
async fn failures_before_the_freeze_undo_the_destination_and_never_touch_the_source() {
    for (flavour, step, phase) in [
        (Flavour::Docker, Step::Prepare, Phase::Prepare),
        (Flavour::Direct, Step::Prepare, Phase::Prepare),
        (Flavour::Docker, Step::Precopy, Phase::Precopy),
        (Flavour::Docker, Step::Arm, Phase::Prepare),
        (Flavour::Direct, Step::Arm, Phase::Prepare),
    ] {
        let world = World::new();
        let err = world.fail(flavour, step).await;
        assert_eq!(err.phase, phase, "{step:?}");
        assert!(matches!(err.rollback, Rollback::Undone), "{step:?}: {}", err.rollback);
        world.assert_untouched();
        assert_eq!(world.src.containers(), vec![world.source.id.clone()], "{step:?}: the source's helper went");
        assert_eq!(world.src.criu_conf(), None, "{step:?}: the host's CRIU options are back");
    }
}

#[tokio::test]
async fn a_destination_that_was_started_before_the_freeze_is_withdrawn_first() {
    let world = World::new();
    world.fail(Flavour::Direct, Step::Arm).await;
    assert!(
        world.position("path withdraw") < world.position("provider-b remove_container dst-1"),
        "{:?}",
        world.calls()
    );
}

#[tokio::test]
async fn a_dump_that_failed_leaves_the_source_running_and_it_is_not_restored() {
    let world = World::new();
    let err = world.fail(Flavour::Docker, Step::FreezeBeforeDump).await;
    assert_eq!(err.phase, Phase::Checkpoint);
    assert!(matches!(err.rollback, Rollback::Resumed { ref provider } if provider == "provider-a"), "{}", err.rollback);
    world.assert_untouched();
}

#[tokio::test]
async fn failures_after_the_freeze_resume_the_source_exactly_once() {
    for (flavour, step, phase) in [
        (Flavour::Docker, Step::FreezeAfterDump, Phase::Checkpoint),
        (Flavour::Direct, Step::FreezeAfterDump, Phase::Checkpoint),
        (Flavour::Docker, Step::Transfer, Phase::Transfer),
        (Flavour::Direct, Step::Transfer, Phase::Transfer),
        (Flavour::Docker, Step::Verify, Phase::Verify),
        (Flavour::Docker, Step::Restore, Phase::Restore),
        (Flavour::Direct, Step::Restore, Phase::Restore),
    ] {
        let world = World::new();
        let err = world.fail(flavour, step).await;
        assert_eq!(err.phase, phase, "{flavour:?} {step:?}");
        assert!(matches!(err.rollback, Rollback::Resumed { .. }), "{flavour:?} {step:?}: {}", err.rollback);
        world.assert_resumed_once();
        assert!(world.dst.networks().is_empty(), "the network the migration created went");
    }
}

#[tokio::test]
async fn a_restored_container_that_stops_at_once_fails_the_restore_and_the_source_resumes() {
    let world = World::new();
    let err = world.fail(Flavour::Docker, Step::RestoredThenStopped).await;
    assert_eq!(err.phase, Phase::Restore);
    assert!(err.cause.report().contains("stopped right after its restore"), "{}", err.cause.report());
    world.assert_resumed_once();
}

#[tokio::test]
async fn a_destination_unreachable_after_its_start_holds_the_source_stopped() {
    for flavour in [Flavour::Docker, Flavour::Direct] {
        let world = World::new();
        let err = world.fail(flavour, Step::RestoreThenUnreachable).await;
        assert_eq!(err.phase, Phase::Restore, "{flavour:?}");
        match &err.rollback {
            Rollback::Held { destination, .. } => assert_eq!(destination, "provider-b"),
            other => panic!("{flavour:?}: {other}"),
        }
        let source = world.source_state();
        assert!(!source.running, "{flavour:?}: the source must not run while the destination may");
        assert!(source.checkpoints.contains(&world.plan.checkpoint), "{flavour:?}: the checkpoint heal needs is kept");
        assert_eq!(world.count("provider-a restore_source"), 0, "{flavour:?}");
        assert!(err.to_string().contains("HELD"), "{err}");
    }
}

#[tokio::test]
async fn a_destination_restarting_is_waited_for_before_the_source_resumes() {
    let mut world = World::new();
    world.patience = Duration::from_millis(200);
    world.dst.fail("remove_container", 2);
    let err = world.fail(Flavour::Docker, Step::Restore).await;
    assert!(matches!(err.rollback, Rollback::Resumed { .. }), "{}", err.rollback);
    assert_eq!(world.count("provider-b remove_container dst-1"), 3, "{:?}", world.calls());
    world.assert_resumed_once();
}

#[tokio::test]
async fn a_destination_that_cannot_be_cleaned_before_any_start_fails_the_rollback_but_the_service_runs() {
    let world = World::new();
    world.dst.fail("remove_container", u32::MAX);
    let err = world.fail(Flavour::Docker, Step::Precopy).await;
    assert!(matches!(err.rollback, Rollback::Failed(_)), "{}", err.rollback);
    assert!(world.source_state().running);
    assert_eq!(world.count("provider-a restore_source"), 0);
}

#[tokio::test]
async fn a_resume_that_fails_says_so() {
    let world = World::new();
    let path = FakePath::new(Flavour::Docker, &world.journal).failing(Step::Transfer).failing(Step::ResumeSource);
    let err = world.migrate(path).await.unwrap_err();
    match &err.rollback {
        Rollback::Failed(cause) => assert!(cause.report().contains("ResumeSource"), "{}", cause.report()),
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("ROLLBACK FAILED"), "{err}");
}

#[tokio::test]
async fn a_stopped_source_without_its_checkpoint_is_reported_missing_not_restarted_fresh() {
    let world = World::new();
    let err = world.fail(Flavour::Docker, Step::FreezeLosesCheckpoint).await;
    assert_eq!(err.phase, Phase::Checkpoint);
    match &err.rollback {
        Rollback::Failed(cause) => {
            assert!(cause.report().contains("a checkpoint to resume from"), "{}", cause.report())
        }
        other => panic!("{other}"),
    }
    assert_eq!(world.count("provider-a restore_source"), 0, "never started afresh: its state would be lost");
    assert!(world.dst.containers().is_empty(), "the destination was still cleaned");
}

#[tokio::test]
async fn networks_the_destination_had_are_left_alone_by_a_rollback() {
    let mut world = World::new();
    world.dst = FakeHost::new("provider-b", &world.journal).with_network("app");
    world.fail(Flavour::Docker, Step::Transfer).await;
    assert!(world.dst.networks().contains("app"), "an existing network is not the migration's to remove");
    assert_eq!(world.count("provider-b remove_unused_network"), 0, "{:?}", world.calls());
}

#[tokio::test]
async fn the_hosts_criu_options_come_back_last_set_first() {
    let world = World::new();
    world.src.set_criu_conf(b"mine");
    world.fail(Flavour::Docker, Step::Transfer).await;
    let calls = world.calls();
    let restores: Vec<&String> = calls.iter().filter(|c| c.contains("restore_criu_options")).collect();
    assert_eq!(restores, ["provider-b restore_criu_options ", "provider-a restore_criu_options "]);
    assert_eq!(world.src.criu_conf().as_deref(), Some(&b"mine"[..]));
}

#[tokio::test]
async fn the_direct_paths_docker_record_goes_with_the_checkpoint() {
    let world = World::new();
    world.fail(Flavour::Direct, Step::Transfer).await;
    assert!(
        world.calls().iter().any(|c| c.ends_with(".docker") && c.contains("delete_checkpoint")),
        "{:?}",
        world.calls()
    );
    world.assert_resumed_once();
}
