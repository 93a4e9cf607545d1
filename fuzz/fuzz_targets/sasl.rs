//! The SASL messages a client sends before it is authenticated: SCRAM client-first and
//! client-final (both hash functions), and PLAIN. Input: one selector byte, then the first
//! message, a 0xFF byte (never in UTF-8), and the second.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use meerkat_auth::{parse_plain, Credentials, ScramAlg, ScramServer};

fn credentials() -> &'static Credentials {
    static CREDENTIALS: OnceLock<Credentials> = OnceLock::new();
    // Few iterations: the fuzzer is after the parsers, not PBKDF2.
    CREDENTIALS.get_or_init(|| Credentials::derive("pencil", 1).expect("credentials"))
}

fuzz_target!(|data: &[u8]| {
    let Some((selector, rest)) = data.split_first() else {
        return;
    };
    let (first, second) = match rest.iter().position(|b| *b == 0xFF) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let alg = match selector % 3 {
        0 => ScramAlg::Sha1,
        1 => ScramAlg::Sha256,
        _ => {
            let _ = parse_plain(first);
            return;
        }
    };
    let Ok((mut server, _username)) = ScramServer::start(alg, first) else {
        return;
    };
    let known = selector & 0x80 == 0;
    let _ = server.server_first(known.then(|| credentials().get(alg)));
    let _ = server.client_final(second);
});
