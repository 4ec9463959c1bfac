//! Every datagram either parses or yields a typed error; a parsed message re-emits to the
//! same bytes.
#![no_main]

use dataplane::wire::{self, Reply, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((header, body)) = wire::parse_header(data) else {
        return;
    };
    let mut out = [0u8; 2048];
    if header.op.is_reply() {
        if let Ok(reply) = Reply::parse(&header, body) {
            if let Reply::Multi(items) = reply {
                assert_eq!(items.iter().count(), items.len());
            }
            let len = wire::emit_reply(&header, &reply, &mut out).expect("re-emit");
            assert_eq!(&out[..len], data);
        }
    } else if let Ok(request) = Request::parse(&header, body) {
        let len = wire::emit_request(&header, &request, &mut out).expect("re-emit");
        // Reserved bytes are checked zero, so the encoding is canonical.
        assert_eq!(&out[..len], data);
    }
});
