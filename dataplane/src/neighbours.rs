//! IPv4 → MAC addresses, learned from ARP and from received datagrams, for ports that frame
//! their own Ethernet (DPDK). Nearly every frame of a server or a client comes from or goes to
//! the same peer as the one before, so the last entry used is checked before the map.

use std::collections::HashMap;
use std::net::Ipv4Addr;

/// Learning is driven by received (possibly spoofed) source addresses, so the map is bounded:
/// when full it starts over and is re-learned from traffic.
pub const MAX_NEIGHBOURS: usize = 4096;

#[derive(Default)]
pub struct Neighbours {
    map: HashMap<Ipv4Addr, [u8; 6]>,
    last: Option<(Ipv4Addr, [u8; 6])>,
}

impl Neighbours {
    // The last-used check is inlined into the per-packet paths; the map is not.
    #[inline]
    pub fn get(&mut self, ip: Ipv4Addr) -> Option<[u8; 6]> {
        match self.last {
            Some((last_ip, mac)) if last_ip == ip => Some(mac),
            _ => self.look_up(ip),
        }
    }

    #[inline(never)]
    fn look_up(&mut self, ip: Ipv4Addr) -> Option<[u8; 6]> {
        let mac = *self.map.get(&ip)?;
        self.last = Some((ip, mac));
        Some(mac)
    }

    /// Records that `ip` is at `mac`; cheap when already known.
    #[inline]
    pub fn learn(&mut self, ip: Ipv4Addr, mac: [u8; 6]) {
        if self.last != Some((ip, mac)) {
            self.insert(ip, mac);
        }
    }

    #[inline(never)]
    fn insert(&mut self, ip: Ipv4Addr, mac: [u8; 6]) {
        if self.map.len() >= MAX_NEIGHBOURS && !self.map.contains_key(&ip) {
            self.map.clear();
        }
        self.map.insert(ip, mac);
        self.last = Some((ip, mac));
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(i: u32) -> Ipv4Addr {
        Ipv4Addr::from(0x0A00_0000 + i)
    }

    #[test]
    fn a_move_is_seen_through_the_cache() {
        let mut table = Neighbours::default();
        assert_eq!(table.get(ip(1)), None);
        table.learn(ip(1), [1; 6]);
        table.learn(ip(2), [2; 6]);
        assert_eq!(table.get(ip(1)), Some([1; 6]));
        // The cached neighbour moves to another MAC address.
        table.learn(ip(1), [3; 6]);
        assert_eq!(table.get(ip(1)), Some([3; 6]));
        assert_eq!(table.get(ip(2)), Some([2; 6]));
        assert_eq!(table.get(ip(1)), Some([3; 6]));
    }

    #[test]
    fn spoofed_sources_cannot_grow_it_without_bound() {
        let mut table = Neighbours::default();
        for i in 0..3 * MAX_NEIGHBOURS as u32 {
            table.learn(ip(i), [i as u8; 6]);
            assert!(table.len() <= MAX_NEIGHBOURS);
        }
        let newest = 3 * MAX_NEIGHBOURS as u32 - 1;
        assert_eq!(table.get(ip(newest)), Some([newest as u8; 6]));
    }
}
