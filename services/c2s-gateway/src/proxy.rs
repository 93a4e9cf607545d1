//! The PROXY protocol (HAProxy's, versions 1 and 2) on the client listeners: a load balancer
//! in front of the gateways opens each connection with a header naming the real client, so
//! the throttles count clients rather than the balancer.
//!
//! Only sources listed in `proxy_protocol_from` may (and must) send a header; a header from
//! any other source, or a malformed one, closes the connection without a word (there is no
//! stream yet to carry an error). The parser, [`parse`], is a pure function over bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::config::CidrList;

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8] = b"PROXY ";
/// RFC-less but fixed by the spec: a v1 line is at most 107 bytes with its CRLF.
const V1_MAX: usize = 107;
/// The shortest v1 line, `PROXY UNKNOWN\r\n`.
const V1_MIN: usize = 15;
const V2_FIXED: usize = 16;
/// The most a v2 header may carry after its fixed part (addresses and TLVs). The spec allows
/// 65535; HAProxy sends far less, and this is read before anything is known of the peer.
pub const V2_MAX_PAYLOAD: usize = 1024;
/// How long a trusted proxy gets to send its header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What a header says about the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proxied {
    /// A client's connection relayed: its source and the address it connected to.
    Client {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// The proxy's own connection (a v2 LOCAL health check, v1 `UNKNOWN`, an address family
    /// the spec lets us ignore): the connection's own address stands.
    Local,
}

/// One step of parsing a header that arrives in pieces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// A complete header of this many bytes (what follows belongs to the client's stream).
    Done(Proxied, usize),
    /// At least this many more bytes are needed, all of them part of the header: reading
    /// exactly that many never consumes the client's own bytes.
    Need(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("not a PROXY protocol header")]
    NotProxy,
    #[error("malformed PROXY v1 line")]
    BadV1,
    #[error("PROXY v1 line longer than 107 bytes")]
    V1TooLong,
    #[error("unsupported PROXY v2 version or command")]
    BadV2Command,
    #[error("unsupported PROXY v2 address family or protocol")]
    BadV2Family,
    #[error("PROXY v2 header too long")]
    V2TooLong,
    #[error("PROXY v2 addresses shorter than their family needs")]
    V2Short,
}

/// Parses the start of a connection's bytes as a PROXY header (v1 or v2).
pub fn parse(buf: &[u8]) -> Result<Step, ProxyError> {
    if buf.is_empty() {
        return Ok(Step::Need(V1_MIN));
    }
    if buf[0] == b'P' {
        parse_v1(buf)
    } else if buf[0] == b'\r' {
        parse_v2(buf)
    } else {
        Err(ProxyError::NotProxy)
    }
}

/// Whether the first bytes a peer sent look like a PROXY header: refused from sources that
/// are not trusted proxies. No XMPP client starts with `P` or with `\r\n\r\n\0`.
pub fn looks_like_header(peeked: &[u8]) -> bool {
    let n = peeked.len().min(V2_SIGNATURE.len());
    peeked.first() == Some(&b'P') || (n >= 5 && peeked[..n] == V2_SIGNATURE[..n])
}

fn parse_v1(buf: &[u8]) -> Result<Step, ProxyError> {
    let n = buf.len().min(V1_PREFIX.len());
    if buf[..n] != V1_PREFIX[..n] {
        return Err(ProxyError::NotProxy);
    }
    if buf.len() < V1_MIN {
        return Ok(Step::Need(V1_MIN - buf.len()));
    }
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= V1_MAX {
            return Err(ProxyError::V1TooLong);
        }
        if buf[..buf.len() - 1].contains(&b'\r')
            || buf.iter().any(|b| !(0x20..0x7f).contains(b) && *b != b'\r')
        {
            return Err(ProxyError::BadV1);
        }
        return Ok(Step::Need(if buf.ends_with(b"\r") { 1 } else { 2 }));
    };
    if end + 2 > V1_MAX {
        return Err(ProxyError::V1TooLong);
    }
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| ProxyError::BadV1)?;
    let mut words = line.split(' ');
    words.next(); // "PROXY"
    let proxied = match words.next() {
        // The rest of an UNKNOWN line is ignored, as the spec says.
        Some("UNKNOWN") => Proxied::Local,
        Some(family @ ("TCP4" | "TCP6")) => {
            let fields: Vec<&str> = words.collect();
            let [src, dst, sport, dport] = fields[..] else {
                return Err(ProxyError::BadV1);
            };
            let (src, dst) = (v1_ip(src)?, v1_ip(dst)?);
            if (family == "TCP4") != (src.is_ipv4() && dst.is_ipv4())
                || src.is_ipv4() != dst.is_ipv4()
            {
                return Err(ProxyError::BadV1);
            }
            Proxied::Client {
                source: SocketAddr::new(src, v1_port(sport)?),
                destination: SocketAddr::new(dst, v1_port(dport)?),
            }
        }
        _ => return Err(ProxyError::BadV1),
    };
    Ok(Step::Done(proxied, end + 2))
}

fn v1_ip(s: &str) -> Result<IpAddr, ProxyError> {
    s.parse().map_err(|_| ProxyError::BadV1)
}

/// A port in decimal without leading zeros or sign, as the spec writes it.
fn v1_port(s: &str) -> Result<u16, ProxyError> {
    let digits_only = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || (s.len() > 1 && s.starts_with('0')) {
        return Err(ProxyError::BadV1);
    }
    s.parse().map_err(|_| ProxyError::BadV1)
}

fn parse_v2(buf: &[u8]) -> Result<Step, ProxyError> {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] != V2_SIGNATURE[..n] {
        return Err(ProxyError::NotProxy);
    }
    if buf.len() < V2_FIXED {
        return Ok(Step::Need(V2_FIXED - buf.len()));
    }
    let version_command = buf[12];
    if version_command >> 4 != 2 {
        return Err(ProxyError::BadV2Command);
    }
    let local = match version_command & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(ProxyError::BadV2Command),
    };
    let family_protocol = buf[13];
    let payload = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if payload > V2_MAX_PAYLOAD {
        return Err(ProxyError::V2TooLong);
    }
    let total = V2_FIXED + payload;
    if buf.len() < total {
        return Ok(Step::Need(total - buf.len()));
    }
    let addrs = &buf[V2_FIXED..total];
    let family = family_protocol >> 4;
    let protocol = family_protocol & 0x0f;
    // Family 0 unspecified, 1 IPv4, 2 IPv6, 3 unix; protocol 0 unspecified, 1 stream,
    // 2 datagram. Anything else is reserved.
    if family > 3 || protocol > 2 {
        return Err(ProxyError::BadV2Family);
    }
    if local {
        return Ok(Step::Done(Proxied::Local, total));
    }
    if protocol == 2 {
        // Datagrams have no place on a TCP listener.
        return Err(ProxyError::BadV2Family);
    }
    let proxied = match (family, protocol) {
        (1, 1) => {
            if addrs.len() < 12 {
                return Err(ProxyError::V2Short);
            }
            let ip = |i: usize| {
                IpAddr::V4(Ipv4Addr::new(
                    addrs[i],
                    addrs[i + 1],
                    addrs[i + 2],
                    addrs[i + 3],
                ))
            };
            Proxied::Client {
                source: SocketAddr::new(ip(0), port(addrs, 8)),
                destination: SocketAddr::new(ip(4), port(addrs, 10)),
            }
        }
        (2, 1) => {
            if addrs.len() < 36 {
                return Err(ProxyError::V2Short);
            }
            let ip = |i: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&addrs[i..i + 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            Proxied::Client {
                source: SocketAddr::new(ip(0), port(addrs, 32)),
                destination: SocketAddr::new(ip(16), port(addrs, 34)),
            }
        }
        // Unspecified family or protocol, or a unix socket: the spec lets a receiver use the
        // connection's own address.
        _ => Proxied::Local,
    };
    Ok(Step::Done(proxied, total))
}

fn port(addrs: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([addrs[at], addrs[at + 1]])
}

/// The client address of a new connection: the socket's peer, or, from a trusted proxy, the
/// source its header names (the header is consumed). `None`: close the connection (a header
/// from an untrusted source, a trusted proxy without a valid header, or a timeout).
pub async fn client_address(
    tcp: &mut TcpStream,
    peer: SocketAddr,
    trusted: &CidrList,
) -> Option<SocketAddr> {
    if trusted.contains(peer.ip()) {
        match tokio::time::timeout(HEADER_TIMEOUT, read_header(tcp)).await {
            Ok(Ok(Proxied::Client { source, .. })) => Some(source),
            Ok(Ok(Proxied::Local)) => Some(peer),
            Ok(Err(e)) => {
                tracing::info!(%peer, error = %e, "closing: bad PROXY header from a trusted proxy");
                None
            }
            Err(_) => {
                tracing::info!(%peer, "closing: no PROXY header from a trusted proxy in time");
                None
            }
        }
    } else {
        if trusted.is_empty() {
            return Some(peer);
        }
        let mut first = [0u8; V2_SIGNATURE.len()];
        let peeked = match tokio::time::timeout(HEADER_TIMEOUT, tcp.peek(&mut first)).await {
            Ok(Ok(n)) => n,
            // Nothing yet or an error: the stream reader will see the same.
            _ => return Some(peer),
        };
        if looks_like_header(&first[..peeked]) {
            tracing::info!(%peer, "closing: PROXY header from a source not in proxy_protocol_from");
            return None;
        }
        Some(peer)
    }
}

/// Reads exactly one header, never a byte of the client's stream after it.
async fn read_header(tcp: &mut TcpStream) -> std::io::Result<Proxied> {
    let mut buf = Vec::with_capacity(V1_MAX);
    loop {
        match parse(&buf) {
            Ok(Step::Done(proxied, _)) => return Ok(proxied),
            Ok(Step::Need(n)) => {
                let at = buf.len();
                buf.resize(at + n, 0);
                tcp.read_exact(&mut buf[at..]).await?;
            }
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        }
    }
}

/// A v2 PROXY header for a TCP client (what HAProxy's `send-proxy-v2` sends, without TLVs):
/// for tests and tools that stand in for a load balancer.
pub fn v2_header(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x21);
    match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        (s, d) => {
            let v6 = |a: SocketAddr| match a.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
    }
    out
}

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;
