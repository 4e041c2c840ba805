//! How a container's memory moves, named as users of QEMU and KubeVirt know the modes, and the
//! preflight's decision of which one a migration takes.
//!
//! - `stop-and-copy` (the default): the memory moves inside the freeze, streamed while CRIU
//!   dumps it; nothing is lost on any failure (the source resumes from its dump);
//! - `pre-copy`: CRIU pre-dumps the memory while the service runs and the images stream to the
//!   destination, round after round while the memory dirtied since the last round shrinks
//!   (bounded as P.Haul bounds them: [`vimigrate_protocol::PreCopy`]); the dump that freezes
//!   then carries only what was dirtied since. Nothing is lost on any failure (the source
//!   resumes from its dump, which chains the pre-dumps it keeps). Only the source pre-dumps, so
//!   only its kernel must track dirty memory (soft-dirty bits: CRIU's `mem_dirty_track`); the
//!   destination restores from the chain whatever its kernel;
//! - `post-copy`: the destination restores once everything but the memory arrived, and its
//!   processes fault their pages in from the source over the migration's TLS connection while
//!   the rest follows in the background; the source is released only once every page arrived.
//!   Its price: a failure of the source or of the link inside that window loses the state the
//!   service built since the restore (the memory is split between the hosts; neither copy can
//!   run on, unless CRIU alone died on the source, which releases its processes whole and keeps
//!   that copy), so it is only taken when asked for;
//! - `auto`: pre-copy where the source tracks dirty memory (and both runtimes can), else
//!   stop-and-copy, the reason in the plan and the report; never post-copy.

use serde::{Deserialize, Serialize};
use vimigrate_protocol::HostFacts;

/// How the memory moves (see the module documentation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemoryMode {
    /// Inside the freeze; nothing lost on any failure.
    #[default]
    StopAndCopy,
    /// Pre-dumped while the service runs; the freeze carries what was dirtied since.
    PreCopy,
    /// After the restore, faulted in from the source; a failure inside the window loses what
    /// the service did since the restore.
    PostCopy,
    /// Pre-copy where the hosts can, else stop-and-copy.
    Auto,
}

impl MemoryMode {
    /// The mode's name, as options and reports spell it.
    pub fn name(self) -> &'static str {
        match self {
            MemoryMode::StopAndCopy => "stop-and-copy",
            MemoryMode::PreCopy => "pre-copy",
            MemoryMode::PostCopy => "post-copy",
            MemoryMode::Auto => "auto",
        }
    }
}

/// The mode a migration takes for `asked`, and why; `Err((mode, why))` when the hosts cannot
/// take the mode asked for.
pub(crate) fn decide(
    asked: MemoryMode,
    direct: bool,
    src: (&str, Option<&HostFacts>),
    dst: (&str, Option<&HostFacts>),
) -> Result<(MemoryMode, String), (MemoryMode, String)> {
    match asked {
        MemoryMode::StopAndCopy => Ok((asked, "the memory moves inside the freeze".into())),
        MemoryMode::PreCopy => match pre_copy_refusal(direct, src, dst) {
            Some(why) => Err((asked, why)),
            None => Ok((asked, format!("pre-dumped while the service runs: `{}` tracks dirty memory", src.0))),
        },
        MemoryMode::Auto => Ok(match pre_copy_refusal(direct, src, dst) {
            None => (MemoryMode::PreCopy, format!("auto: pre-copy, `{}` tracks dirty memory", src.0)),
            Some(why) => (MemoryMode::StopAndCopy, format!("auto: stop-and-copy, as {why}")),
        }),
        MemoryMode::PostCopy => match post_copy_refusal(direct, src, dst) {
            Some(why) => Err((asked, why)),
            None => Ok((
                asked,
                "post-copy was asked for: the destination runs once all but the memory arrived; a failure of the \
                 source or the link before every page arrived loses what the service did since"
                    .into(),
            )),
        },
    }
}

/// The CRIU feature pre-copy needs on the source: the kernel's soft-dirty tracking.
pub const DIRTY_TRACKING: &str = "mem_dirty_track";

/// Why the hosts cannot take `pre-copy`, or `None` when they can: the direct path (the
/// pre-dumps stream between the two runtimes), both runtimes able to, and the source's kernel
/// tracking dirty memory.
pub(crate) fn pre_copy_refusal(
    direct: bool,
    (src_name, src): (&str, Option<&HostFacts>),
    (dst_name, dst): (&str, Option<&HostFacts>),
) -> Option<String> {
    if let Some(refusal) = runtime_refusal(
        direct,
        "pre-copy",
        vimigrate_protocol::PRE_COPY,
        "pre-copy",
        [(src_name, src), (dst_name, dst)],
    ) {
        return Some(refusal);
    }
    if !src.is_some_and(|f| f.criu_supports(DIRTY_TRACKING)) {
        return Some(format!(
            "the kernel of `{src_name}` does not track dirty memory (`criu check --feature {DIRTY_TRACKING}`: no \
             soft-dirty bits, CONFIG_MEM_SOFT_DIRTY), so CRIU cannot pre-dump there"
        ));
    }
    None
}

/// The runtime feature post-copy needs on both hosts (`vimigrate-runtime` lists it in its facts).
pub const POST_COPY_FEATURE: &str = vimigrate_protocol::POST_COPY;

/// Why the hosts cannot take `post-copy`, or `None` when they can: the direct path (the pages
/// cross between the two runtimes), both runtimes able to relay pages, and the destination's
/// CRIU with lazy pages over userfaultfd (`uffd-noncoop`, for processes that fork or remap).
pub(crate) fn post_copy_refusal(
    direct: bool,
    (src_name, src): (&str, Option<&HostFacts>),
    (dst_name, dst): (&str, Option<&HostFacts>),
) -> Option<String> {
    if let Some(refusal) = runtime_refusal(
        direct,
        "post-copy",
        POST_COPY_FEATURE,
        "relay memory pages",
        [(src_name, src), (dst_name, dst)],
    ) {
        return Some(refusal);
    }
    for (name, facts) in [(src_name, src), (dst_name, dst)] {
        if let Some(problem) = facts.and_then(HostFacts::lazy_pages_pipe_problem) {
            return Some(format!("on `{name}`: {problem}"));
        }
    }
    if !dst.is_some_and(|f| f.criu_supports("uffd-noncoop")) {
        return Some(format!(
            "the CRIU of `{dst_name}` has no lazy pages over userfaultfd (`criu check --feature uffd-noncoop`): the \
             kernel lacks userfaultfd or denies it (vm.unprivileged_userfaultfd does not matter: CRIU runs as root)"
        ));
    }
    None
}

/// What both memory modes but stop-and-copy need: the direct path (the memory crosses between
/// the two runtimes) and runtime `feature` on both hosts, which lets them `do_what`.
fn runtime_refusal(
    direct: bool,
    mode: &str,
    feature: &str,
    do_what: &str,
    hosts: [(&str, Option<&HostFacts>); 2],
) -> Option<String> {
    if !direct {
        return Some(format!("{mode} needs the direct path (vimigrate-runtime on both hosts)"));
    }
    hosts.into_iter().find(|(_, facts)| !facts.is_some_and(|f| f.runtime_has(feature))).map(|(name, _)| {
        format!("the vimigrate-runtime on `{name}` cannot {do_what} (install this version's on both hosts)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vimigrate_protocol::CriuFacts;

    fn facts(runtime: bool, uffd: bool) -> HostFacts {
        HostFacts {
            runtime_features: if runtime {
                vec![POST_COPY_FEATURE.into(), vimigrate_protocol::PRE_COPY.into()]
            } else {
                vec![]
            },
            criu: Some(CriuFacts {
                features: [("uffd-noncoop".to_string(), uffd), (DIRTY_TRACKING.to_string(), uffd)]
                    .into_iter()
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn post_copy_needs_the_direct_path_both_runtimes_and_the_destinations_uffd() {
        let (good, old, no_uffd) = (facts(true, true), facts(false, true), facts(true, false));
        assert_eq!(post_copy_refusal(true, ("a", Some(&good)), ("b", Some(&good))), None);
        let refusal = |direct, src: &HostFacts, dst: &HostFacts| {
            post_copy_refusal(direct, ("a", Some(src)), ("b", Some(dst))).unwrap_or_default()
        };
        assert!(refusal(false, &good, &good).contains("direct path"));
        assert!(refusal(true, &old, &good).contains("`a` cannot relay"));
        assert!(refusal(true, &good, &old).contains("`b` cannot relay"));
        assert!(refusal(true, &good, &no_uffd).contains("uffd-noncoop"));
        assert_eq!(
            post_copy_refusal(true, ("a", Some(&no_uffd)), ("b", Some(&good))),
            None,
            "only the destination faults"
        );
    }

    #[test]
    fn pre_copy_needs_the_direct_path_both_runtimes_and_the_sources_dirty_tracking() {
        let (good, old, untracked) = (facts(true, true), facts(false, true), facts(true, false));
        let refusal = |direct, src: &HostFacts, dst: &HostFacts| {
            pre_copy_refusal(direct, ("a", Some(src)), ("b", Some(dst))).unwrap_or_default()
        };
        assert_eq!(refusal(true, &good, &good), "");
        assert!(refusal(false, &good, &good).contains("direct path"));
        assert!(refusal(true, &good, &old).contains("`b` cannot pre-copy"));
        assert!(refusal(true, &untracked, &good).contains("kernel of `a` does not track dirty memory"));
        assert_eq!(refusal(true, &good, &untracked), "", "only the source pre-dumps");
    }

    #[test]
    fn modes_are_spelled_as_qemu_users_know_them() {
        assert_eq!(serde_json::to_value(MemoryMode::PostCopy).unwrap(), "post-copy");
        assert_eq!(serde_json::from_value::<MemoryMode>("stop-and-copy".into()).unwrap(), MemoryMode::StopAndCopy);
        assert!(serde_json::from_value::<MemoryMode>("postcopy".into()).is_err());
        assert_eq!(serde_json::from_value::<MemoryMode>("pre-copy".into()).unwrap(), MemoryMode::PreCopy);
        assert_eq!(serde_json::from_value::<MemoryMode>("auto".into()).unwrap(), MemoryMode::Auto);
    }
}
