//! The PROXY protocol header parser (v1 and v2), which reads bytes from the load balancer's
//! side before anything is known of the peer. Besides crashes and hangs: a complete header
//! never claims more bytes than it was given, and `Need` always asks for at least one more.
#![no_main]

use c2s_gateway::proxy::{parse, Step};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(Step::Done(_, used)) => assert!(used <= data.len(), "{used} > {}", data.len()),
        Ok(Step::Need(more)) => assert!(more > 0),
        Err(_) => {}
    }
});
