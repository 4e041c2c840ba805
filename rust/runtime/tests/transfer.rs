//! The transfer between two wrappers over loopback TLS: what the source sends arrives where it
//! belongs with its content, attributes and checksums, corruption and impostors are refused.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use vimigrate_protocol::{BaselineEntry, StreamCompression};
use vimigrate_runtime::error::RuntimeError;
use vimigrate_runtime::fs::layer_delta::{layer_delta, whole_tree};
use vimigrate_runtime::transfer::receive::{self, ReceivePlan, ReceiveReport};
use vimigrate_runtime::transfer::send::{SendTarget, Sender};
use vimigrate_runtime::transfer::wire::Area;

struct Keys {
    cert: Vec<u8>,
    key: Vec<u8>,
}

fn keys() -> Keys {
    let made = rcgen::generate_simple_self_signed(vec!["vimigrate-transfer".to_string()]).unwrap();
    Keys { cert: made.cert.der().to_vec(), key: made.key_pair.serialize_der() }
}

struct Destination {
    _dir: tempfile::TempDir,
    images: std::path::PathBuf,
    rootfs: std::path::PathBuf,
    volume: std::path::PathBuf,
}

fn destination() -> Destination {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    let volume = dir.path().join("volume");
    fs::create_dir_all(rootfs.join("tmp")).unwrap();
    fs::create_dir_all(&volume).unwrap();
    // Left by the first pass; deleted on the source since.
    fs::write(rootfs.join("tmp/removed"), b"old").unwrap();
    Destination { images: dir.path().join("checkpoints/m1"), rootfs, volume, _dir: dir }
}

/// Runs a receiver for `dest` on loopback; returns its port and its result.
fn spawn_receiver(
    dest: &Destination,
    keys: &Keys,
    token: &str,
) -> (u16, std::thread::JoinHandle<Result<ReceiveReport, RuntimeError>>) {
    let listener = receive::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let cert = keys.cert.clone();
    let key = keys.key.clone();
    let token = token.as_bytes().to_vec();
    let images = dest.images.clone();
    let rootfs = dest.rootfs.clone();
    let volumes = BTreeMap::from([("/data".to_string(), dest.volume.clone())]);
    let handle = std::thread::spawn(move || {
        let never = || false;
        let plan = ReceivePlan {
            token,
            migration: "m1".into(),
            cert,
            key,
            io_timeout: Duration::from_secs(10),
            deadline: SystemTime::now() + Duration::from_secs(20),
            abandoned: &never,
            images_dir: images,
            rootfs,
            volumes,
        };
        receive::receive(&listener, &plan)
    });
    (port, handle)
}

fn target(port: u16, keys: &Keys, token: &str) -> SendTarget {
    SendTarget {
        address: format!("127.0.0.1:{port}"),
        token: token.as_bytes().to_vec(),
        migration: "m1".into(),
        server_cert: keys.cert.clone(),
        connect_timeout: Duration::from_secs(5),
        io_timeout: Duration::from_secs(10),
        compression: StreamCompression::Off,
    }
}

#[test]
fn layer_volume_and_images_arrive_intact_while_the_dump_still_writes() {
    let keys = keys();
    let dest = destination();
    let source = tempfile::tempdir().unwrap();
    let upper = source.path().join("upper");
    fs::create_dir_all(upper.join("tmp")).unwrap();
    fs::write(upper.join("tmp/held"), b"held open by the process").unwrap();
    fs::set_permissions(upper.join("tmp/held"), fs::Permissions::from_mode(0o640)).unwrap();
    symlink("/tmp/held", upper.join("tmp/link")).unwrap();
    let volume = source.path().join("volume");
    fs::create_dir_all(volume.join("sub")).unwrap();
    fs::write(volume.join("sub/blob"), vec![7u8; 3 << 20]).unwrap();
    let images = source.path().join("images");
    fs::create_dir_all(&images).unwrap();

    let (port, receiver) = spawn_receiver(&dest, &keys, "secret-token");
    let mut sender = Sender::connect(&target(port, &keys, "secret-token")).unwrap();
    let baseline = vec![BaselineEntry { path: "/tmp/removed".into(), size: 3, mtime_ns: 0, mode: 0o644 }];
    sender.send_items(Area::Rootfs, "", &layer_delta(&upper, &baseline, &[]).unwrap()).unwrap();
    sender.send_items(Area::Volume, "/data", &whole_tree(&volume).unwrap()).unwrap();

    // A fake dump: the page image grows in steps while the sender streams it.
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let images = images.clone();
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            use std::io::Write;
            let mut pages = fs::File::create(images.join("pages-1.img")).unwrap();
            for i in 0..20u8 {
                pages.write_all(&vec![i; 256 << 10]).unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
            fs::write(images.join("core-1.img"), b"core").unwrap();
            done.store(true, Ordering::SeqCst);
        })
    };
    let state = || done.load(Ordering::SeqCst).then_some(true);
    sender.stream_images(&images, &state).unwrap();
    writer.join().unwrap();
    let sent = sender.finish().unwrap();
    let got = receiver.join().unwrap().unwrap();

    assert_eq!(sent.image_bytes, 20 * (256 << 10) + 4);
    assert_eq!(got.image_bytes, sent.image_bytes);
    assert_eq!(fs::read(dest.images.join("pages-1.img")).unwrap(), fs::read(images.join("pages-1.img")).unwrap());
    assert_eq!(fs::read(dest.images.join("core-1.img")).unwrap(), b"core");
    let image_mode = fs::metadata(dest.images.join("pages-1.img")).unwrap().permissions().mode() & 0o777;
    assert_eq!(image_mode, 0o600, "process memory is readable by root only");
    assert_eq!(fs::metadata(&dest.images).unwrap().permissions().mode() & 0o777, 0o700);
    let held = dest.rootfs.join("tmp/held");
    assert_eq!(fs::read(&held).unwrap(), b"held open by the process");
    assert_eq!(fs::metadata(&held).unwrap().mode() & 0o777, 0o640);
    assert_eq!(fs::metadata(&held).unwrap().mtime(), fs::metadata(upper.join("tmp/held")).unwrap().mtime());
    assert_eq!(fs::read_link(dest.rootfs.join("tmp/link")).unwrap(), Path::new("/tmp/held"));
    assert!(!dest.rootfs.join("tmp/removed").exists(), "a file deleted on the source is deleted");
    assert_eq!(fs::read(dest.volume.join("sub/blob")).unwrap(), vec![7u8; 3 << 20]);
}

#[test]
fn a_compressed_stream_arrives_identical_and_smaller() {
    let keys = keys();
    let dest = destination();
    let source = tempfile::tempdir().unwrap();
    let images = source.path().join("images");
    fs::create_dir_all(&images).unwrap();
    // A heap of text next to incompressible memory: only the first shrinks on the wire.
    let text: Vec<u8> =
        (0..200_000).flat_map(|i| format!("{{\"key\":\"k{i}\",\"v\":{}}},", i % 31).into_bytes()).collect();
    let mut state = 1u64;
    let noise: Vec<u8> = (0..(3 << 20))
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect();
    fs::write(images.join("pages-1.img"), &text).unwrap();
    fs::write(images.join("pages-2.img"), &noise).unwrap();
    fs::write(images.join("core-1.img"), b"core").unwrap();
    let (port, receiver) = spawn_receiver(&dest, &keys, "t");
    let compressed = SendTarget { compression: StreamCompression::Always, ..target(port, &keys, "t") };
    let mut sender = Sender::connect(&compressed).unwrap();
    sender.stream_images(&images, &|| Some(true)).unwrap();
    let ratio = sender.compression_ratio();
    let sent = sender.finish().unwrap();
    let got = receiver.join().unwrap().unwrap();
    assert_eq!(got.image_bytes, sent.image_bytes);
    assert_eq!(fs::read(dest.images.join("pages-1.img")).unwrap(), text);
    assert_eq!(fs::read(dest.images.join("pages-2.img")).unwrap(), noise);
    let raw = (text.len() + noise.len() + 4) as u64;
    assert_eq!(sent.image_bytes, raw);
    assert!(sent.wire_bytes < raw - (text.len() as u64) / 2, "the text shrank: {} of {raw}", sent.wire_bytes);
    assert!(sent.wire_bytes > noise.len() as u64, "the noise went as it is: {}", sent.wire_bytes);
    assert!(ratio > 1.1, "{ratio}");
}

#[test]
fn a_pre_dump_chain_arrives_with_its_parent_links() {
    let keys = keys();
    let dest = destination();
    let source = tempfile::tempdir().unwrap();
    let images = source.path().join("images");
    for (round, parent) in [("pre-1", None), ("pre-2", Some("../pre-1"))] {
        let dir = images.join(round);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("pages-1.img"), vec![round.len() as u8; 70_000]).unwrap();
        fs::write(dir.join("pagemap-1.img"), b"map").unwrap();
        if let Some(parent) = parent {
            symlink(parent, dir.join("parent")).unwrap();
        }
    }
    fs::write(images.join("pages-1.img"), b"dirty since").unwrap();
    symlink("pre-2", images.join("parent")).unwrap();
    let (port, receiver) = spawn_receiver(&dest, &keys, "t");
    // The rounds in one connection (pre_copy.rs), the dump in the next (dump.rs).
    let mut rounds = Sender::connect(&target(port, &keys, "t")).unwrap();
    assert_eq!(rounds.send_predump(&images.join("pre-1"), "pre-1").unwrap(), 70_000);
    assert_eq!(rounds.send_predump(&images.join("pre-2"), "pre-2").unwrap(), 70_000);
    let sent = rounds.finish_part().unwrap();
    assert_eq!(sent.image_bytes, 2 * (70_000 + 3));
    assert!(!receiver.is_finished(), "the receiver waits for the dump");
    let mut sender = Sender::connect(&target(port, &keys, "t")).unwrap();
    sender.stream_images(&images, &|| Some(true)).unwrap();
    sender.send_parent_link(&images).unwrap();
    sender.finish().unwrap();
    let got = receiver.join().unwrap().unwrap();
    assert_eq!(got.image_bytes, 2 * (70_000 + 3) + 11, "both connections counted");
    assert_eq!(fs::read_link(dest.images.join("parent")).unwrap(), Path::new("pre-2"));
    assert_eq!(fs::read_link(dest.images.join("pre-2/parent")).unwrap(), Path::new("../pre-1"));
    assert_eq!(fs::read(dest.images.join("parent/parent/pagemap-1.img")).unwrap(), b"map");
    assert_eq!(fs::read(dest.images.join("pages-1.img")).unwrap(), b"dirty since");
    assert_eq!(fs::metadata(dest.images.join("pre-1")).unwrap().permissions().mode() & 0o777, 0o700);
}

#[test]
fn a_wrong_token_is_refused() {
    let keys = keys();
    let dest = destination();
    let (port, _receiver) = spawn_receiver(&dest, &keys, "right");
    let err = Sender::connect(&target(port, &keys, "wrong")).expect_err("refused");
    assert!(err.report().contains("wrong token"), "{}", err.report());
}

#[test]
fn an_impostor_receiver_is_refused_by_the_pinned_certificate() {
    let keys = keys();
    let other = self::keys();
    let dest = destination();
    let (port, _receiver) = spawn_receiver(&dest, &other, "t");
    let err = Sender::connect(&target(port, &keys, "t")).expect_err("refused");
    assert!(err.report().contains("TLS handshake"), "{}", err.report());
}

#[test]
fn a_file_changed_under_the_sender_is_caught() {
    let keys = keys();
    let dest = destination();
    let source = tempfile::tempdir().unwrap();
    let images = source.path().join("images");
    fs::create_dir_all(&images).unwrap();
    fs::write(images.join("pages-1.img"), vec![1u8; 1000]).unwrap();
    let (port, receiver) = spawn_receiver(&dest, &keys, "t");
    let mut sender = Sender::connect(&target(port, &keys, "t")).unwrap();
    let calls = std::cell::Cell::new(0);
    let state = || {
        calls.set(calls.get() + 1);
        if calls.get() == 2 {
            // Shrink it after the first pass sent 1000 bytes: not what CRIU does, and caught.
            fs::write(images.join("pages-1.img"), vec![1u8; 10]).unwrap();
        }
        (calls.get() > 2).then_some(true)
    };
    let err = sender.stream_images(&images, &state).expect_err("caught");
    assert!(err.report().contains("changed while it was sent"), "{}", err.report());
    sender.abort(&err.report());
    let received = receiver.join().unwrap().expect_err("the receiver gives up");
    assert!(received.report().contains("the source gave up"), "{}", received.report());
}

#[test]
fn a_corrupted_stream_is_detected_by_its_checksum() {
    let keys = keys();
    let dest = destination();
    let source = tempfile::tempdir().unwrap();
    let images = source.path().join("images");
    fs::create_dir_all(&images).unwrap();
    fs::write(images.join("pages-1.img"), vec![3u8; 100_000]).unwrap();
    let (port, receiver) = spawn_receiver(&dest, &keys, "t");
    let mut sender = Sender::connect(&target(port, &keys, "t")).unwrap();
    sender.corrupt_the_stream();
    let done = || Some(true);
    let sent = sender.stream_images(&images, &done).and_then(|()| sender.finish());
    let err = receiver.join().unwrap().expect_err("detected");
    assert!(matches!(err, RuntimeError::Checksum { .. }), "{}", err.report());
    assert!(err.report().contains("image pages-1.img arrived corrupted"), "{}", err.report());
    let sent = sent.expect_err("the sender learns it");
    assert!(sent.report().contains("rejected the transfer"), "{}", sent.report());
}
