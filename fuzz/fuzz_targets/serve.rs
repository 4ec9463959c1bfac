//! A partition server fed arbitrary datagrams never panics and keeps serving.
#![no_main]

use dataplane::Packet;
use kv::{GroupLayout, PartitionMap};
use libfuzzer_sys::fuzz_target;
use migration::PartitionServer;

fuzz_target!(|data: &[u8]| {
    let map = PartitionMap::new(GroupLayout::new(8).unwrap(), 1).unwrap();
    let mut server = PartitionServer::new(&map, 0, &[0], 16);
    for chunk in data.split(|&b| b == 0xFF) {
        let mut packet = Packet::new_boxed();
        let len = chunk.len().min(packet.buffer_mut().len());
        packet.buffer_mut()[..len].copy_from_slice(&chunk[..len]);
        packet.set_len(len);
        server.handle(&mut packet);
    }
});
