//! What differs between the two hosts of a migration, decided before anything stops: the CPU
//! features the container's process may use, the CRIU on each host and the features the chosen
//! options need, kernels, cgroup versions, OCI runtimes and engines. A difference that would
//! make the restore fail (or worse, a restored process die later on an instruction the
//! destination's CPU lacks) refuses the migration with the check's name; a user who knows
//! better names it in `ignore_host_checks`. Pure functions of what the preflight read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vimigrate_protocol::{HostFacts, TcpMode};

use crate::provider::probe::ProviderReport;

/// A host check that can refuse a migration, as `ignore_host_checks` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostCheckKind {
    /// The destination's CPU has every instruction-set extension of the source's.
    Cpu,
    /// Both hosts have a CRIU that passes `criu check`, and the destination's is not older than
    /// the source's.
    Criu,
    /// Both hosts run the same cgroup version: CRIU restores the mount tree it dumped, and a
    /// container's tree holds the cgroup hierarchy (v1 controllers or the v2 unified one).
    Cgroup,
    /// Docker's own checkpoint path is used only on engines whose restore works (before 28).
    Engine,
}

impl HostCheckKind {
    /// Its name in `ignore_host_checks`.
    pub fn name(self) -> &'static str {
        match self {
            HostCheckKind::Cpu => "cpu",
            HostCheckKind::Criu => "criu",
            HostCheckKind::Cgroup => "cgroup",
            HostCheckKind::Engine => "engine",
        }
    }

    /// Every check, in the order they are made.
    pub const ALL: [HostCheckKind; 4] =
        [HostCheckKind::Cpu, HostCheckKind::Criu, HostCheckKind::Cgroup, HostCheckKind::Engine];
}

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckOutcome {
    /// The migration stops here, nothing changed.
    Refused,
    /// It would refuse, but `ignore_host_checks` names it.
    Overridden,
    /// A difference worth knowing that does not stop a migration.
    Note,
}

/// One finding of the host comparison.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostCheck {
    /// The check (`None` for a note no check refuses).
    pub check: Option<HostCheckKind>,
    /// The provider the finding is about.
    pub provider: String,
    /// Refused, overridden or a note.
    pub outcome: CheckOutcome,
    /// What was found, in words.
    pub detail: String,
}

/// What the plan says of one host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HostSummary {
    /// The provider.
    pub provider: String,
    /// Docker Engine version.
    pub engine: String,
    /// containerd's version.
    pub containerd: String,
    /// runc's version.
    pub runc: String,
    /// The kernel release.
    pub kernel: String,
    /// `1` or `2`.
    pub cgroup_version: String,
    /// `containerd` or the graph driver (`overlay2`): where images and layers live there.
    pub image_store: String,
    /// The CRIU version runc runs there (`None` when the host's facts are unknown or it has none).
    pub criu: Option<String>,
    /// The CPU's model name (empty when unknown).
    pub cpu_model: String,
    /// CRIU's optional features there (lazy pages, dirty tracking): supported or not.
    pub criu_features: BTreeMap<String, bool>,
    /// Whether the host's facts were read through its vimigrate-runtime.
    pub facts_known: bool,
}

/// The comparison the plan carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HostComparison {
    /// The source host.
    pub source: HostSummary,
    /// The destination host.
    pub destination: HostSummary,
    /// Every finding, refusals first.
    pub checks: Vec<HostCheck>,
}

impl HostComparison {
    /// The first refusal that is not overridden.
    pub fn refusal(&self) -> Option<&HostCheck> {
        self.checks.iter().find(|c| c.outcome == CheckOutcome::Refused)
    }
}

/// One host as the preflight read it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HostView<'a> {
    /// What Docker's API says.
    pub report: &'a ProviderReport,
    /// What the host's runtime says (`None`: no runtime, or an answer of another version).
    pub facts: Option<&'a HostFacts>,
}

/// CPU flags that name instruction-set extensions a user-space process may execute: a process
/// restored on a CPU without one of them dies of SIGILL at its next use (glibc and JIT
/// runtimes pick code paths by these at start-up, so the process never asks again). Flags of
/// the kernel's own business (virtualization, power, mitigations) are not compared.
const USER_ISA_FLAGS: &[&str] = &[
    "abm",
    "adx",
    "aes",
    "amx_bf16",
    "amx_int8",
    "amx_tile",
    "avx",
    "avx2",
    "avx512_bf16",
    "avx512_bitalg",
    "avx512_fp16",
    "avx512_vbmi2",
    "avx512_vnni",
    "avx512_vp2intersect",
    "avx512_vpopcntdq",
    "avx512bw",
    "avx512cd",
    "avx512dq",
    "avx512f",
    "avx512ifma",
    "avx512vbmi",
    "avx512vl",
    "avx_vnni",
    "bmi1",
    "bmi2",
    "cx16",
    "f16c",
    "fma",
    "fsgsbase",
    "fsrm",
    "gfni",
    "lzcnt",
    "movbe",
    "movdir64b",
    "movdiri",
    "pclmulqdq",
    "pku",
    "popcnt",
    "rdpid",
    "rdrand",
    "rdseed",
    "rtm",
    "sha_ni",
    "sse",
    "sse2",
    "sse3",
    "sse4_1",
    "sse4_2",
    "sse4a",
    "ssse3",
    "vaes",
    "vpclmulqdq",
    "xsave",
    "xsavec",
    "xsaveopt",
    "xsaves",
];

/// Compares the two hosts. `docker_path` is the reason Docker's checkpoint path was chosen
/// (`None`: the direct path); `tcp` the TCP mode the plan chose (tcp-established needs CRIU's
/// TCP repair, which `criu check` covers); `ignored` the checks the user overrides.
pub(crate) fn compare_hosts(
    src: HostView<'_>,
    dst: HostView<'_>,
    docker_path: Option<&str>,
    tcp: Option<TcpMode>,
    ignored: &[HostCheckKind],
) -> HostComparison {
    let mut checks = Vec::new();
    let mut finding = |check: Option<HostCheckKind>, provider: &str, detail: String| {
        let outcome = match check {
            Some(kind) if ignored.contains(&kind) => CheckOutcome::Overridden,
            Some(_) => CheckOutcome::Refused,
            None => CheckOutcome::Note,
        };
        checks.push(HostCheck { check, provider: provider.to_string(), outcome, detail });
    };
    let (src_name, dst_name) = (src.report.name.as_str(), dst.report.name.as_str());

    match (src.facts, dst.facts) {
        (Some(s), Some(d)) => {
            let missing = missing_cpu_features(s, d);
            if !missing.is_empty() {
                finding(
                    Some(HostCheckKind::Cpu),
                    dst_name,
                    format!(
                        "CPU lacks {} that the container's process may use (`{src_name}`'s CPU has {}: {})",
                        missing.join(", "),
                        if missing.len() == 1 { "it" } else { "them" },
                        if s.cpu_model.is_empty() { "model unknown" } else { &s.cpu_model },
                    ),
                );
            }
        }
        (s, d) => {
            let unknown: Vec<&str> =
                [(src_name, s), (dst_name, d)].into_iter().filter(|(_, f)| f.is_none()).map(|(name, _)| name).collect();
            finding(
                None,
                unknown[0],
                format!(
                    "CPU features and CRIU not compared: no vimigrate-runtime on {} to read them",
                    unknown.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(" and ")
                ),
            );
        }
    }

    for host in [src, dst] {
        let Some(facts) = host.facts else { continue };
        match &facts.criu {
            None => finding(Some(HostCheckKind::Criu), &host.report.name, "no CRIU on dockerd's PATH".into()),
            Some(criu) if !criu.check_ok => {
                let needs = if tcp == Some(TcpMode::Established) { " (tcp-established needs TCP repair)" } else { "" };
                finding(
                    Some(HostCheckKind::Criu),
                    &host.report.name,
                    format!("`criu check` of CRIU {} fails: {}{needs}", criu.version, criu.check_message),
                );
            }
            Some(_) => {}
        }
    }
    if let (Some(s), Some(d)) = (src.facts.and_then(|f| f.criu.as_ref()), dst.facts.and_then(|f| f.criu.as_ref())) {
        let (sv, dv) = (version_parts(&s.version), version_parts(&d.version));
        // CRIU reads images of older CRIUs, not always of newer ones; measured: 4.1.1 on kernel
        // 6.12 fails to restore a dump by 4.2.1 on 6.18 ("vdso: ELF header magic mismatch").
        if dv < sv {
            finding(
                Some(HostCheckKind::Criu),
                dst_name,
                format!(
                    "CRIU {} is older than the source's {}: it may not restore what the newer one dumped \
                     (e.g. another kernel's vDSO layout)",
                    d.version, s.version
                ),
            );
        } else if dv > sv {
            finding(None, dst_name, format!("CRIU {} restores a dump of CRIU {}", d.version, s.version));
        }
    }

    let (src_cg, dst_cg) = (&src.report.cgroup_version, &dst.report.cgroup_version);
    if src_cg != dst_cg && !src_cg.is_empty() && !dst_cg.is_empty() {
        finding(
            Some(HostCheckKind::Cgroup),
            dst_name,
            format!(
                "runs cgroup v{dst_cg} and `{src_name}` cgroup v{src_cg}: CRIU restores the mount tree it dumped, \
                 which holds the container's cgroup hierarchy, and a v{dst_cg} host has no such mounts to give"
            ),
        );
    }

    if let Some(why) = docker_path {
        for host in [src, dst] {
            if host.report.engine_major() >= 28 {
                let role = if host.report.name == src_name {
                    "to resume the source should the migration fail"
                } else {
                    "to restore the container"
                };
                finding(
                    Some(HostCheckKind::Engine),
                    &host.report.name,
                    format!(
                        "Docker's own checkpoint restore is broken on Docker {} (from 28 on: moby/moby#50750), \
                         and Docker's path ({why}) needs it {role}: migrate by the direct path (vimigrate-runtime \
                         on both hosts, the container under runtime `vimigrate`)",
                        host.report.server_version
                    ),
                );
            }
        }
    }

    let notes: [(&str, ReportField); 3] =
        [("kernel", |r| &r.kernel_version), ("runc", |r| &r.runc_version), ("Docker", |r| &r.server_version)];
    for (what, of) in notes {
        let (s, d) = (of(src.report), of(dst.report));
        if s != d && !s.is_empty() && !d.is_empty() {
            finding(None, dst_name, format!("{what} {d} (the source's: {s})"));
        }
    }
    checks.sort_by_key(|c| c.outcome != CheckOutcome::Refused);
    HostComparison { source: summary(src), destination: summary(dst), checks }
}

/// One field of a [`ProviderReport`], for the notes on what differs.
type ReportField = fn(&ProviderReport) -> &str;

/// The instruction-set extensions the source's CPU has and the destination's lacks, sorted.
fn missing_cpu_features(src: &HostFacts, dst: &HostFacts) -> Vec<String> {
    src.cpu_flags.iter().filter(|f| USER_ISA_FLAGS.contains(&f.as_str()) && !dst.has_cpu_flag(f)).cloned().collect()
}

/// `4.2.1` -> `[4, 2, 1]`; what does not parse counts as 0.
fn version_parts(version: &str) -> Vec<u32> {
    version.split('.').map(|p| p.trim().parse().unwrap_or(0)).collect()
}

fn summary(host: HostView<'_>) -> HostSummary {
    let r = host.report;
    let criu = host.facts.and_then(|f| f.criu.as_ref());
    HostSummary {
        provider: r.name.clone(),
        engine: r.server_version.clone(),
        containerd: r.containerd_version.clone(),
        runc: r.runc_version.clone(),
        kernel: host.facts.map(|f| f.kernel.clone()).unwrap_or_else(|| r.kernel_version.clone()),
        cgroup_version: r.cgroup_version.clone(),
        image_store: r.image_store.clone(),
        criu: criu.map(|c| c.version.clone()),
        cpu_model: host.facts.map(|f| f.cpu_model.clone()).unwrap_or_default(),
        criu_features: criu.map(|c| c.features.clone()).unwrap_or_default(),
        facts_known: host.facts.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vimigrate_protocol::CriuFacts;

    fn report(name: &str, engine: &str) -> ProviderReport {
        ProviderReport {
            name: name.into(),
            server_version: engine.into(),
            kernel_version: "6.18.44".into(),
            cgroup_version: "1".into(),
            runc_version: "1.1.5".into(),
            ..Default::default()
        }
    }

    fn facts(flags: &[&str], criu: &str) -> HostFacts {
        HostFacts {
            version: vimigrate_protocol::FACTS_VERSION,
            kernel: "6.18.44".into(),
            cpu_model: "Test CPU".into(),
            cpu_flags: flags.iter().map(|f| f.to_string()).collect(),
            cgroup_version: 1,
            criu: Some(CriuFacts {
                path: "/usr/sbin/criu".into(),
                version: criu.into(),
                check_ok: true,
                ..Default::default()
            }),
            runtime_features: vec![],
            pipe_max_size: 0,
            cap_sys_resource: false,
        }
    }

    fn compare(
        src: (&ProviderReport, Option<&HostFacts>),
        dst: (&ProviderReport, Option<&HostFacts>),
        docker: bool,
        ignored: &[HostCheckKind],
    ) -> HostComparison {
        compare_hosts(
            HostView { report: src.0, facts: src.1 },
            HostView { report: dst.0, facts: dst.1 },
            docker.then_some("method docker was asked for"),
            None,
            ignored,
        )
    }

    #[test]
    fn a_cpu_lacking_an_extension_the_source_has_refuses_by_name() {
        let (a, b) = (report("provider-a", "20.10.24"), report("provider-guest", "26.1.5"));
        let host = facts(&["fpu", "sse2", "avx2", "avx512f", "vmx", "hypervisor"], "4.2.1");
        let guest = facts(&["fpu", "sse2", "avx2"], "4.2.1");
        let cmp = compare((&a, Some(&host)), (&b, Some(&guest)), false, &[]);
        let refusal = cmp.refusal().expect("refused");
        assert_eq!((refusal.check, refusal.provider.as_str()), (Some(HostCheckKind::Cpu), "provider-guest"));
        assert!(
            refusal.detail.starts_with("CPU lacks avx512f that the container's process may use"),
            "{}",
            refusal.detail
        );
        assert!(!refusal.detail.contains("vmx"), "virtualization flags are not compared: {}", refusal.detail);
        // The other way round nothing is missing; overridden, the finding stays in the plan.
        assert!(compare((&b, Some(&guest)), (&a, Some(&host)), false, &[]).refusal().is_none());
        let overridden = compare((&a, Some(&host)), (&b, Some(&guest)), false, &[HostCheckKind::Cpu]);
        assert!(overridden.refusal().is_none());
        assert_eq!(overridden.checks[0].outcome, CheckOutcome::Overridden);
    }

    #[test]
    fn criu_missing_failing_or_older_refuses_a_newer_one_is_a_note() {
        let (a, b) = (report("a", "26.1.5"), report("b", "26.1.5"));
        let ok = facts(&["sse2"], "4.2.1");
        let mut none = ok.clone();
        none.criu = None;
        let mut failing = ok.clone();
        failing.criu.as_mut().unwrap().check_ok = false;
        failing.criu.as_mut().unwrap().check_message = "Error (criu/tun.c): tun is not supported".into();
        let old_major = facts(&["sse2"], "3.17.1");
        let old_minor = facts(&["sse2"], "4.1.1");
        let newer = facts(&["sse2"], "4.3");
        for (dst, want) in [
            (&none, "no CRIU"),
            (&failing, "tun is not supported"),
            (&old_major, "3.17.1 is older than the source's 4.2.1"),
            (&old_minor, "4.1.1 is older"),
        ] {
            let cmp = compare((&a, Some(&ok)), (&b, Some(dst)), false, &[]);
            let refusal = cmp.refusal().unwrap_or_else(|| panic!("{want}: {cmp:?}"));
            assert_eq!(refusal.check, Some(HostCheckKind::Criu));
            assert!(refusal.detail.contains(want), "{}", refusal.detail);
        }
        let cmp = compare((&a, Some(&ok)), (&b, Some(&newer)), false, &[]);
        assert!(cmp.refusal().is_none(), "{cmp:?}");
        assert!(cmp.checks.iter().any(|c| c.outcome == CheckOutcome::Note && c.detail.contains("CRIU 4.3 restores")));
    }

    #[test]
    fn dockers_path_is_refused_on_engines_from_28_with_the_moby_issue() {
        let (old, new) = (report("provider-a", "20.10.24+dfsg1"), report("provider-28", "28.5.2+dfsg4"));
        for (src, dst) in [(&old, &new), (&new, &old)] {
            let cmp = compare((src, None), (dst, None), true, &[]);
            let refusal = cmp.refusal().expect("refused");
            assert_eq!((refusal.check, refusal.provider.as_str()), (Some(HostCheckKind::Engine), "provider-28"));
            assert!(refusal.detail.contains("moby/moby#50750"), "{}", refusal.detail);
            assert!(compare((src, None), (dst, None), false, &[]).refusal().is_none(), "the direct path is fine");
            assert!(compare((src, None), (dst, None), true, &[HostCheckKind::Engine]).refusal().is_none());
        }
    }

    #[test]
    fn another_cgroup_version_refuses() {
        let (a, mut b) = (report("provider-a", "20.10.24"), report("provider-guest", "26.1.5"));
        b.cgroup_version = "2".into();
        let cmp = compare((&a, None), (&b, None), false, &[]);
        let refusal = cmp.refusal().expect("refused");
        assert_eq!((refusal.check, refusal.provider.as_str()), (Some(HostCheckKind::Cgroup), "provider-guest"));
        assert!(refusal.detail.starts_with("runs cgroup v2 and `provider-a` cgroup v1"), "{}", refusal.detail);
        assert!(compare((&a, None), (&b, None), false, &[HostCheckKind::Cgroup]).refusal().is_none());
    }

    #[test]
    fn unknown_facts_and_version_differences_are_notes() {
        let (a, mut b) = (report("a", "20.10.24"), report("b", "28.5.2"));
        b.kernel_version = "6.12.57".into();
        b.runc_version = "1.3.6".into();
        let cmp = compare((&a, None), (&b, None), false, &[]);
        assert!(cmp.refusal().is_none());
        let details: Vec<&str> = cmp.checks.iter().map(|c| c.detail.as_str()).collect();
        assert!(details[0].contains("no vimigrate-runtime on `a` and `b`"), "{details:?}");
        for want in ["kernel 6.12.57 (the source's: 6.18.44)", "runc 1.3.6 (the source's: 1.1.5)", "Docker 28.5.2"] {
            assert!(details.iter().any(|d| d.contains(want)), "{want}: {details:?}");
        }
        assert!(!cmp.source.facts_known);
    }
}
