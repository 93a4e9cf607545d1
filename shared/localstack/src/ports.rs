//! Free loopback ports for nodes started by tests.

use std::net::TcpListener;

use anyhow::Context as _;

/// One free TCP port on 127.0.0.1. Another process may take it before we use it: see
/// [`free_ports`] for why the window is small.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(free_ports(1)?[0])
}

/// Where ports are picked: below the kernel's ephemeral range. A port the kernel hands out
/// for `bind(0)` is one it also gives the next outgoing connection once the probe closed it,
/// and under a test run's thousands of connections one did (a broker's management listener
/// then failed with `eaddrinuse`). Ports below that range are only ever taken by a listener.
const PICK_FROM: u16 = 20_000;

/// The lowest port of the kernel's ephemeral range (`ip_local_port_range`), 32768 if unknown.
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A port to try: spread at random over `PICK_FROM..below`, so that test processes picking at
/// the same time seldom try the same one (each checks it is free before taking it).
fn candidate(below: u16) -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let span = u64::from(below - PICK_FROM);
    PICK_FROM + u16::try_from(h.finish() % span).unwrap_or(0)
}

/// Ports this process has handed out: never handed out again. Two configurations made one
/// after the other (two broker nodes of one test) each found their ports free, but the
/// kernel may offer a port again once its probe closed it: the second node then got the
/// first's distribution port and did not start (`dist_port_already_used`).
static HANDED: parking_lot::Mutex<Vec<u16>> = parking_lot::Mutex::new(Vec::new());

/// `n` distinct free TCP ports on 127.0.0.1 below the kernel's ephemeral range (all held open
/// at once, so they differ), none handed out before by this process.
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let mut handed = HANDED.lock();
    // Held open until the end, the ones refused too: the kernel then offers others.
    let mut held = Vec::new();
    let mut ports = Vec::with_capacity(n);
    let below = ephemeral_low();
    let mut tries = 0;
    while ports.len() < n {
        anyhow::ensure!(tries < n + 1000, "no free port on 127.0.0.1");
        tries += 1;
        // Below the ephemeral range when it leaves room, else wherever the kernel says.
        let l = if below > PICK_FROM + 1000 {
            match TcpListener::bind(("127.0.0.1", candidate(below))) {
                Ok(l) => l,
                Err(_) => continue,
            }
        } else {
            TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?
        };
        let port = l.local_addr().context("local_addr")?.port();
        if !handed.contains(&port) && !ports.contains(&port) {
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
        let below = ephemeral_low();
        if below > PICK_FROM + 1000 {
            assert!(
                all.iter().all(|p| (PICK_FROM..below).contains(p)),
                "ports outside {PICK_FROM}..{below}: {all:?}"
            );
        }
    }
}
