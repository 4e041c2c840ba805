//! Whether the direct path's stream is compressed (zstd), and the preflight's decision.
//!
//! `auto` (the default) lets the source's runtime compress each chunk when that pays: it
//! shrinks, and the link is slower than the compressor, both measured during the transfer
//! (`vimigrate-runtime`'s `transfer/compress.rs`), so incompressible memory and fast links go
//! as they are; `zstd` compresses every chunk that shrinks; `off` never does. The report gives
//! the ratio reached.

use serde::{Deserialize, Serialize};
use vimigrate_protocol::{HostFacts, StreamCompression, COMPRESSION};

/// What the user asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    /// Compressed where it pays, when both runtimes can; otherwise off, said in the plan.
    #[default]
    Auto,
    /// Every chunk that shrinks goes compressed; refused where a runtime cannot.
    Zstd,
    /// Never.
    Off,
}

/// The stream's compression for a migration, and why.
pub(crate) fn decide(
    asked: Compression,
    direct: bool,
    (src_name, src): (&str, Option<&HostFacts>),
    (dst_name, dst): (&str, Option<&HostFacts>),
) -> Result<(StreamCompression, String), String> {
    if asked == Compression::Off {
        return Ok((StreamCompression::Off, "off, as asked".into()));
    }
    let missing = if !direct {
        Some("Docker's checkpoint path moves the checkpoint as Docker exports it".to_string())
    } else {
        [(src_name, src), (dst_name, dst)].into_iter().find_map(|(name, facts)| {
            (!facts.is_some_and(|f| f.runtime_has(COMPRESSION)))
                .then(|| format!("the vimigrate-runtime on `{name}` has no zstd (install this version's)"))
        })
    };
    match (asked, missing) {
        (Compression::Zstd, Some(why)) => Err(why),
        (_, Some(why)) => Ok((StreamCompression::Off, format!("off: {why}"))),
        (Compression::Zstd, None) => {
            Ok((StreamCompression::Always, "zstd on every chunk that shrinks, as asked".into()))
        }
        _ => Ok((
            StreamCompression::Adaptive,
            "zstd where it pays: chunks that shrink, while the link is slower than the compressor".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(zstd: bool) -> HostFacts {
        HostFacts { runtime_features: if zstd { vec![COMPRESSION.into()] } else { vec![] }, ..Default::default() }
    }

    #[test]
    fn auto_compresses_where_both_runtimes_can_and_says_why_not_elsewhere() {
        let (new, old) = (facts(true), facts(false));
        let both =
            |asked, direct, src: &HostFacts, dst: &HostFacts| decide(asked, direct, ("a", Some(src)), ("b", Some(dst)));
        assert_eq!(both(Compression::Auto, true, &new, &new).unwrap().0, StreamCompression::Adaptive);
        let (mode, why) = both(Compression::Auto, true, &new, &old).unwrap();
        assert_eq!(mode, StreamCompression::Off);
        assert!(why.contains("`b` has no zstd"), "{why}");
        assert!(both(Compression::Auto, false, &new, &new).unwrap().1.contains("Docker's checkpoint path"));
        assert!(both(Compression::Zstd, true, &old, &new).unwrap_err().contains("`a` has no zstd"));
        assert_eq!(both(Compression::Zstd, true, &new, &new).unwrap().0, StreamCompression::Always);
        assert_eq!(both(Compression::Off, true, &new, &new).unwrap().0, StreamCompression::Off);
    }

    #[test]
    fn choices_are_spelled_in_kebab_case() {
        assert_eq!(serde_json::to_value(Compression::Zstd).unwrap(), "zstd");
        assert!(serde_json::from_value::<Compression>("gzip".into()).is_err());
    }
}
