//! The gate's unit tests, against the in-memory hosts and scripted path of `fake.rs`: a group
//! moves whole or, whichever member fails wherever, every member runs on its source again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::migration::error::Rollback;
use crate::migration::fake::{FakeContainer, FakeHost, FakePath, Flavour, Journal, Step};
use crate::migration::group::gate::{drive, Settled};
use crate::migration::options::MigrationOptions;
use crate::migration::path::Ctx;
use crate::migration::plan::tests::sample_plan;
use crate::migration::plan::MigrationPlan;
use crate::migration::report::{MigrationStats, Phase, ProgressEvent};
use crate::migration::sequence::Migration;
use crate::migration::source::tests::inspect;
use crate::migration::source::SourceContainer;

const MEMBERS: [&str; 3] = ["web", "redis", "worker"];

/// Three containers on one fake provider, each with its plan.
struct Group {
    journal: Journal,
    src: FakeHost,
    dst: FakeHost,
    sources: Vec<SourceContainer>,
    plans: Vec<MigrationPlan>,
    options: Vec<MigrationOptions>,
}

impl Group {
    fn new() -> Group {
        let journal = Journal::default();
        let mut src = FakeHost::new("provider-a", &journal).with_network("app");
        let (mut sources, mut plans, mut options) = (Vec::new(), Vec::new(), Vec::new());
        for (i, name) in MEMBERS.iter().enumerate() {
            let mut source = SourceContainer::from_inspect(inspect());
            source.id = format!("src-{name}");
            source.name = (*name).to_string();
            src = src.with(&source.id, FakeContainer { running: true, ..FakeContainer::default() });
            let mut plan = sample_plan();
            plan.container = (*name).to_string();
            plan.checkpoint = format!("cp-{i}");
            sources.push(source);
            plans.push(plan);
            options.push(MigrationOptions::new(*name));
        }
        let dst = FakeHost::new("provider-b", &journal).with_network("app");
        Group { journal, src, dst, sources, plans, options }
    }

    /// Drives the group with `failing` (member index, step) scripted.
    async fn drive(&self, flavour: Flavour, failing: Option<(usize, Step)>) -> Result<Vec<String>, Vec<Settled>> {
        let progress = |_: &ProgressEvent| {};
        let members: Vec<_> = (0..MEMBERS.len())
            .map(|i| {
                let ctx = Ctx {
                    src: &self.src,
                    dst: &self.dst,
                    source: &self.sources[i],
                    plan: &self.plans[i],
                    options: &self.options[i],
                    progress: &progress,
                    patience: Duration::ZERO,
                };
                let mut path = FakePath::new(flavour, &self.journal);
                if let Some((_, step)) = failing.filter(|(at, _)| *at == i) {
                    path = path.failing(step);
                }
                Migration::new(ctx, path, MigrationStats::default(), Instant::now())
            })
            .collect();
        let (reports, times) = drive(members).await?;
        assert!(times.freeze_spread_ms >= 0.0 && times.downtime_ms >= reports[0].stats.downtime_ms.min(1));
        Ok(reports.into_iter().map(|r| r.destination_id).collect())
    }

    fn source_runs(&self, i: usize) -> bool {
        self.src.container(&self.sources[i].id).is_some_and(|c| c.running && c.checkpoints.is_empty())
    }

    fn calls(&self) -> Vec<String> {
        self.journal.lock().unwrap().clone()
    }

    /// Where in the journal the first call starting with `call` is.
    fn position(&self, call: &str) -> Option<usize> {
        self.calls().iter().position(|c| c.starts_with(call))
    }
}

#[tokio::test]
async fn a_group_moves_whole_and_is_released_only_after_every_restore() {
    for flavour in [Flavour::Docker, Flavour::Direct] {
        let group = Group::new();
        let moved = group.drive(flavour, None).await.unwrap_or_else(|e| panic!("moves: {e:?}"));
        assert_eq!(moved.len(), 3);
        for id in &moved {
            assert!(group.dst.container(id).is_some_and(|c| c.running), "{id} runs on the destination");
        }
        assert!(group.src.containers().is_empty(), "sources and helpers went: {:?}", group.src.containers());
        let calls = group.calls();
        let last_freeze = calls.iter().rposition(|c| c.contains("FreezeAfterDump")).unwrap();
        let first_release = group.position("provider-a remove_container src-").unwrap();
        assert!(last_freeze < first_release, "no source goes before every member froze: {calls:?}");
        let freezes: Vec<usize> =
            calls.iter().enumerate().filter(|(_, c)| c.contains("Freeze")).map(|(i, _)| i).collect();
        let first_transfer = group.position("path Transfer").unwrap();
        assert!(freezes.iter().all(|&f| f < first_transfer), "every member froze before any streamed: {calls:?}");
    }
}

#[tokio::test]
async fn a_member_failing_at_its_restore_resumes_every_member_on_the_source() {
    for flavour in [Flavour::Docker, Flavour::Direct] {
        let group = Group::new();
        let settled = group.drive(flavour, Some((1, Step::Restore))).await.expect_err("redis fails");
        for (i, name) in MEMBERS.iter().enumerate() {
            assert!(group.source_runs(i), "{name} runs on the source again, its checkpoint gone");
        }
        assert!(group.dst.containers().is_empty(), "nothing left on the destination: {:?}", group.dst.containers());
        match &settled[..] {
            [Settled::Abandoned(Rollback::Resumed { .. }), Settled::Failed(e), Settled::Abandoned(Rollback::Resumed { .. })] =>
            {
                assert_eq!(e.phase, Phase::Restore);
                assert_eq!(e.container, "redis");
                assert!(matches!(e.rollback, Rollback::Resumed { .. }), "{}", e.rollback);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_member_failing_before_the_gate_stops_nobody() {
    let group = Group::new();
    let settled = group.drive(Flavour::Direct, Some((2, Step::Precopy))).await.expect_err("worker fails");
    assert!(group.position("path FreezeAfterDump").is_none(), "nobody froze: {:?}", group.calls());
    for (i, name) in MEMBERS.iter().enumerate() {
        assert!(group.source_runs(i), "{name} never stopped");
    }
    assert!(group.position("provider-a restore_source").is_none());
    assert!(matches!(&settled[0], Settled::Abandoned(Rollback::Undone)), "{settled:?}");
    assert!(matches!(&settled[2], Settled::Failed(e) if e.phase == Phase::Precopy), "{settled:?}");
    assert!(group.dst.containers().is_empty(), "{:?}", group.dst.containers());
}

#[tokio::test]
async fn a_member_whose_dump_fails_leaves_its_source_running_and_the_others_resume() {
    let group = Group::new();
    let settled = group.drive(Flavour::Direct, Some((0, Step::FreezeBeforeDump))).await.expect_err("web fails");
    for (i, name) in MEMBERS.iter().enumerate() {
        assert!(group.source_runs(i), "{name} runs");
    }
    let resumed: BTreeMap<usize, bool> = settled
        .iter()
        .enumerate()
        .map(|(i, s)| (i, matches!(s, Settled::Abandoned(Rollback::Resumed { .. }))))
        .collect();
    assert_eq!(resumed, BTreeMap::from([(0, false), (1, true), (2, true)]), "{settled:?}");
}

#[tokio::test]
async fn the_hosts_criu_options_come_back_as_found_after_a_group_on_dockers_path() {
    for failing in [None, Some((2, Step::Restore)), Some((1, Step::Arm))] {
        let group = Group::new();
        group.src.set_criu_conf(b"log-file /x\ntcp-close\n");
        let _ = group.drive(Flavour::Docker, failing).await;
        assert_eq!(
            group.src.criu_conf().as_deref(),
            Some(&b"log-file /x\ntcp-close\n"[..]),
            "after {failing:?}: {:?}",
            group.calls()
        );
        assert_eq!(group.dst.criu_conf(), None, "after {failing:?}");
    }
}
