//! The plain GET of a shard this core owns outright, answered without the general
//! request path, and the loads a burst starts before serving it.

use super::*;
use dataplane::wire::{self, Status};
use kv::{key_hash, Lookup};

/// Requests whose loads a burst starts together: a NIC burst. Their three lines each stay
/// well inside L1 and the core's outstanding-miss slots are kept busy. Measured with the
/// `serving` bench (10 M keys): whole-chunk passes beat a 16-deep rolling pipeline in 4 of 4
/// alternated runs.
pub(super) const PREFETCH_CHUNK: usize = 32;

/// A GET's status, version and value from a lookup (a tombstone answers with its version).
pub(super) fn get_answer(lookup: Lookup<'_>) -> (Status, u64, &[u8]) {
    match lookup {
        Lookup::Found { version, value } => (Status::Ok, version, value),
        Lookup::Deleted { version } => (Status::NotFound, version, &[]),
        Lookup::Absent => (Status::NotFound, 0, &[]),
    }
}

impl PartitionServer {
    /// The first two passes of `handle_burst` over up to `PREFETCH_CHUNK` requests: their
    /// buckets, then their entries, start loading.
    pub(super) fn start_loads<'p>(&mut self, payloads: impl Iterator<Item = &'p [u8]>) {
        self.targets.clear();
        for payload in payloads {
            let target = self.target(payload);
            if let Some((shard, hash)) = target {
                self.shards[shard].table.prefetch_slots(hash);
            }
            self.targets.push(target);
        }
        for &(shard, hash) in self.targets.iter().flatten() {
            self.shards[shard].table.prefetch_entry(hash);
        }
    }

    /// The shard index and key hash a single-key request will touch, from its header only.
    pub(super) fn target(&self, payload: &[u8]) -> Option<(usize, u64)> {
        let header = wire::Header::new_checked(payload).ok()?;
        let op = wire::Op::from_u8(header.op_code()).ok()?;
        if !op.is_key_addressed() || op.is_multi() {
            return None;
        }
        let shard = self.shards.iter().position(|s| s.id == header.shard())?;
        Some((shard, header.key_hash()))
    }

    /// Most requests, answered in place without the general dispatch of `handle_payload`: a
    /// GET that neither the switch nor a server marked (no flags), of a shard this core owns
    /// outright (no migration). Any other case is None, left to the general path, which
    /// gives the same answer here and also counts what it drops. Inlined into both callers
    /// (`handle`, and `answer` for a DPDK port): with two callers the compiler kept it out
    /// of line, which cost 29 instructions per GET (`scripts/bench-instructions.sh`).
    #[inline(always)]
    pub(super) fn serve_plain_get(&mut self, len: usize, buf: &mut [u8]) -> Option<usize> {
        let get = wire::parse_plain_get(&buf[..len])?;
        if self.chain.is_some() {
            // A replica answers by its place in the chain (`chain.rs`).
            return None;
        }
        let shard = self.shards.iter().find(|s| s.id == get.shard)?;
        if !matches!(shard.role, Role::Owned) {
            return None;
        }
        let key = &buf[get.key];
        let hash = key_hash(key);
        if hash != get.key_hash || !shard.table.owns(hash) {
            return None;
        }
        let (status, version, value) = get_answer(shard.table.get(hash, key));
        // A buffer too short for the reply (an mbuf smaller than usual) is left as it was.
        let reply_len = wire::emit_plain_get_reply(buf, status, version, value).ok()?;
        self.counters.gets += 1;
        self.counters.get_hits += u64::from(status == Status::Ok);
        Some(reply_len)
    }
}
