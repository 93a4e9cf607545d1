use super::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Feeds `bytes` to the parser the way the reader does (exactly what it asks for) and returns
/// the outcome and how many bytes it took.
fn drive(bytes: &[u8]) -> Result<(Proxied, usize), ProxyError> {
    let mut have = 0;
    loop {
        match parse(&bytes[..have])? {
            Step::Done(p, n) => return Ok((p, n)),
            Step::Need(n) => {
                assert!(n > 0);
                if have + n > bytes.len() {
                    return Err(ProxyError::NotProxy);
                }
                have += n;
            }
        }
    }
}

#[test]
fn v1_tcp4_and_tcp6_lines_name_the_client() {
    let line = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 5222\r\n<stream";
    let (p, n) = drive(line).unwrap();
    assert_eq!(
        n,
        line.len() - b"<stream".len(),
        "the client's bytes are left alone"
    );
    assert_eq!(
        p,
        Proxied::Client {
            source: addr("192.0.2.7:56324"),
            destination: addr("198.51.100.1:5222"),
        }
    );
    let (p, _) = drive(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n").unwrap();
    assert_eq!(
        p,
        Proxied::Client {
            source: addr("[2001:db8::1]:1"),
            destination: addr("[2001:db8::2]:65535"),
        }
    );
    assert_eq!(drive(b"PROXY UNKNOWN\r\n").unwrap(), (Proxied::Local, 15));
    assert_eq!(
        drive(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n").unwrap().0,
        Proxied::Local
    );
}

#[test]
fn v2_headers_name_the_client_and_local_means_the_proxy_itself() {
    let h = v2_header(addr("203.0.113.9:40000"), addr("10.0.0.2:5222"));
    let mut with_stream = h.clone();
    with_stream.extend_from_slice(b"<?xml");
    let (p, n) = drive(&with_stream).unwrap();
    assert_eq!(n, h.len());
    assert_eq!(
        p,
        Proxied::Client {
            source: addr("203.0.113.9:40000"),
            destination: addr("10.0.0.2:5222"),
        }
    );
    let h6 = v2_header(addr("[2001:db8::9]:1"), addr("[2001:db8::1]:5222"));
    assert_eq!(drive(&h6).unwrap().1, 16 + 36);
    // LOCAL (a health check), with addresses or without.
    let mut local = V2_SIGNATURE.to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0, 0]);
    assert_eq!(drive(&local).unwrap(), (Proxied::Local, 16));
    // TLVs after the addresses are skipped.
    let mut tlv = h.clone();
    tlv[15] += 5;
    tlv.extend_from_slice(&[0x04, 0x00, 0x02, b'i', b'd']);
    assert_eq!(drive(&tlv).unwrap().1, h.len() + 5);
    // A unix-socket client: the connection's address stands.
    let mut unix = V2_SIGNATURE.to_vec();
    unix.extend_from_slice(&[0x21, 0x31, 0, 216]);
    unix.extend_from_slice(&[0u8; 216]);
    assert_eq!(drive(&unix).unwrap().0, Proxied::Local);
}

#[test]
fn the_parser_asks_only_for_header_bytes() {
    // The first request is 15 bytes: no header is shorter, so it never reads into a stream.
    assert_eq!(parse(b"").unwrap(), Step::Need(15));
    assert_eq!(parse(&V2_SIGNATURE[..3]).unwrap(), Step::Need(13));
    assert_eq!(parse(b"PROXY TCP4 1.2.3.4").unwrap(), Step::Need(2));
    assert_eq!(
        parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r").unwrap(),
        Step::Need(1)
    );
    let h = v2_header(addr("1.2.3.4:1"), addr("5.6.7.8:2"));
    assert_eq!(parse(&h[..16]).unwrap(), Step::Need(12));
}

#[test]
fn invalid_headers_are_refused() {
    let mut long = b"PROXY TCP4 ".to_vec();
    long.resize(120, b'1');
    let mut v2_version1 = v2_header(addr("1.2.3.4:1"), addr("5.6.7.8:2"));
    v2_version1[12] = 0x11;
    let mut v2_command = v2_header(addr("1.2.3.4:1"), addr("5.6.7.8:2"));
    v2_command[12] = 0x22;
    let mut v2_udp = v2_header(addr("1.2.3.4:1"), addr("5.6.7.8:2"));
    v2_udp[13] = 0x12;
    let mut v2_family = v2_header(addr("1.2.3.4:1"), addr("5.6.7.8:2"));
    v2_family[13] = 0x41;
    let mut v2_short = v2_header(addr("1.2.3.4:1"), addr("5.6.7.8:2"));
    v2_short[15] = 4;
    v2_short.truncate(20);
    let mut v2_huge = V2_SIGNATURE.to_vec();
    v2_huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
    let mut bad_signature = V2_SIGNATURE.to_vec();
    bad_signature[11] = b'X';
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("xml", b"<?xml version='1.0'?><stream:stream>".to_vec()),
        ("tls", vec![0x16, 0x03, 0x01, 0x00, 0xa5]),
        ("lowercase", b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec()),
        ("no space", b"PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec()),
        ("family", b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n".to_vec()),
        ("v4 as v6", b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n".to_vec()),
        ("v6 as v4", b"PROXY TCP4 ::1 ::2 1 2\r\n".to_vec()),
        ("mixed", b"PROXY TCP6 ::1 5.6.7.8 1 2\r\n".to_vec()),
        ("bad ip", b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n".to_vec()),
        (
            "port range",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n".to_vec(),
        ),
        (
            "port zero pad",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n".to_vec(),
        ),
        ("port sign", b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n".to_vec()),
        ("missing port", b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n".to_vec()),
        (
            "extra field",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n".to_vec(),
        ),
        (
            "double space",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
        ),
        ("bare cr", b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n".to_vec()),
        ("nul", b"PROXY TCP4 1.2.3.4\x005.6.7.8 1 2\r\n".to_vec()),
        (
            "utf8",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 2é\r\n".as_bytes().to_vec(),
        ),
        ("too long", long),
        ("v2 signature", bad_signature),
        ("v2 version", v2_version1),
        ("v2 command", v2_command),
        ("v2 udp", v2_udp),
        ("v2 family", v2_family),
        ("v2 short", v2_short),
        ("v2 huge", v2_huge),
    ];
    for (name, bytes) in cases {
        assert!(drive(&bytes).is_err(), "{name}: {bytes:?} accepted");
    }
}

#[test]
fn arbitrary_prefixes_never_panic_and_never_ask_for_nothing() {
    // A cheap stand-in for the fuzzer: every prefix of valid and mangled headers.
    let v1 = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n".to_vec();
    let v2 = v2_header(addr("[2001:db8::9]:1"), addr("[2001:db8::1]:5222"));
    for base in [v1, v2] {
        for i in 0..base.len() {
            for flip in [0u8, 0x01, 0x80, 0xff] {
                let mut b = base.clone();
                b[i] ^= flip;
                for end in 0..=b.len() {
                    if let Ok(Step::Need(n)) = parse(&b[..end]) {
                        assert!(n > 0);
                    }
                }
            }
        }
    }
}

#[test]
fn only_proxy_looking_openings_are_refused_from_untrusted_sources() {
    assert!(looks_like_header(b"PROXY TCP4"));
    assert!(looks_like_header(b"P"));
    assert!(looks_like_header(&V2_SIGNATURE));
    assert!(looks_like_header(&V2_SIGNATURE[..5]));
    assert!(!looks_like_header(b"<?xml version"));
    assert!(!looks_like_header(&[0x16, 0x03, 0x01]));
    assert!(!looks_like_header(b"\r\n<stream"));
    assert!(!looks_like_header(b""));
}
