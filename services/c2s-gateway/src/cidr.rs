//! Address ranges in configuration (`127.0.0.0/8`, `::1`, `10.1.2.3`): which sources are
//! trusted load balancers (`proxy_protocol_from`) and which have relaxed throttles
//! (`throttle_relaxed_for`). Given as a TOML list or, from the environment, comma-separated.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One range: an address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => mask_eq(&net.octets(), &ip.octets(), self.prefix),
            (IpAddr::V6(net), IpAddr::V6(ip)) => mask_eq(&net.octets(), &ip.octets(), self.prefix),
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`, what a dual-stack socket reports) as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn mask_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    if a[..full] != b[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    a[full] & mask == b[full] & mask
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{s}` is not an address or address/prefix"))?;
        let addr = canonical(addr);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: the prefix must be 0 to {max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A list of ranges; empty matches nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CidrList(pub Vec<Cidr>);

impl CidrList {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Loopback, IPv4 and IPv6: what the local stack relaxes.
    pub fn loopback() -> CidrList {
        CidrList(vec![
            Cidr {
                addr: IpAddr::from([127, 0, 0, 0]),
                prefix: 8,
            },
            Cidr {
                addr: IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
                prefix: 128,
            },
        ])
    }
}

impl FromStr for CidrList {
    type Err = String;

    /// Comma-separated; an empty string is the empty list.
    fn from_str(s: &str) -> Result<CidrList, String> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(Cidr::from_str)
            .collect::<Result<Vec<_>, _>>()
            .map(CidrList)
    }
}

impl Serialize for CidrList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(ToString::to_string))
    }
}

impl<'de> Deserialize<'de> for CidrList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<CidrList, D::Error> {
        list_text(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// A list setting as comma-separated text: a TOML array, or one string (an environment
/// variable).
pub(crate) fn list_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Given::deserialize(d)? {
        Given::One(s) => s,
        Given::Many(v) => v.join(","),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_match_what_they_cover() {
        let l: CidrList = "10.0.0.0/8, 192.168.1.7, 2001:db8::/32".parse().unwrap();
        assert!(l.contains(ip("10.200.3.4")));
        assert!(!l.contains(ip("11.0.0.1")));
        assert!(l.contains(ip("192.168.1.7")));
        assert!(!l.contains(ip("192.168.1.8")));
        assert!(l.contains(ip("2001:db8:1::5")));
        assert!(!l.contains(ip("2001:db9::5")));
        assert!(l.contains(ip("::ffff:10.1.1.1")), "mapped IPv4 is IPv4");
        let odd: CidrList = "172.16.0.0/12".parse().unwrap();
        assert!(odd.contains(ip("172.31.255.255")));
        assert!(!odd.contains(ip("172.32.0.0")));
        assert!(CidrList::loopback().contains(ip("127.1.2.3")));
        assert!(CidrList::loopback().contains(ip("::1")));
        assert!(!CidrList::default().contains(ip("127.0.0.1")));
    }

    #[test]
    fn bad_ranges_are_refused() {
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "example.com",
            "10.0.0.0/",
            "1.2.3.4/x",
        ] {
            assert!(bad.parse::<CidrList>().is_err(), "{bad}");
        }
        assert!("".parse::<CidrList>().unwrap().is_empty());
    }

    #[test]
    fn lists_come_as_toml_arrays_or_comma_separated_text() {
        let l: CidrList = serde_json::from_str(r#"["127.0.0.1", "::1"]"#).unwrap();
        assert_eq!(l.0.len(), 2);
        let l: CidrList = serde_json::from_str(r#""127.0.0.1,::1""#).unwrap();
        assert_eq!(l.0.len(), 2);
        let back = serde_json::to_string(&l).unwrap();
        assert_eq!(back, r#"["127.0.0.1/32","::1/128"]"#);
    }
}
