//! Free loopback ports for nodes started by tests.

use std::net::TcpListener;

use anyhow::Context as _;

/// One free TCP port on 127.0.0.1. Another process may take it before we use it; the window
/// is short and the kernel hands out ephemeral ports in a spread-out order.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(free_ports(1)?[0])
}

/// Ports this process has handed out: never handed out again. Two configurations made one
/// after the other (two broker nodes of one test) each found their ports free, but the
/// kernel may offer a port again once its probe closed it: the second node then got the
/// first's distribution port and did not start (`dist_port_already_used`).
static HANDED: parking_lot::Mutex<Vec<u16>> = parking_lot::Mutex::new(Vec::new());

/// `n` distinct free TCP ports on 127.0.0.1 (all held open at once, so they differ), none
/// handed out before by this process.
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let mut handed = HANDED.lock();
    // Held open until the end, the ones refused too: the kernel then offers others.
    let mut held = Vec::new();
    let mut ports = Vec::with_capacity(n);
    while ports.len() < n {
        anyhow::ensure!(held.len() < n + 1000, "no free port on 127.0.0.1");
        let l = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
        let port = l.local_addr().context("local_addr")?.port();
        if !handed.contains(&port) {
            ports.push(port);
        }
        held.push(l);
    }
    handed.extend(&ports);
    Ok(ports)
}

/// True when something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        std::time::Duration::from_millis(300),
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_handed_out_once() {
        let first = free_ports(3).unwrap();
        let mut all = first.clone();
        for _ in 0..50 {
            all.extend(free_ports(3).unwrap());
        }
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "a port was handed out twice");
    }
}
