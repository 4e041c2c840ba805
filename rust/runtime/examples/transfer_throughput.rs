//! Throughput of the host-to-host transfer (TLS, BLAKE3 per file, the receiver writing files)
//! against a plain TCP copy of the same bytes measured in the same run, over loopback.
//!
//! `cargo run --release -p vimigrate-runtime --example transfer_throughput [MiB]`

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant, SystemTime};

use vimigrate_runtime::transfer::receive::{self, ReceivePlan};
use vimigrate_runtime::transfer::send::{SendTarget, Sender};

fn main() {
    let mib: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(512);
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    // Incompressible, as process memory is.
    let mut data = vec![0u8; mib << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(images.join("pages-1.img"), &data).unwrap();

    // Baseline: the same bytes read from the page cache and sent over plain TCP.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let sink = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0usize;
        loop {
            let got = s.read(&mut buf).unwrap();
            if got == 0 {
                break n;
            }
            n += got;
        }
    });
    let t = Instant::now();
    let mut file = std::fs::File::open(images.join("pages-1.img")).unwrap();
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::copy(&mut file, &mut tcp).unwrap();
    drop(tcp);
    assert_eq!(sink.join().unwrap(), mib << 20);
    let plain = t.elapsed().as_secs_f64();

    let made = rcgen::generate_simple_self_signed(vec!["vimigrate-transfer".to_string()]).unwrap();
    let (cert, key) = (made.cert.der().to_vec(), made.key_pair.serialize_der());
    let listener = receive::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let out = dir.path().join("out");
    let receiver = {
        let (cert, key, out) = (cert.clone(), key.clone(), out.clone());
        std::thread::spawn(move || {
            let never = || false;
            let plan = ReceivePlan {
                token: b"t".to_vec(),
                migration: "bench".into(),
                cert,
                key,
                io_timeout: Duration::from_secs(30),
                deadline: SystemTime::now() + Duration::from_secs(60),
                abandoned: &never,
                images_dir: out.join("images"),
                rootfs: out.clone(),
                volumes: BTreeMap::new(),
            };
            receive::receive(&listener, &plan).unwrap()
        })
    };
    let t = Instant::now();
    let target = SendTarget {
        address: format!("127.0.0.1:{port}"),
        token: b"t".to_vec(),
        migration: "bench".into(),
        server_cert: cert,
        connect_timeout: Duration::from_secs(5),
        io_timeout: Duration::from_secs(30),
        compression: vimigrate_protocol::StreamCompression::Off,
    };
    let mut sender = Sender::connect(&target).unwrap();
    sender.stream_images(&images, &|| Some(true)).unwrap();
    sender.finish().unwrap();
    let report = receiver.join().unwrap();
    let ours = t.elapsed().as_secs_f64();
    assert_eq!(report.image_bytes, (mib << 20) as u64);
    let _ = std::io::stdout().flush();
    println!("{mib} MiB over loopback:");
    println!("  plain TCP copy (baseline):   {plain:.3} s, {:.0} MB/s", (mib << 20) as f64 / plain / 1e6);
    println!(
        "  vimigrate transfer (TLS 1.3, BLAKE3, files written): {ours:.3} s, {:.0} MB/s, {:.2}x the baseline's time",
        (mib << 20) as f64 / ours / 1e6,
        ours / plain
    );
}
