//! Property tests of the engine's parsers of what providers and hosts send: tar streams, CRIU's
//! statistics images, RFC 3339 times, directives. Whatever arrives, they return an error or a
//! value and never panic.

use proptest::prelude::*;
use vimigrate_core::rfc3339::{format_rfc3339, parse_rfc3339_ns};
use vimigrate_core::runtime_directive::{Directive, RuntimeStatus};
use vimigrate_core::{parse_dump_stats, parse_restore_stats, TarManifestBuilder};

proptest! {
    #[test]
    fn tar_reader_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..1500), 0..6)) {
        let mut reader = TarManifestBuilder::new().capture("x");
        for chunk in &chunks {
            if reader.update(chunk).is_err() {
                return Ok(());
            }
        }
        let _ = reader.finish();
    }

    #[test]
    fn a_tar_header_with_garbage_fields_is_an_error_not_a_panic(mut block in proptest::collection::vec(any::<u8>(), 512..=512), size in 0u64..4096) {
        // A plausible header (magic and a size) with everything else random.
        block[257..263].copy_from_slice(b"ustar\0");
        let text = format!("{size:011o}\0");
        block[124..136].copy_from_slice(text.as_bytes());
        let mut reader = TarManifestBuilder::new();
        let _ = reader.update(&block).and_then(|()| reader.update(&vec![0u8; 2048]));
    }

    #[test]
    fn criu_stats_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_dump_stats(&bytes);
        let _ = parse_restore_stats(&bytes);
    }

    #[test]
    fn rfc3339_parser_never_panics(text in ".{0,48}") {
        let _ = parse_rfc3339_ns(&text);
    }

    #[test]
    fn rfc3339_round_trips(secs in 0u64..8_000_000_000, nanos in 0u32..1_000_000_000) {
        let t = std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
        let parsed = parse_rfc3339_ns(&format_rfc3339(t));
        prop_assert_eq!(parsed, Some(i128::from(secs) * 1_000_000_000 + i128::from(nanos)));
    }

    #[test]
    fn directive_and_status_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = serde_json::from_slice::<Directive>(&bytes);
        let _ = serde_json::from_slice::<RuntimeStatus>(&bytes);
    }
}
