//! The addresses a restore needs, held in the container's network namespace while `runc
//! restore` runs, when the namespace does not have them yet.
//!
//! CRIU binds every restored socket to its old address and reconnects established TCP
//! connections in repair mode, which needs the address to be local and a route to the peer
//! (vimigrate-protocol's `criu_sockets` says which addresses from the dump's `files.img`). Up to
//! Docker 27 the prepared namespace has them: Docker's hook moved the container's interface in
//! before the freeze. From Docker 28 on the namespace is empty at the restore (the daemon
//! wires it once the task exists, after `create` returned), so the restore would fail with
//! "Can't bind inet socket back: Cannot assign requested address". The missing addresses are
//! added to the loopback interface (as host /32 or /128 addresses, IPv6 without duplicate
//! detection, so they are usable at once) with a default route through it, and removed right
//! after the restore, before `create` returns: Docker then adds the interface with the same
//! addresses and routes as for any container, and the restored connections carry on over it
//! (the kernel looks the route up again at their next transmission).
//!
//! Why loopback: it exists in every namespace, and a dummy interface needs a kernel module that
//! provider kernels do not all have (this lab's host kernel has none). Packets a restored
//! socket sends meanwhile go to loopback and are dropped there (their destination is not
//! local); TCP retransmits them once the real interface is up.
//!
//! Everything is done over rtnetlink from a thread that joined the namespace: no `ip` binary
//! is needed on the host, and it costs well under a millisecond inside the freeze.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use vimigrate_protocol::SocketAddresses;

use crate::error::RuntimeError;

const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_F_NODAD: u8 = 0x02;
const RTA_OIF: u16 = 4;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_NOWHERE: u8 = 255;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;

/// What was added to a namespace for a restore, to be taken away after it.
#[derive(Debug)]
pub struct HeldAddresses {
    netns: File,
    loopback: u32,
    addresses: Vec<IpAddr>,
    /// Address families (`AF_INET`, `AF_INET6`) whose default route through loopback was added.
    routes: Vec<u8>,
}

impl HeldAddresses {
    /// The addresses added.
    pub fn addresses(&self) -> &[IpAddr] {
        &self.addresses
    }

    /// Removes what was added, before Docker wires the namespace (its default route would
    /// collide with the one held here). The restored container runs either way; an error is
    /// for the log.
    pub fn release(mut self) -> Result<(), RuntimeError> {
        self.undo()
    }

    fn undo(&mut self) -> Result<(), RuntimeError> {
        let (addresses, routes) = (std::mem::take(&mut self.addresses), std::mem::take(&mut self.routes));
        if addresses.is_empty() && routes.is_empty() {
            return Ok(());
        }
        let loopback = self.loopback;
        in_namespace(&self.netns, "remove the restore's addresses", move |link| {
            for family in &routes {
                link.route(RTM_DELROUTE, 0, *family, loopback)?;
            }
            for address in &addresses {
                link.address(RTM_DELADDR, 0, *address, loopback)?;
            }
            Ok(())
        })
    }
}

impl Drop for HeldAddresses {
    fn drop(&mut self) {
        // After a failed restore: a rollback may restore into this same namespace, and Docker
        // wire it; leave it as it was.
        let _ = self.undo();
    }
}

/// Makes the namespace at `netns` ready for sockets that need `needed`: loopback up when a
/// socket is bound to an address at all, and the bound addresses the namespace lacks held on
/// loopback with a default route. `None` when nothing had to be held.
pub fn hold(netns: &Path, needed: &SocketAddresses) -> Result<Option<HeldAddresses>, RuntimeError> {
    if needed.bound.is_empty() && !needed.loopback {
        return Ok(None);
    }
    let ns = File::open(netns).map_err(RuntimeError::io("network", format!("open {}", netns.display())))?;
    let wanted = needed.bound.clone();
    let (loopback, addresses, routes, outcome) = in_namespace(&ns, "hold the restore's addresses", move |link| {
        let loopback = link.loopback_up()?;
        let missing: Vec<IpAddr> = wanted.difference(&local_addresses()).copied().collect();
        let (mut addresses, mut routes) = (Vec::new(), Vec::new());
        let outcome = add_all(link, loopback, &missing, &mut addresses, &mut routes);
        Ok((loopback, addresses, routes, outcome))
    })?;
    let held = HeldAddresses { netns: ns, loopback, addresses, routes };
    // On an error, dropping `held` takes back what was added before it.
    outcome.map_err(io_error("hold the restore's addresses"))?;
    Ok((!held.addresses.is_empty() || !held.routes.is_empty()).then_some(held))
}

/// Adds `missing` to loopback and a default route for each of their families, recording each
/// step done so that it can be undone.
fn add_all(
    link: &mut Rtnetlink,
    loopback: u32,
    missing: &[IpAddr],
    addresses: &mut Vec<IpAddr>,
    routes: &mut Vec<u8>,
) -> io::Result<()> {
    for address in missing {
        link.address(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, *address, loopback)?;
        addresses.push(*address);
    }
    let families: BTreeSet<u8> = missing.iter().map(family_of).collect();
    for family in families {
        match link.route(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, family, loopback) {
            Ok(()) => routes.push(family),
            // The namespace has a default route of its own: the peers are reachable.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn io_error(context: &'static str) -> impl Fn(io::Error) -> RuntimeError {
    move |e| RuntimeError::Io { step: "network", context: context.to_string(), source: e }
}

fn family_of(address: &IpAddr) -> u8 {
    match address {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

/// Runs `work` on a thread that joined the namespace `ns` (setns applies to one thread only),
/// with an rtnetlink socket opened there.
fn in_namespace<T: Send + 'static>(
    ns: &File,
    context: &'static str,
    work: impl FnOnce(&mut Rtnetlink) -> io::Result<T> + Send + 'static,
) -> Result<T, RuntimeError> {
    let ns = ns.try_clone().map_err(io_error(context))?;
    std::thread::spawn(move || {
        // SAFETY: `ns` is an open network namespace file.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut link = Rtnetlink::open()?;
        work(&mut link)
    })
    .join()
    .map_err(|_| io::Error::other("the namespace's thread panicked"))
    .and_then(|r| r)
    .map_err(io_error(context))
}

/// The addresses of this thread's network namespace.
fn local_addresses() -> BTreeSet<IpAddr> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return BTreeSet::new();
    }
    let mut found = BTreeSet::new();
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: `cursor` walks the list getifaddrs returned.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        if entry.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: the family tells which sockaddr it is.
        match i32::from(unsafe { (*entry.ifa_addr).sa_family }) {
            libc::AF_INET => {
                // SAFETY: AF_INET entries carry a sockaddr_in.
                let sin = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in) };
                found.insert(IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes()));
            }
            libc::AF_INET6 => {
                // SAFETY: AF_INET6 entries carry a sockaddr_in6.
                let sin6 = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in6) };
                found.insert(IpAddr::from(sin6.sin6_addr.s6_addr));
            }
            _ => {}
        }
    }
    // SAFETY: the list from getifaddrs, freed once.
    unsafe { libc::freeifaddrs(head) };
    found
}

/// A NETLINK_ROUTE socket speaking just the requests needed here, each acknowledged.
struct Rtnetlink {
    fd: OwnedFd,
    seq: u32,
}

impl Rtnetlink {
    fn open() -> io::Result<Rtnetlink> {
        // SAFETY: a new socket, owned by the OwnedFd below.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is new and owned here.
        Ok(Rtnetlink { fd: unsafe { OwnedFd::from_raw_fd(fd) }, seq: 0 })
    }

    /// Brings loopback up and returns its index.
    fn loopback_up(&mut self) -> io::Result<u32> {
        // SAFETY: a NUL-terminated name.
        let index = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
        if index == 0 {
            return Err(io::Error::last_os_error());
        }
        let mut body = Vec::with_capacity(16);
        body.extend_from_slice(&[libc::AF_UNSPEC as u8, 0]);
        body.extend_from_slice(&0u16.to_ne_bytes());
        body.extend_from_slice(&(index as i32).to_ne_bytes());
        body.extend_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
        body.extend_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
        self.request(RTM_NEWLINK, 0, &body)?;
        Ok(index)
    }

    /// Adds or deletes `address` as a host address of interface `index`.
    fn address(&mut self, kind: u16, flags: u16, address: IpAddr, index: u32) -> io::Result<()> {
        let (prefix, octets, nodad): (u8, Vec<u8>, u8) = match address {
            IpAddr::V4(v4) => (32, v4.octets().to_vec(), 0),
            IpAddr::V6(v6) => (128, v6.octets().to_vec(), IFA_F_NODAD),
        };
        let mut body = vec![family_of(&address), prefix, nodad, RT_SCOPE_UNIVERSE];
        body.extend_from_slice(&index.to_ne_bytes());
        attribute(&mut body, IFA_LOCAL, &octets);
        attribute(&mut body, IFA_ADDRESS, &octets);
        self.request(kind, flags, &body)
    }

    /// Adds or deletes the default route of `family` through interface `index`.
    fn route(&mut self, kind: u16, flags: u16, family: u8, index: u32) -> io::Result<()> {
        // A deletion leaves protocol and type open and scope at RT_SCOPE_NOWHERE: any matches.
        let (protocol, scope, route_type) = match kind {
            RTM_DELROUTE => (0, RT_SCOPE_NOWHERE, 0),
            _ if family == libc::AF_INET as u8 => (RTPROT_BOOT, RT_SCOPE_LINK, RTN_UNICAST),
            _ => (RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST),
        };
        let mut body = vec![family, 0, 0, 0, RT_TABLE_MAIN, protocol, scope, route_type];
        body.extend_from_slice(&0u32.to_ne_bytes());
        attribute(&mut body, RTA_OIF, &index.to_ne_bytes());
        self.request(kind, flags, &body)
    }

    /// Sends one request and waits for its acknowledgement.
    fn request(&mut self, kind: u16, flags: u16, body: &[u8]) -> io::Result<()> {
        self.seq += 1;
        let len = 16 + body.len();
        let mut message = Vec::with_capacity(len);
        message.extend_from_slice(&(len as u32).to_ne_bytes());
        message.extend_from_slice(&kind.to_ne_bytes());
        message.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK | flags).to_ne_bytes());
        message.extend_from_slice(&self.seq.to_ne_bytes());
        message.extend_from_slice(&0u32.to_ne_bytes());
        message.extend_from_slice(body);
        // SAFETY: a valid socket and buffer; the kernel is the default destination.
        if unsafe { libc::send(self.fd.as_raw_fd(), message.as_ptr().cast(), message.len(), 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut reply = [0u8; 8192];
        loop {
            // SAFETY: a valid socket and buffer of that size.
            let got = unsafe { libc::recv(self.fd.as_raw_fd(), reply.as_mut_ptr().cast(), reply.len(), 0) };
            if got < 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(errno) = acknowledgement(&reply[..got as usize], self.seq) {
                return if errno == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(-errno)) };
            }
        }
    }
}

/// The error code of the acknowledgement of request `seq` among the messages of `reply`.
fn acknowledgement(reply: &[u8], seq: u32) -> Option<i32> {
    let mut at = 0;
    while at + 16 <= reply.len() {
        let word = |o: usize| u32::from_ne_bytes(reply[at + o..at + o + 4].try_into().unwrap_or_default());
        let len = word(0) as usize;
        let kind = u16::from_ne_bytes([reply[at + 4], reply[at + 5]]);
        if kind == NLMSG_ERROR && word(8) == seq && at + 20 <= reply.len() {
            return Some(word(16) as i32);
        }
        if len < 16 {
            break;
        }
        at += (len + 3) & !3;
    }
    None
}

/// Appends an rtattr (length, type, payload, padded to four bytes).
fn attribute(body: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    body.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    body.extend_from_slice(&kind.to_ne_bytes());
    body.extend_from_slice(payload);
    body.resize((body.len() + 3) & !3, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A network namespace of its own, held by a thread until the returned sender is dropped.
    /// Needs CAP_SYS_ADMIN (the tests run as root, as the runtime does under dockerd).
    fn scratch_namespace() -> (std::path::PathBuf, std::sync::mpsc::Sender<()>) {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            // SAFETY: unshare affects this thread only.
            let made = unsafe { libc::unshare(libc::CLONE_NEWNET) } == 0;
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            let _ = ready_tx.send(made.then(|| format!("/proc/{}/task/{tid}/ns/net", std::process::id())));
            let _ = done_rx.recv();
        });
        let path = ready_rx.recv().unwrap().expect("unshare(CLONE_NEWNET) failed: these tests need root");
        (path.into(), done_tx)
    }

    fn addresses_in(netns: &Path) -> BTreeSet<IpAddr> {
        let ns = File::open(netns).unwrap();
        in_namespace(&ns, "list", |_| Ok(local_addresses())).unwrap()
    }

    /// A non-blocking connect from `local` to `peer` inside `netns`: `None` when it got under way
    /// (the address is local and the peer routed), else the error.
    fn connect_from(netns: &Path, local: &str, peer: &str) -> Option<i32> {
        let ns = File::open(netns).unwrap();
        let (local, peer): (std::net::SocketAddr, std::net::SocketAddr) =
            (format!("{local}:0").parse().unwrap(), peer.parse().unwrap());
        in_namespace(&ns, "connect", move |_| {
            // SAFETY: a new socket, closed below; the sockaddrs are built for their sizes.
            unsafe {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
                let sin = |a: &std::net::SocketAddr| {
                    let mut s: libc::sockaddr_in = std::mem::zeroed();
                    s.sin_family = libc::AF_INET as u16;
                    s.sin_port = a.port().to_be();
                    if let std::net::IpAddr::V4(v4) = a.ip() {
                        s.sin_addr.s_addr = u32::from_ne_bytes(v4.octets());
                    }
                    s
                };
                let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                let bound = libc::bind(fd, (&sin(&local) as *const libc::sockaddr_in).cast(), len);
                let outcome = if bound != 0 {
                    io::Error::last_os_error().raw_os_error()
                } else if libc::connect(fd, (&sin(&peer) as *const libc::sockaddr_in).cast(), len) != 0 {
                    let e = io::Error::last_os_error().raw_os_error();
                    (e != Some(libc::EINPROGRESS)).then_some(e).flatten()
                } else {
                    None
                };
                libc::close(fd);
                Ok(outcome)
            }
        })
        .unwrap()
    }

    #[test]
    fn missing_addresses_are_held_for_the_restore_and_released_after() {
        let (netns, _keep) = scratch_namespace();
        let needed = SocketAddresses {
            bound: ["10.77.0.5", "fd00:77::5"].iter().map(|a| a.parse().unwrap()).collect(),
            loopback: false,
        };
        // Without: bind refused (EADDRNOTAVAIL), or, in a namespace so empty that it has no
        // local table yet, the connect (ENETUNREACH), as CRIU's restore would be.
        let before = connect_from(&netns, "10.77.0.5", "10.77.0.99:80");
        assert!(matches!(before, Some(libc::EADDRNOTAVAIL | libc::ENETUNREACH)), "{before:?}");
        let held = hold(&netns, &needed).unwrap().expect("an empty namespace lacks both");
        assert_eq!(held.addresses().len(), 2);
        let present = addresses_in(&netns);
        assert!(needed.bound.is_subset(&present), "{present:?}");
        assert_eq!(connect_from(&netns, "10.77.0.5", "10.77.0.99:80"), None, "bound, and routed to the peer");
        held.release().unwrap();
        let after = addresses_in(&netns);
        assert!(needed.bound.is_disjoint(&after), "{after:?}");
        // Released means a second hold finds them missing again and the routes free.
        let again = hold(&netns, &needed).unwrap().expect("missing again");
        drop(again);
        assert!(needed.bound.is_disjoint(&addresses_in(&netns)));
    }

    #[test]
    fn addresses_the_namespace_has_are_not_held() {
        let (netns, _keep) = scratch_namespace();
        let needed =
            SocketAddresses { bound: ["10.77.0.6"].iter().map(|a| a.parse().unwrap()).collect(), loopback: true };
        let first = hold(&netns, &needed).unwrap().expect("missing at first");
        // The same addresses, now present (as Docker's hook would have put them before 28).
        assert!(hold(&netns, &needed).unwrap().is_none());
        drop(first);
        let only_loopback = SocketAddresses { bound: BTreeSet::new(), loopback: true };
        assert!(hold(&netns, &only_loopback).unwrap().is_none(), "loopback is brought up, nothing held");
        assert!(addresses_in(&netns).contains(&IpAddr::from([127, 0, 0, 1])), "loopback is up");
    }

    #[test]
    fn attributes_are_padded_to_four_bytes() {
        let mut body = Vec::new();
        attribute(&mut body, IFA_LOCAL, &[10, 0, 0, 1, 9]);
        assert_eq!(body.len(), 12);
        assert_eq!(&body[..4], &[9, 0, 2, 0]);
    }

    #[test]
    fn the_acknowledgement_of_the_request_is_found() {
        let mut reply = Vec::new();
        reply.extend_from_slice(&36u32.to_ne_bytes());
        reply.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        reply.extend_from_slice(&0u16.to_ne_bytes());
        reply.extend_from_slice(&7u32.to_ne_bytes());
        reply.extend_from_slice(&0u32.to_ne_bytes());
        reply.extend_from_slice(&(-libc::EEXIST).to_ne_bytes());
        reply.extend_from_slice(&[0u8; 16]);
        assert_eq!(acknowledgement(&reply, 7), Some(-libc::EEXIST));
        assert_eq!(acknowledgement(&reply, 8), None);
    }
}
