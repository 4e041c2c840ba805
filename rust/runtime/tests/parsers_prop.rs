//! Property tests of the runtime's parsers: whatever bytes or arguments arrive, they return an
//! error or a value and never panic; what the sender writes, the receiver reads back.

use proptest::prelude::*;
use vimigrate_runtime::runc::args::Invocation;
use vimigrate_runtime::transfer::wire::{self, Area, EntryHeader, Frame, Hello, Kind};

fn area() -> impl Strategy<Value = Area> {
    prop_oneof![Just(Area::Images), Just(Area::Rootfs), Just(Area::Volume)]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::File), Just(Kind::Dir), Just(Kind::Symlink), Just(Kind::Delete), Just(Kind::Fifo)]
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn frame() -> impl Strategy<Value = Frame> {
    let header = (
        any::<u32>(),
        area(),
        bytes(64),
        bytes(200),
        kind(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<i64>(),
        0u32..1_000_000_000,
        bytes(64),
    )
        .prop_map(|(id, area, volume, path, kind, mode, uid, gid, mtime_sec, mtime_nsec, link)| {
            Frame::Entry(EntryHeader { id, area, volume, path, kind, mode, uid, gid, mtime_sec, mtime_nsec, link })
        });
    prop_oneof![
        header,
        (any::<u32>(), 0u32..=wire::MAX_DATA).prop_map(|(id, len)| Frame::Data { id, len }),
        (any::<u32>(), any::<u64>(), any::<[u8; 32]>()).prop_map(|(id, size, digest)| Frame::End { id, size, digest }),
        (any::<u64>(), any::<u64>()).prop_map(|(bytes, entries)| Frame::Done { bytes, entries }),
        bytes(300).prop_map(|message| Frame::Abort { message }),
    ]
}

proptest! {
    #[test]
    fn frames_round_trip(frames in proptest::collection::vec(frame(), 1..8)) {
        let mut buf = Vec::new();
        for f in &frames {
            wire::write_frame(&mut buf, f).unwrap();
        }
        let mut r = buf.as_slice();
        for f in &frames {
            prop_assert_eq!(&wire::read_frame(&mut r).unwrap(), f);
        }
        prop_assert!(r.is_empty());
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_frame_reader(input in bytes(4096)) {
        let mut r = input.as_slice();
        // Reads until the first error, as the receiver does.
        while wire::read_frame(&mut r).is_ok() {}
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_hello_reader(input in bytes(512)) {
        let _ = wire::read_hello(&mut input.as_slice());
        let _ = wire::read_verdict(&mut input.as_slice());
    }

    #[test]
    fn hellos_round_trip(token in bytes(128), migration in bytes(128)) {
        let hello = Hello { token, migration };
        let mut buf = Vec::new();
        wire::write_hello(&mut buf, &hello).unwrap();
        prop_assert_eq!(wire::read_hello(&mut buf.as_slice()).unwrap(), hello);
    }

    #[test]
    fn any_command_line_splits_without_panicking(argv in proptest::collection::vec(".{0,40}", 0..12)) {
        let inv = Invocation::parse(&argv);
        // The id, when found, is always one that is safe in a path.
        if let Some(id) = inv.container_id() {
            prop_assert!(vimigrate_runtime::runc::args::is_container_id(id));
        }
        let _ = inv.args_without("--image-path");
        let _ = inv.global_value("--root");
    }
}
