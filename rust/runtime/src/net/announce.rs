//! Gratuitous ARP from a restored container's interfaces, as hypervisors do after a live
//! migration.
//!
//! The destination container's published ports exist from the moment Docker started it, before
//! the freeze; clients probing it then leave the host's neighbour entry for the container's
//! address INCOMPLETE (nothing answered ARP yet). Once restored, the container would be reached
//! only when the kernel next retries that entry: measured here, 0.2 to 0.8 s of extra downtime.
//! Announcing every IPv4 address right after the restore resolves those entries at once.

use std::ffi::CStr;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

/// One address to announce.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Interface {
    index: i32,
    mac: [u8; 6],
    ipv4: [u8; 4],
}

/// An ARP frame announcing `ipv4` at `mac` (`reply`: an unsolicited reply, else a request for
/// the address itself; peers differ in which they honour, so both are sent).
fn garp_frame(mac: [u8; 6], ipv4: [u8; 4], reply: bool) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&(if reply { 2u16 } else { 1u16 }).to_be_bytes());
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ipv4);
    f[32..38].copy_from_slice(&if reply { [0xff; 6] } else { [0; 6] });
    f[38..42].copy_from_slice(&ipv4);
    f
}

/// The IPv4 addresses of this thread's network namespace with their interfaces' MACs.
fn interfaces() -> Vec<Interface> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Vec::new();
    }
    let mut links: Vec<(String, i32, [u8; 6])> = Vec::new();
    let mut addrs: Vec<(String, [u8; 4])> = Vec::new();
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: `cursor` walks the list getifaddrs returned; every pointer is checked.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        if entry.ifa_addr.is_null() || entry.ifa_name.is_null() || entry.ifa_flags & libc::IFF_LOOPBACK as u32 != 0 {
            continue;
        }
        // SAFETY: a NUL-terminated name owned by the list.
        let name = unsafe { CStr::from_ptr(entry.ifa_name) }.to_string_lossy().into_owned();
        // SAFETY: the family tells which sockaddr it is.
        match i32::from(unsafe { (*entry.ifa_addr).sa_family }) {
            libc::AF_PACKET => {
                // SAFETY: AF_PACKET entries carry a sockaddr_ll.
                let ll = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_ll) };
                if ll.sll_halen == 6 {
                    let mut mac = [0u8; 6];
                    mac.copy_from_slice(&ll.sll_addr[..6]);
                    links.push((name, ll.sll_ifindex, mac));
                }
            }
            libc::AF_INET => {
                // SAFETY: AF_INET entries carry a sockaddr_in.
                let sin = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in) };
                addrs.push((name, sin.sin_addr.s_addr.to_ne_bytes()));
            }
            _ => {}
        }
    }
    // SAFETY: the list from getifaddrs, freed once.
    unsafe { libc::freeifaddrs(head) };
    addrs
        .into_iter()
        .filter_map(|(name, ipv4)| {
            links.iter().find(|(n, _, _)| *n == name).map(|(_, index, mac)| Interface {
                index: *index,
                mac: *mac,
                ipv4,
            })
        })
        .collect()
}

fn send(interface: &Interface) -> std::io::Result<()> {
    let protocol = (libc::ETH_P_ARP as u16).to_be();
    // SAFETY: a raw packet socket, closed by File's drop.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(protocol)) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is new and owned here.
    let socket = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: zeroed sockaddr_ll is valid; fields set below.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = protocol;
    to.sll_ifindex = interface.index;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    for reply in [false, true] {
        let frame = garp_frame(interface.mac, interface.ipv4, reply);
        // SAFETY: valid socket, buffer and address of the right size.
        let sent = unsafe {
            libc::sendto(
                socket.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&to as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Announces the addresses of the network namespace at `netns` (the container's, from its
/// spec). Best effort: a failure only costs the time the neighbours take to ask again.
pub fn announce_addresses(netns: &Path) -> usize {
    let Ok(ns) = File::open(netns) else { return 0 };
    // setns applies to the calling thread only: a thread of its own enters the namespace.
    std::thread::spawn(move || {
        // SAFETY: `ns` is an open namespace file.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return 0;
        }
        interfaces().iter().filter(|i| send(i).is_ok()).count()
    })
    .join()
    .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_announce_the_address_at_the_mac() {
        let mac = [0x02, 0x42, 0xac, 0x1f, 0x02, 0x02];
        let request = garp_frame(mac, [172, 31, 2, 2], false);
        assert_eq!(&request[12..14], &[0x08, 0x06]);
        assert_eq!(&request[20..22], &[0, 1]);
        assert_eq!(&request[22..28], &mac);
        assert_eq!(&request[28..32], &[172, 31, 2, 2]);
        assert_eq!(&request[38..42], &[172, 31, 2, 2], "a request for its own address");
        let reply = garp_frame(mac, [172, 31, 2, 2], true);
        assert_eq!(&reply[20..22], &[0, 2]);
    }
}
