//! Post-copy's page traffic, carried inside the migration's TLS connection once the images have
//! arrived: CRIU's lazy-pages daemon on the destination asks CRIU's page server on the source
//! for the pages the restored process faults on (and, in the background, for all the others).
//! Both CRIU ends only speak plain TCP on their own host (127.0.0.1); each runtime connects its
//! CRIU end to this relay, so the pages cross between hosts encrypted and authenticated by the
//! migration's certificate and token, as the images did, and the broker relays nothing.
//!
//! Inside the TLS stream the relay sends frames, a tag byte and a big-endian u32 length:
//!
//! - `DATA` (0): bytes of CRIU's own page-server protocol;
//! - `RESTORED` (1), destination to source: the restore succeeded, the process runs here; from
//!   now on the source must never resume it (its memory is split between the hosts);
//! - `FAILED` (2), either way, with a message: the other side gives up;
//! - `EOF` (3): this side's CRIU closed its connection (its transfer is complete);
//! - `PING` (4): nothing else to say for a quarter of the I/O timeout: the link is alive.
//!
//! A relay ends when both directions saw `EOF` (every page arrived), or on `FAILED`, a broken
//! connection or a silence longer than the I/O timeout: [`RelayEnd`] says which and whether the
//! destination had restored, which decides what the source does (resume or discard).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use rustls::{ConnectionCommon, SideData, StreamOwned};

const DATA: u8 = 0;
const RESTORED: u8 = 1;
const FAILED: u8 = 2;
const EOF: u8 = 3;
const PING: u8 = 4;
/// Largest frame accepted: CRIU's page-server messages are a page run at most (a few MiB).
const MAX_FRAME: u32 = 16 << 20;
/// What one read from the local CRIU end may carry into a frame.
const CHUNK: usize = 256 << 10;

/// What the relay's control pipe may say (one byte each), from the runtime that drives the
/// relay: the destination's restore succeeded, or it failed.
pub const CONTROL_RESTORED: u8 = b'R';
/// See [`CONTROL_RESTORED`].
pub const CONTROL_FAILED: u8 = b'F';

/// How a relay ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayEnd {
    /// Both CRIU ends closed their connections: every page the destination wanted arrived.
    pub complete: bool,
    /// The destination said it restored (seen by the source, or sent by the destination).
    pub restored: bool,
    /// Why it ended otherwise.
    pub failure: Option<String>,
    /// Bytes from the local CRIU end to the peer, and from the peer to the local end.
    pub bytes_out: u64,
    /// See `bytes_out`.
    pub bytes_in: u64,
    /// From the relay's start to its end.
    pub elapsed: Duration,
}

/// Relays between the local CRIU end `local` and the peer over `tls` until the transfer is
/// complete or fails (see the module documentation). `control`, when given, is polled for
/// [`CONTROL_RESTORED`] and [`CONTROL_FAILED`] bytes, which are passed to the peer.
pub fn run<C, S>(
    tls: &mut StreamOwned<C, TcpStream>,
    local: &mut TcpStream,
    control: Option<RawFd>,
    io_timeout: Duration,
) -> RelayEnd
where
    C: DerefMut + Deref<Target = ConnectionCommon<S>>,
    S: SideData,
{
    let started = Instant::now();
    let mut relay =
        Relay { restored: false, bytes_out: 0, bytes_in: 0, local_done: false, peer_done: false, inbound: Vec::new() };
    let failure = relay.pump(tls, local, control, io_timeout).err();
    if failure.is_some() {
        // Tell the peer, best effort: it may be what failed. The local end is left to the
        // caller: closing CRIU's page-server connection tells CRIU the transfer is complete,
        // which on the source ends the frozen processes, right only once the destination ran.
        let _ = write_frame(tls, FAILED, failure.as_deref().unwrap_or_default().as_bytes());
    }
    RelayEnd {
        complete: failure.is_none(),
        restored: relay.restored,
        failure,
        bytes_out: relay.bytes_out,
        bytes_in: relay.bytes_in,
        elapsed: started.elapsed(),
    }
}

struct Relay {
    restored: bool,
    bytes_out: u64,
    bytes_in: u64,
    local_done: bool,
    peer_done: bool,
    /// Plaintext from the peer not yet parsed into whole frames.
    inbound: Vec<u8>,
}

impl Relay {
    fn pump<C, S>(
        &mut self,
        tls: &mut StreamOwned<C, TcpStream>,
        local: &mut TcpStream,
        mut control: Option<RawFd>,
        io_timeout: Duration,
    ) -> Result<(), String>
    where
        C: DerefMut + Deref<Target = ConnectionCommon<S>>,
        S: SideData,
    {
        let mut buf = vec![0u8; CHUNK];
        let mut last_peer = Instant::now();
        let mut last_sent = Instant::now();
        while !(self.local_done && self.peer_done) {
            // Plaintext rustls already decrypted is not announced by the socket: take it first.
            self.drain_plaintext(tls, local)?;
            if self.local_done && self.peer_done {
                break;
            }
            let mut fds = vec![libc::pollfd { fd: tls.sock.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
            if !self.local_done {
                fds.push(libc::pollfd { fd: local.as_raw_fd(), events: libc::POLLIN, revents: 0 });
            }
            if let Some(fd) = control {
                fds.push(libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
            }
            // SAFETY: `fds` is a valid array of pollfd for its length.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
            if ready < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(format!("poll: {e}"));
            }
            let readable = |fd: RawFd| {
                fds.iter().any(|p| p.fd == fd && p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0)
            };
            if readable(tls.sock.as_raw_fd()) {
                match tls.conn.read_tls(&mut tls.sock) {
                    Ok(0) => {
                        if !self.peer_done {
                            return Err("the peer closed the connection".into());
                        }
                    }
                    Ok(_) => {
                        last_peer = Instant::now();
                        tls.conn.process_new_packets().map_err(|e| format!("TLS: {e}"))?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("read from the peer: {e}")),
                }
            } else if !self.peer_done && last_peer.elapsed() > io_timeout {
                return Err(format!("the peer was silent for {} s", io_timeout.as_secs()));
            }
            if last_sent.elapsed() > io_timeout / 4 {
                write_frame(tls, PING, &[]).map_err(|e| format!("write to the peer: {e}"))?;
                last_sent = Instant::now();
            }
            if !self.local_done && readable(local.as_raw_fd()) {
                match local.read(&mut buf) {
                    Ok(0) => {
                        self.local_done = true;
                        write_frame(tls, EOF, &[]).map_err(|e| format!("write to the peer: {e}"))?;
                    }
                    Ok(n) => {
                        self.bytes_out += n as u64;
                        write_frame(tls, DATA, &buf[..n]).map_err(|e| format!("write to the peer: {e}"))?;
                        last_sent = Instant::now();
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted || e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(format!("read from the local CRIU: {e}")),
                }
            }
            if let Some(fd) = control.filter(|fd| readable(*fd)) {
                let mut byte = [0u8; 1];
                // SAFETY: a valid fd and a one-byte buffer.
                let n = unsafe { libc::read(fd, byte.as_mut_ptr().cast(), 1) };
                match (n, byte[0]) {
                    (1, CONTROL_RESTORED) => {
                        self.restored = true;
                        write_frame(tls, RESTORED, &[]).map_err(|e| format!("write to the peer: {e}"))?;
                    }
                    (1, CONTROL_FAILED) => return Err("the restore failed".into()),
                    // The driving runtime exited without a word: nothing more will come.
                    _ => control = None,
                }
            }
        }
        Ok(())
    }

    /// Parses and applies the whole frames of the plaintext rustls holds.
    fn drain_plaintext<C, S>(
        &mut self,
        tls: &mut StreamOwned<C, TcpStream>,
        local: &mut TcpStream,
    ) -> Result<(), String>
    where
        C: DerefMut + Deref<Target = ConnectionCommon<S>>,
        S: SideData,
    {
        let mut chunk = [0u8; 64 << 10];
        loop {
            match tls.conn.reader().read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => self.inbound.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("TLS: {e}")),
            }
        }
        let mut at = 0;
        while self.inbound.len() - at >= 5 {
            let tag = self.inbound[at];
            let len = u32::from_be_bytes([
                self.inbound[at + 1],
                self.inbound[at + 2],
                self.inbound[at + 3],
                self.inbound[at + 4],
            ]);
            if len > MAX_FRAME {
                return Err(format!("a relay frame of {len} bytes"));
            }
            let end = at + 5 + len as usize;
            if self.inbound.len() < end {
                break;
            }
            let payload = &self.inbound[at + 5..end];
            match tag {
                DATA if self.local_done && self.peer_done => {}
                DATA => {
                    self.bytes_in += payload.len() as u64;
                    local.write_all(payload).map_err(|e| format!("write to the local CRIU: {e}"))?;
                }
                RESTORED => self.restored = true,
                PING => {}
                FAILED => return Err(format!("the peer gave up: {}", String::from_utf8_lossy(payload))),
                EOF => {
                    self.peer_done = true;
                    let _ = local.shutdown(Shutdown::Write);
                }
                other => return Err(format!("relay frame tag {other}")),
            }
            at = end;
        }
        self.inbound.drain(..at);
        Ok(())
    }
}

fn write_frame<C, S>(tls: &mut StreamOwned<C, TcpStream>, tag: u8, payload: &[u8]) -> io::Result<()>
where
    C: DerefMut + Deref<Target = ConnectionCommon<S>>,
    S: SideData,
{
    let mut header = [0u8; 5];
    header[0] = tag;
    header[1..].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    tls.write_all(&header)?;
    tls.write_all(payload)?;
    tls.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    use rustls::{ClientConnection, ServerConnection};

    use crate::transfer::tls::{client_config, server_config, server_name};

    /// A TLS pair over loopback: (client stream, server stream).
    fn tls_pair() -> (StreamOwned<ClientConnection, TcpStream>, StreamOwned<ServerConnection, TcpStream>) {
        let cert = rcgen::generate_simple_self_signed(vec!["vimigrate-transfer".into()]).unwrap();
        let (cert_der, key_der) = (cert.cert.der().to_vec(), cert.key_pair.serialize_der());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let conn = ServerConnection::new(server_config(cert_der, key_der).unwrap()).unwrap();
            let mut stream = StreamOwned::new(conn, tcp);
            while stream.conn.is_handshaking() {
                stream.conn.complete_io(&mut stream.sock).unwrap();
            }
            stream
        });
        let tcp = TcpStream::connect(address).unwrap();
        let conn = ClientConnection::new(client_config(cert.cert.der().to_vec()).unwrap(), server_name()).unwrap();
        let mut client = StreamOwned::new(conn, tcp);
        while client.conn.is_handshaking() {
            client.conn.complete_io(&mut client.sock).unwrap();
        }
        (client, server.join().unwrap())
    }

    /// A connected local TCP pair: (the relay's end, the "CRIU" end).
    fn local_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let criu = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (listener.accept().unwrap().0, criu)
    }

    #[test]
    fn pages_cross_both_ways_and_the_restore_is_signalled() {
        let (mut src_tls, mut dst_tls) = tls_pair();
        let (mut src_local, mut page_server) = local_pair();
        let (mut dst_local, mut lazy_daemon) = local_pair();
        let mut pipe = [0; 2];
        // SAFETY: a two-int array for pipe().
        assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
        let timeout = Duration::from_secs(5);
        let source = std::thread::spawn(move || run(&mut src_tls, &mut src_local, None, timeout));
        let destination = std::thread::spawn(move || run(&mut dst_tls, &mut dst_local, Some(pipe[0]), timeout));
        // SAFETY: the pipe's write end, one byte.
        assert_eq!(unsafe { libc::write(pipe[1], [CONTROL_RESTORED].as_ptr().cast(), 1) }, 1);
        // The lazy daemon asks, the page server answers with a megabyte of "pages".
        lazy_daemon.write_all(b"GET 1").unwrap();
        let mut ask = [0u8; 5];
        page_server.read_exact(&mut ask).unwrap();
        assert_eq!(&ask, b"GET 1");
        let pages: Vec<u8> = (0..(1 << 20)).map(|i| (i % 251) as u8).collect();
        let sent = pages.clone();
        let server = std::thread::spawn(move || {
            page_server.write_all(&sent).unwrap();
            page_server.shutdown(Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            page_server.read_to_end(&mut rest).unwrap();
            rest
        });
        let mut got = vec![0u8; pages.len()];
        lazy_daemon.read_exact(&mut got).unwrap();
        assert_eq!(got, pages);
        lazy_daemon.shutdown(Shutdown::Write).unwrap();
        assert!(server.join().unwrap().is_empty());
        let (src_end, dst_end) = (source.join().unwrap(), destination.join().unwrap());
        assert!(src_end.complete && dst_end.complete, "{src_end:?} {dst_end:?}");
        assert!(src_end.restored, "the source heard of the restore: {src_end:?}");
        assert_eq!((src_end.bytes_out, src_end.bytes_in), (1 << 20, 5));
        assert_eq!((dst_end.bytes_out, dst_end.bytes_in), (5, 1 << 20));
    }

    #[test]
    fn a_peer_that_goes_away_fails_the_relay_before_the_restore() {
        let (mut src_tls, dst_tls) = tls_pair();
        let (mut src_local, _page_server) = local_pair();
        let source = std::thread::spawn(move || run(&mut src_tls, &mut src_local, None, Duration::from_secs(5)));
        drop(dst_tls);
        let end = source.join().unwrap();
        assert!(!end.complete && !end.restored, "{end:?}");
        assert!(end.failure.as_deref().unwrap_or_default().contains("closed"), "{end:?}");
    }
}
