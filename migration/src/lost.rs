//! Groups whose data a crash lost. Without replication a migration whose other end
//! restarted empty cannot give back what only that end held (writes it acknowledged, or
//! groups it never received); those groups are refused with `DATA_LOST` from then on,
//! never answered from an older copy.

use std::ops::Range;

/// The lost groups of one partition of a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostGroups {
    first: u32,
    lost: Vec<bool>,
    count: u32,
}

impl LostGroups {
    /// None lost yet, of the partition's `groups`.
    pub fn new(groups: Range<u32>) -> Self {
        LostGroups {
            first: groups.start,
            lost: vec![false; groups.len()],
            count: 0,
        }
    }

    /// Marks `group` lost (a group of another partition is ignored).
    pub fn mark(&mut self, group: u32) {
        if let Some(slot) = self.lost.get_mut(group.wrapping_sub(self.first) as usize) {
            self.count += u32::from(!*slot);
            *slot = true;
        }
    }

    pub fn contains(&self, group: u32) -> bool {
        self.lost.get(group.wrapping_sub(self.first) as usize) == Some(&true)
    }

    /// The partition's groups, lost or not.
    pub fn groups(&self) -> Range<u32> {
        self.first..self.first + self.lost.len() as u32
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_only_its_own_groups_once() {
        let mut lost = LostGroups::new(8..16);
        lost.mark(9);
        lost.mark(9);
        lost.mark(3);
        lost.mark(16);
        assert_eq!(lost.count(), 1);
        assert!(lost.contains(9) && !lost.contains(8) && !lost.contains(3));
    }
}
