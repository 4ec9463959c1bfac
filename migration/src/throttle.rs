//! How much of a core migration and serving may use: token buckets refilled with time, and
//! the paper's presets expressed as the share of a server's capacity given to migration.

use std::time::Instant;

/// A token bucket; `None` rate means unlimited.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: Option<f64>,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// `rate` tokens per second, holding at most `burst`.
    pub fn new(rate: Option<f64>, burst: f64) -> Self {
        TokenBucket {
            rate,
            burst: burst.max(1.0),
            tokens: burst.max(1.0),
            last: None,
        }
    }

    pub fn unlimited() -> Self {
        Self::new(None, 1.0)
    }

    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    fn refill(&mut self, now: Instant) {
        let Some(rate) = self.rate else { return };
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * rate).min(self.burst);
        }
        self.last = Some(now);
    }

    /// Whole tokens available now (capped for unlimited buckets).
    pub fn available(&mut self, now: Instant) -> u64 {
        match self.rate {
            None => u64::MAX,
            Some(_) => {
                self.refill(now);
                self.tokens.max(0.0) as u64
            }
        }
    }

    /// Spends `n` tokens (the balance may go negative: a batch larger than the balance is
    /// paid for by waiting longer before the next one).
    pub fn spend(&mut self, n: u64) {
        if self.rate.is_some() {
            self.tokens -= n as f64;
        }
    }
}

/// The NetMigrate paper's presets: how much of a source core goes to migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// Migration first: half the core migrates, so the migration is short.
    Short,
    /// A quarter of the core migrates.
    Medium,
    /// Serving first: a tenth of the core migrates, so the migration is long.
    Long,
}

impl Preset {
    pub fn name(self) -> &'static str {
        match self {
            Preset::Short => "short",
            Preset::Medium => "medium",
            Preset::Long => "long",
        }
    }

    /// Share of a source core's capacity spent on migration.
    pub fn migration_share(self) -> f64 {
        match self {
            Preset::Short => 0.5,
            Preset::Medium => 0.25,
            Preset::Long => 0.1,
        }
    }

    /// Items per second per core when the server has no capacity cap (real cores).
    pub fn uncapped_rate(self) -> Option<f64> {
        match self {
            Preset::Short => None,
            Preset::Medium => Some(1_000_000.0),
            Preset::Long => Some(200_000.0),
        }
    }
}

/// How fast one source core migrates and how much it serves meanwhile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MigrationBudget {
    /// Items per second the core ships (None: as fast as the stream allows).
    pub items_per_s: Option<f64>,
    /// Requests per second the core serves while it migrates (None: no cap).
    pub serve_per_s: Option<f64>,
}

impl MigrationBudget {
    /// The budget of `preset` on a core of `capacity` work units per second (one unit = one
    /// request served or one item migrated), or the explicit `rate` in items per second.
    pub fn of(preset: Preset, capacity: Option<f64>, rate: Option<f64>) -> Self {
        match (capacity, rate) {
            (Some(capacity), Some(rate)) => MigrationBudget {
                items_per_s: Some(rate.min(capacity)),
                serve_per_s: Some((capacity - rate).max(capacity * 0.05)),
            },
            (Some(capacity), None) => MigrationBudget {
                items_per_s: Some(capacity * preset.migration_share()),
                serve_per_s: Some(capacity * (1.0 - preset.migration_share())),
            },
            (None, rate) => MigrationBudget {
                items_per_s: rate.or(preset.uncapped_rate()),
                serve_per_s: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_refills_at_its_rate_up_to_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(Some(1000.0), 10.0);
        assert_eq!(bucket.available(start), 10);
        bucket.spend(10);
        assert_eq!(bucket.available(start), 0);
        assert_eq!(bucket.available(start + Duration::from_millis(5)), 5);
        assert_eq!(bucket.available(start + Duration::from_secs(1)), 10);
        bucket.spend(25);
        assert_eq!(bucket.available(start + Duration::from_secs(1)), 0);
    }

    #[test]
    fn presets_split_capacity() {
        let budget = MigrationBudget::of(Preset::Medium, Some(100_000.0), None);
        assert_eq!(budget.items_per_s, Some(25_000.0));
        assert_eq!(budget.serve_per_s, Some(75_000.0));
        let explicit = MigrationBudget::of(Preset::Medium, None, Some(5.0));
        assert_eq!(explicit.items_per_s, Some(5.0));
        assert_eq!(explicit.serve_per_s, None);
    }
}
