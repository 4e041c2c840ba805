//! Property tests of the engine's parsers of what providers send: tar streams. Whatever arrives,
//! they return an error or a value and never panic. (The parsers of what hosts send, CRIU's
//! statistics images, RFC 3339 times, directives and statuses, are tested in rust/protocol.)

use proptest::prelude::*;
use vimigrate_core::TarManifestBuilder;

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
}
