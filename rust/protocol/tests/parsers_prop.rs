//! Property tests of the parsers of what provider hosts send the broker: CRIU's statistics
//! images, RFC 3339 times, directives and statuses. Whatever arrives, they return an error or a
//! value and never panic.

use proptest::prelude::*;
use vimigrate_protocol::rfc3339::{format_rfc3339, parse_rfc3339_ns};
use vimigrate_protocol::{parse_dump_stats, parse_restore_stats, Directive, RuntimeStatus};

proptest! {
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
