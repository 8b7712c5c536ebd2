//! Socket addresses the syscalls do not reveal (the local end, and the peer of an
//! `accept()` called without an address buffer), read from the process's own view of
//! /proc/PID/net/tcp{,6} by socket inode.

use std::collections::HashMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Both ends of a TCP socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SocketEnds {
    /// This process's end.
    pub(crate) local: SocketAddr,
    /// The peer.
    pub(crate) remote: SocketAddr,
}

/// The inode of the socket behind a file descriptor of another process.
pub(crate) fn socket_inode(tgid: u32, fd: i32) -> Option<u64> {
    let target = fs::read_link(format!("/proc/{tgid}/fd/{fd}")).ok()?;
    let text = target.to_str()?;
    text.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Every TCP socket in the network namespace of `tgid`, by inode.
pub(crate) fn tcp_sockets(tgid: u32) -> HashMap<u64, SocketEnds> {
    let mut sockets = HashMap::new();
    for file in ["tcp", "tcp6"] {
        if let Ok(table) = fs::read_to_string(format!("/proc/{tgid}/net/{file}")) {
            sockets.extend(table.lines().skip(1).filter_map(parse_line));
        }
    }
    sockets
}

/// The network namespace of a process, to share one table between its processes.
pub(crate) fn netns_of(tgid: u32) -> Option<String> {
    fs::read_link(format!("/proc/{tgid}/ns/net"))
        .ok()
        .and_then(|p| p.to_str().map(str::to_owned))
}

fn parse_line(line: &str) -> Option<(u64, SocketEnds)> {
    let mut fields = line.split_whitespace();
    let local = parse_endpoint(fields.nth(1)?)?;
    let remote = parse_endpoint(fields.next()?)?;
    // After rem_address: st, tx:rx, tr:when, retrnsmt, uid, timeout, inode.
    let inode = fields.nth(6)?.parse().ok()?;
    Some((inode, SocketEnds { local, remote }))
}

/// `0100007F:1F90` (IPv4) or 32 hex digits `:PORT` (IPv6): each 32-bit word is printed
/// as the kernel holds it in memory, so its bytes come back with `to_le_bytes`.
fn parse_endpoint(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(addr, 16).ok()?.to_le_bytes(),
        )),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                let word = u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&word.to_le_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The address as users expect to read it: IPv4-mapped IPv6 shown as IPv4.
pub(crate) fn display_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        IpAddr::V4(v4) => v4.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn parses_ipv4_and_ipv6_lines() {
        let v4 = "   0: 0100007F:1F90 0200007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 20 4 30 10 -1";
        let (inode, ends) = parse_line(v4).unwrap();
        assert_eq!(inode, 4242);
        assert_eq!(ends.local, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(ends.remote, "127.0.0.2:50000".parse().unwrap());

        let v6 = "   1: 00000000000000000000000001000000:1F90 0000000000000000FFFF00000100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 20 4 30 10 -1";
        let (inode, ends) = parse_line(v6).unwrap();
        assert_eq!(inode, 77);
        assert_eq!(ends.local, "[::1]:8080".parse().unwrap());
        assert_eq!(display_ip(ends.remote.ip()), "127.0.0.1");
    }

    #[test]
    fn own_socket_is_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
        let inode = socket_inode(std::process::id(), fd).unwrap();
        let sockets = tcp_sockets(std::process::id());
        assert_eq!(sockets[&inode].local, addr);
    }
}
