//! The workload a client runs: YCSB's core-workload parameters, the built-in
//! workloads, and the mapping from record numbers to keys.

use std::fmt;

use super::properties::{Properties, PropertiesError};

/// How the records read/updated are chosen (YCSB `requestdistribution`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribution {
    /// Scrambled Zipfian: a few hot records spread over the key space.
    Zipfian,
    /// Every existing record equally likely.
    Uniform,
    /// Zipfian over recency: the most recently inserted records are hottest.
    Latest,
}

impl Distribution {
    /// The YCSB property value for this distribution.
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Zipfian => "zipfian",
            Distribution::Uniform => "uniform",
            Distribution::Latest => "latest",
        }
    }

    /// Parses a YCSB `requestdistribution` value (case-insensitive). Only
    /// the three distributions this client implements are accepted.
    pub fn from_name(name: &str) -> Option<Distribution> {
        match name.trim().to_ascii_lowercase().as_str() {
            "zipfian" => Some(Distribution::Zipfian),
            "uniform" => Some(Distribution::Uniform),
            "latest" => Some(Distribution::Latest),
            _ => None,
        }
    }
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A bad property value or an inconsistent workload.
#[derive(Debug, Clone, PartialEq)]
pub enum SpecError {
    /// A value that is not even of the right type (with its line number).
    Property(PropertiesError),
    /// A value of the right type that this workload cannot run with.
    Invalid(String),
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecError::Property(e) => e.fmt(f),
            SpecError::Invalid(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for SpecError {}

impl From<PropertiesError> for SpecError {
    fn from(e: PropertiesError) -> Self {
        SpecError::Property(e)
    }
}

/// Message used whenever a workload asks for range scans.
const SCAN_UNSUPPORTED: &str = "scanproportion > 0: range scans are not supported by a \
     hash-partitioned store (YCSB workload e cannot be run)";

/// Largest value: the store's values must fit one datagram with headers.
pub const MAX_VALUE_BYTES: usize = 1300;
/// Smallest value: the client writes a 16-byte unique tag at its front.
pub const MIN_VALUE_BYTES: usize = 16;

/// Property keys `apply` reads; anything else is reported by `unused_keys`.
const KNOWN_KEYS: &[&str] = &[
    "recordcount",
    "operationcount",
    "readproportion",
    "updateproportion",
    "insertproportion",
    "scanproportion",
    "readmodifywriteproportion",
    "deleteproportion",
    "requestdistribution",
    "zipfianconstant",
    "zipfian.constant",
    "insertorder",
    "keybytes",
    "valuebytes",
    "fieldcount",
    "fieldlength",
    "keysperrequest",
    // The Java workload class name in stock YCSB files; meaningless here.
    "workload",
];

/// A YCSB core workload, restricted to what a hash-partitioned key-value
/// store can run (no scans) and to fixed-size binary keys and values.
///
/// Proportions are weights, as in YCSB's `DiscreteGenerator`: they need not
/// sum to exactly 1 (e.g. after `-p readproportion=0.9` on workload a) and
/// are normalised by their sum when operations are chosen; see
/// [`WorkloadSpec::proportion_sum`] to warn about it and
/// [`WorkloadSpec::normalize`] to make it explicit.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadSpec {
    pub name: String,
    /// Records loaded before the run (record numbers `0..record_count`).
    pub record_count: u64,
    /// Operations to run; `None` lets the caller run for a time instead.
    pub operation_count: Option<u64>,
    pub read: f64,
    pub update: f64,
    pub insert: f64,
    /// Always 0 in a valid spec; kept so YCSB files round-trip into a clear error.
    pub scan: f64,
    pub rmw: f64,
    /// Deletes of existing records (netmigrate's `deleteproportion`, not in YCSB's core
    /// workloads): a later read finds the key absent until an update writes it again.
    pub delete: f64,
    pub distribution: Distribution,
    /// Zipfian constant (YCSB's 0.99); must be in [0, 1).
    pub zipf_theta: f64,
    pub key_bytes: usize,
    pub value_bytes: usize,
    /// YCSB `insertorder=hashed`: keys are a scramble of the record number,
    /// so consecutive inserts do not produce consecutive keys.
    pub insert_order_hashed: bool,
    /// Keys per read and update request (netmigrate's `keysperrequest`, not in YCSB): above
    /// 1, reads and updates become multi-key GETs and PUTs of that many distinct records
    /// of one partition.
    pub keys_per_request: usize,
}

impl Default for WorkloadSpec {
    /// The defaults used for a workload defined only by a property file.
    fn default() -> Self {
        WorkloadSpec {
            name: "custom".to_string(),
            record_count: 1000,
            operation_count: None,
            read: 0.95,
            update: 0.05,
            insert: 0.0,
            scan: 0.0,
            rmw: 0.0,
            delete: 0.0,
            distribution: Distribution::Zipfian,
            zipf_theta: 0.99,
            key_bytes: 8,
            value_bytes: 64,
            insert_order_hashed: true,
            keys_per_request: 1,
        }
    }
}

/// (name, read, update, insert, rmw, delete, distribution) of the built-in workloads.
const BUILTINS: &[(&str, f64, f64, f64, f64, f64, Distribution)] = &[
    ("a", 0.5, 0.5, 0.0, 0.0, 0.0, Distribution::Zipfian),
    ("b", 0.95, 0.05, 0.0, 0.0, 0.0, Distribution::Zipfian),
    ("c", 1.0, 0.0, 0.0, 0.0, 0.0, Distribution::Zipfian),
    ("d", 0.95, 0.0, 0.05, 0.0, 0.0, Distribution::Latest),
    ("f", 0.5, 0.0, 0.0, 0.5, 0.0, Distribution::Zipfian),
    ("10", 0.9, 0.1, 0.0, 0.0, 0.0, Distribution::Zipfian),
    ("20", 0.8, 0.2, 0.0, 0.0, 0.0, Distribution::Zipfian),
    ("30", 0.7, 0.3, 0.0, 0.0, 0.0, Distribution::Zipfian),
    // B with deletes: half of B's writes delete, so tombstones are made, read, migrated
    // and written over all the time.
    ("bd", 0.95, 0.025, 0.0, 0.0, 0.025, Distribution::Zipfian),
];

impl WorkloadSpec {
    /// A standard YCSB core workload by name ("a", "b", "c", "d", "f", the
    /// write-ratio variants "10", "20", "30", or "bd", B with deletes; a
    /// "workload" prefix and upper case are accepted). Workload e is absent on purpose: it needs
    /// range scans. Other fields keep the `Default` values.
    pub fn builtin(name: &str) -> Option<WorkloadSpec> {
        let lower = name.trim().to_ascii_lowercase();
        let short = lower.strip_prefix("workload").unwrap_or(&lower);
        let &(n, read, update, insert, rmw, delete, distribution) =
            BUILTINS.iter().find(|b| b.0 == short)?;
        Some(WorkloadSpec {
            name: n.to_string(),
            read,
            update,
            insert,
            rmw,
            delete,
            distribution,
            ..WorkloadSpec::default()
        })
    }

    /// Names accepted by [`WorkloadSpec::builtin`].
    pub fn builtin_names() -> Vec<&'static str> {
        BUILTINS.iter().map(|b| b.0).collect()
    }

    /// Overrides fields from YCSB property names. Values are type-checked
    /// here; cross-field checks are left to [`WorkloadSpec::validate`] so
    /// that a file and later `-p` overrides can be applied in turn.
    /// On error `self` is left unchanged.
    pub fn apply(&mut self, props: &Properties) -> Result<(), SpecError> {
        let mut next = self.clone();
        next.apply_inner(props)?;
        *self = next;
        Ok(())
    }

    fn apply_inner(&mut self, props: &Properties) -> Result<(), SpecError> {
        if let Some(v) = props.get_u64("recordcount")? {
            self.record_count = v;
        }
        if let Some(v) = props.get_u64("operationcount")? {
            self.operation_count = Some(v);
        }
        for (key, field) in self.proportions_mut() {
            if let Some(v) = props.get_f64(key)? {
                *field = v;
            }
        }
        if let Some(v) = props.get_str("requestdistribution") {
            self.distribution = Distribution::from_name(v).ok_or_else(|| {
                invalid_prop(
                    props,
                    "requestdistribution",
                    format!(
                        "requestdistribution '{v}' is not supported (use zipfian, uniform or latest)"
                    ),
                )
            })?;
        }
        // YCSB hardcodes 0.99; both spellings seen in forks are accepted,
        // the dotted one winning if a file has both.
        for key in ["zipfianconstant", "zipfian.constant"] {
            if let Some(v) = props.get_f64(key)? {
                self.zipf_theta = v;
            }
        }
        if let Some(v) = props.get_str("insertorder") {
            self.insert_order_hashed = match v.trim().to_ascii_lowercase().as_str() {
                "hashed" => true,
                "ordered" => false,
                _ => {
                    return Err(invalid_prop(
                        props,
                        "insertorder",
                        format!("insertorder '{v}' is not supported (use hashed or ordered)"),
                    ))
                }
            };
        }
        if let Some(v) = props.get_u64("keysperrequest")? {
            self.keys_per_request = to_usize(props, "keysperrequest", v)?;
        }
        if let Some(v) = props.get_u64("keybytes")? {
            self.key_bytes = to_usize(props, "keybytes", v)?;
        }
        if let Some(v) = props.get_u64("valuebytes")? {
            self.value_bytes = to_usize(props, "valuebytes", v)?;
        } else {
            // YCSB sizes records as fieldcount fields of fieldlength bytes;
            // a file that states either means that size for our one value.
            let count = props.get_u64("fieldcount")?;
            let length = props.get_u64("fieldlength")?;
            if count.is_some() || length.is_some() {
                let bytes = count
                    .unwrap_or(10)
                    .checked_mul(length.unwrap_or(100))
                    .ok_or_else(|| {
                        SpecError::Invalid("fieldcount * fieldlength overflows".into())
                    })?;
                self.value_bytes = to_usize(props, "fieldlength", bytes)?;
            }
        }
        Ok(())
    }

    /// Keys present in `props` that [`WorkloadSpec::apply`] ignores (other
    /// YCSB options such as `insertstart` or `readallfields`), so the
    /// caller can warn instead of silently running a different workload.
    pub fn unused_keys(props: &Properties) -> Vec<String> {
        props
            .iter()
            .map(|(k, _)| k)
            .filter(|k| !KNOWN_KEYS.contains(k))
            .map(str::to_string)
            .collect()
    }

    /// Every operation proportion with its property name.
    pub fn proportions(&self) -> [(&'static str, f64); 6] {
        self.clone().proportions_mut().map(|(key, p)| (key, *p))
    }

    fn proportions_mut(&mut self) -> [(&'static str, &mut f64); 6] {
        [
            ("readproportion", &mut self.read),
            ("updateproportion", &mut self.update),
            ("insertproportion", &mut self.insert),
            ("scanproportion", &mut self.scan),
            ("readmodifywriteproportion", &mut self.rmw),
            ("deleteproportion", &mut self.delete),
        ]
    }

    /// Sum of the operation proportions (1.0 for a normalised spec).
    pub fn proportion_sum(&self) -> f64 {
        self.proportions().iter().map(|(_, p)| p).sum()
    }

    /// Rescales the proportions to sum to 1 (no-op if the sum is 0).
    pub fn normalize(&mut self) {
        let sum = self.proportion_sum();
        if sum > 0.0 {
            for (_, p) in self.proportions_mut() {
                *p /= sum;
            }
        }
    }

    /// Upper bound on the number of records that can exist during the run,
    /// used to check that keys cannot collide: the loaded records plus at
    /// most one insert per operation, and never less than twice the loaded
    /// records (headroom for timed runs whose operation count is unknown).
    pub fn max_records(&self) -> u64 {
        let inserts = if self.insert > 0.0 {
            self.operation_count.unwrap_or(self.record_count)
        } else {
            0
        };
        self.record_count
            .saturating_add(inserts)
            .max(self.record_count.saturating_mul(2))
    }

    /// Size of the key space the Zipfian key chooser draws from, as YCSB's
    /// CoreWorkload: the loaded records plus twice the expected inserts
    /// (records not yet inserted are redrawn). Without an operation count,
    /// as many inserts as loaded records are assumed.
    pub fn zipfian_key_space(&self) -> u64 {
        if self.insert <= 0.0 {
            return self.record_count;
        }
        let share = self.insert / self.proportion_sum().max(f64::MIN_POSITIVE);
        let expected_new = match self.operation_count {
            Some(ops) => (ops as f64 * share * 2.0).round() as u64,
            None => self.record_count,
        };
        self.record_count.saturating_add(expected_new)
    }

    /// Checks that the workload can run on this client and store.
    pub fn validate(&self) -> Result<(), SpecError> {
        let invalid = |msg: String| Err(SpecError::Invalid(msg));
        for (key, v) in self.proportions() {
            if !(0.0..=1.0).contains(&v) {
                return invalid(format!("{key} must be in [0, 1], got {v}"));
            }
        }
        if self.scan > 0.0 {
            return invalid(SCAN_UNSUPPORTED.to_string());
        }
        if self.proportion_sum() <= 0.0 {
            return invalid(
                "all operation proportions are 0: set readproportion, updateproportion, \
                 insertproportion, readmodifywriteproportion or deleteproportion"
                    .to_string(),
            );
        }
        if self.record_count == 0 {
            return invalid("recordcount must be at least 1".to_string());
        }
        if !(0.0..1.0).contains(&self.zipf_theta) {
            return invalid(format!(
                "zipfianconstant must be in [0, 1), got {}",
                self.zipf_theta
            ));
        }
        if !(1..=255).contains(&self.key_bytes) {
            return invalid(format!(
                "keybytes must be in 1..=255, got {}",
                self.key_bytes
            ));
        }
        if self.key_bytes < 8 {
            let capacity = 1u64 << (8 * self.key_bytes);
            let needed = self.max_records();
            if capacity <= needed {
                return invalid(format!(
                    "keybytes={} gives only {capacity} distinct keys, but up to {needed} \
                     records may exist (recordcount={} plus inserts); use more keybytes",
                    self.key_bytes, self.record_count
                ));
            }
        }
        if !(MIN_VALUE_BYTES..=MAX_VALUE_BYTES).contains(&self.value_bytes) {
            return invalid(format!(
                "valuebytes must be in {MIN_VALUE_BYTES}..={MAX_VALUE_BYTES} (the client stores \
                 a {MIN_VALUE_BYTES}-byte tag at the front; values must fit one datagram), got {}",
                self.value_bytes
            ));
        }
        if self.key_bytes + self.value_bytes > dataplane::wire::MAX_ENTRY_LEN {
            return invalid(format!(
                "keybytes + valuebytes must be at most {} (an entry must fit one migration \
                 message), got {} + {}",
                dataplane::wire::MAX_ENTRY_LEN,
                self.key_bytes,
                self.value_bytes
            ));
        }
        self.validate_keys_per_request()
    }

    /// A multi-key PUT and a multi-key GET's reply must each fit one datagram.
    fn validate_keys_per_request(&self) -> Result<(), SpecError> {
        use dataplane::wire::{HEADER_LEN, MAX_KEYS, MAX_PAYLOAD};
        let n = self.keys_per_request;
        if !(1..=MAX_KEYS).contains(&n) {
            return Err(SpecError::Invalid(format!(
                "keysperrequest must be in 1..={MAX_KEYS}, got {n}"
            )));
        }
        // Fixed part, then per key: hash and PUT item, and room for the reply-to trailer a
        // server adds when it passes a request on; per GET reply item: status, version,
        // length and value.
        let put = HEADER_LEN
            + 8
            + n * (8 + 3 + self.key_bytes + self.value_bytes)
            + dataplane::wire::TRAILER_LEN;
        let reply = HEADER_LEN + 8 + n * (11 + self.value_bytes);
        if n > 1 && put.max(reply) > MAX_PAYLOAD {
            return Err(SpecError::Invalid(format!(
                "keysperrequest={n} with keybytes={} and valuebytes={} needs {} bytes per \
                 request, more than one {MAX_PAYLOAD}-byte datagram: use fewer keys or \
                 smaller values",
                self.key_bytes,
                self.value_bytes,
                put.max(reply)
            )));
        }
        Ok(())
    }

    /// Writes the key of record number `record` into `buf` and returns its
    /// length (`key_bytes`). Distinct records get distinct keys as long as
    /// `record < 256^key_bytes` (guaranteed for `max_records` by `validate`).
    ///
    /// Layout: for `key_bytes >= 8`, a filler prefix of `key_bytes - 8`
    /// bytes ("user" then '0's, after YCSB's `user…` keys) followed by the
    /// big-endian 8-byte key number; for `key_bytes < 8`, the low
    /// `key_bytes` bytes (big-endian) of the key number.
    ///
    /// The key number is the record number for `insertorder=ordered`. For
    /// `hashed` YCSB uses `fnvhash64`, which is not injective (two records
    /// could share a key). We use the splitmix64 mixer instead: an
    /// invertible (bijective) function on 64-bit values, so keys stay
    /// unique. For `key_bytes < 8` the same construction is applied on
    /// `8 * key_bytes` bits (add, xor-shift and odd multiply modulo
    /// 2^bits are each invertible), so hashed order works there too.
    ///
    /// Panics if `buf` is shorter than `key_bytes`.
    pub fn key_of(&self, record: u64, buf: &mut [u8]) -> usize {
        let kb = self.key_bytes;
        assert!(
            buf.len() >= kb,
            "key buffer of {} bytes < keybytes {kb}",
            buf.len()
        );
        let bits = (8 * kb).min(64) as u32;
        let k = if self.insert_order_hashed {
            scramble(record, bits)
        } else {
            record
        };
        if kb >= 8 {
            let prefix = kb - 8;
            for (i, b) in buf[..prefix].iter_mut().enumerate() {
                *b = *b"user".get(i).unwrap_or(&b'0');
            }
            buf[prefix..kb].copy_from_slice(&k.to_be_bytes());
        } else {
            buf[..kb].copy_from_slice(&k.to_be_bytes()[8 - kb..]);
        }
        kb
    }

    /// Convenience form of [`WorkloadSpec::key_of`] that allocates.
    pub fn key_vec(&self, record: u64) -> Vec<u8> {
        let mut buf = vec![0u8; self.key_bytes];
        self.key_of(record, &mut buf);
        buf
    }
}

fn invalid_prop(props: &Properties, key: &str, msg: String) -> SpecError {
    SpecError::Property(PropertiesError {
        line: props.line_of(key),
        message: msg,
    })
}

fn to_usize(props: &Properties, key: &str, v: u64) -> Result<usize, SpecError> {
    usize::try_from(v).map_err(|_| invalid_prop(props, key, format!("{key}: {v} is too large")))
}

/// A bijection on `bits`-bit values (8..=64): splitmix64 (add golden gamma,
/// then xor-shift/multiply finalizer), with shifts scaled to the width and
/// arithmetic modulo 2^bits. Each step is invertible, hence so is the whole.
fn scramble(x: u64, bits: u32) -> u64 {
    debug_assert!((8..=64).contains(&bits));
    let mask = if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let (s1, s2, s3) = (bits * 30 / 64, bits * 27 / 64, bits * 31 / 64);
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15) & mask;
    z = (z ^ (z >> s1)).wrapping_mul(0xbf58_476d_1ce4_e5b9) & mask;
    z = (z ^ (z >> s2)).wrapping_mul(0x94d0_49bb_1331_11eb) & mask;
    z ^ (z >> s3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn props(text: &str) -> Properties {
        Properties::parse(text).unwrap()
    }

    #[test]
    fn keys_per_request_is_read_and_must_fit_one_datagram() {
        let mut s = WorkloadSpec::builtin("a").unwrap();
        assert_eq!(s.keys_per_request, 1);
        s.apply(&props("keysperrequest=16")).unwrap();
        assert_eq!(s.keys_per_request, 16);
        assert!(s.validate().is_ok(), "16 keys of 8 + 64 bytes fit");
        s.apply(&props("valuebytes=200")).unwrap();
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("more than one 1472-byte datagram"), "{err}");
        s.apply(&props("keysperrequest=0")).unwrap();
        assert!(s.validate().unwrap_err().to_string().contains("1..=16"));
    }

    #[test]
    fn builtin_proportions() {
        let expect = [
            ("a", 0.5, 0.5, 0.0, 0.0, 0.0, Distribution::Zipfian),
            ("b", 0.95, 0.05, 0.0, 0.0, 0.0, Distribution::Zipfian),
            ("c", 1.0, 0.0, 0.0, 0.0, 0.0, Distribution::Zipfian),
            ("d", 0.95, 0.0, 0.05, 0.0, 0.0, Distribution::Latest),
            ("f", 0.5, 0.0, 0.0, 0.5, 0.0, Distribution::Zipfian),
            ("10", 0.9, 0.1, 0.0, 0.0, 0.0, Distribution::Zipfian),
            ("20", 0.8, 0.2, 0.0, 0.0, 0.0, Distribution::Zipfian),
            ("30", 0.7, 0.3, 0.0, 0.0, 0.0, Distribution::Zipfian),
            ("bd", 0.95, 0.025, 0.0, 0.0, 0.025, Distribution::Zipfian),
        ];
        for (name, r, u, i, m, del, d) in expect {
            let s = WorkloadSpec::builtin(name).unwrap();
            assert_eq!(s.name, name);
            assert_eq!(
                (s.read, s.update, s.insert, s.scan, s.rmw, s.delete),
                (r, u, i, 0.0, m, del)
            );
            assert_eq!(s.distribution, d);
            assert!((s.proportion_sum() - 1.0).abs() < 1e-12);
            assert_eq!(s.zipf_theta, 0.99);
            s.validate().unwrap();
        }
        assert_eq!(WorkloadSpec::builtin("WorkloadA").unwrap().name, "a");
        assert!(WorkloadSpec::builtin("e").is_none());
        assert!(WorkloadSpec::builtin("workloade").is_none());
        assert!(WorkloadSpec::builtin("g").is_none());
        assert_eq!(WorkloadSpec::builtin_names().len(), 9);
        let mut deletes = WorkloadSpec::builtin("b").unwrap();
        deletes.apply(&props("deleteproportion=0.1")).unwrap();
        assert_eq!(deletes.delete, 0.1);
        assert!(WorkloadSpec::unused_keys(&props("deleteproportion=0.1")).is_empty());
        deletes.apply(&props("deleteproportion=1.5")).unwrap();
        assert!(deletes
            .validate()
            .unwrap_err()
            .to_string()
            .contains("deleteproportion"));
    }

    #[test]
    fn defaults() {
        let s = WorkloadSpec::default();
        assert_eq!(s.record_count, 1000);
        assert_eq!((s.read, s.update), (0.95, 0.05));
        assert_eq!(s.distribution, Distribution::Zipfian);
        assert_eq!((s.key_bytes, s.value_bytes), (8, 64));
        assert!(s.insert_order_hashed);
        s.validate().unwrap();
        assert_eq!(Distribution::Latest.name(), "latest");
        assert_eq!(
            Distribution::from_name(" Uniform"),
            Some(Distribution::Uniform)
        );
        assert_eq!(Distribution::Zipfian.to_string(), "zipfian");
    }

    #[test]
    fn apply_ycsb_file_and_overrides() {
        // Stock YCSB workloadd, comments and all.
        let text = "# Yahoo! Cloud System Benchmark\n\
                    recordcount=1000\n\
                    operationcount=1000\n\
                    workload=site.ycsb.workloads.CoreWorkload\n\
                    readallfields=true\n\
                    readproportion=0.95\n\
                    updateproportion=0\n\
                    scanproportion=0\n\
                    insertproportion=0.05\n\
                    requestdistribution=latest\n";
        let mut s = WorkloadSpec::default();
        s.apply(&props(text)).unwrap();
        assert_eq!(s.operation_count, Some(1000));
        assert_eq!((s.read, s.update, s.insert), (0.95, 0.0, 0.05));
        assert_eq!(s.distribution, Distribution::Latest);
        assert_eq!(s.value_bytes, 64, "no field sizes given: keep default");
        s.validate().unwrap();
        assert_eq!(
            WorkloadSpec::unused_keys(&props(text)),
            vec!["readallfields"]
        );

        let mut p = Properties::new();
        for arg in [
            "recordcount=5000",
            "readmodifywriteproportion=0.25",
            "readproportion=0.7",
            "insertproportion=0.05",
            "requestdistribution=uniform",
            "zipfian.constant=0.5",
            "insertorder=ordered",
            "keybytes=16",
            "valuebytes=100",
        ] {
            let (k, v) = Properties::parse_override(arg).unwrap();
            p.set(k, v);
        }
        s.apply(&p).unwrap();
        assert_eq!(s.record_count, 5000);
        assert_eq!((s.read, s.rmw, s.insert), (0.7, 0.25, 0.05));
        assert_eq!(s.distribution, Distribution::Uniform);
        assert_eq!(s.zipf_theta, 0.5);
        assert!(!s.insert_order_hashed);
        assert_eq!((s.key_bytes, s.value_bytes), (16, 100));
        s.validate().unwrap();

        let mut s = WorkloadSpec::builtin("a").unwrap();
        s.apply(&props("zipfianconstant=0.8")).unwrap();
        assert_eq!(s.zipf_theta, 0.8);
    }

    #[test]
    fn field_sizes_give_value_bytes() {
        let mut s = WorkloadSpec::default();
        s.apply(&props("fieldlength=10")).unwrap();
        assert_eq!(s.value_bytes, 100);
        s.apply(&props("fieldcount=2")).unwrap();
        assert_eq!(s.value_bytes, 200);
        s.apply(&props("fieldcount=3\nfieldlength=7")).unwrap();
        assert_eq!(s.value_bytes, 21);
        s.apply(&props("fieldcount=3\nfieldlength=7\nvaluebytes=40"))
            .unwrap();
        assert_eq!(s.value_bytes, 40, "valuebytes wins over field sizes");
    }

    #[test]
    fn apply_errors() {
        let mut s = WorkloadSpec::default();
        for bad in ["hotspot", "sequential", "exponential"] {
            let e = s
                .apply(&props(&format!("a=1\nrequestdistribution={bad}")))
                .unwrap_err();
            let msg = e.to_string();
            assert!(msg.starts_with("line 2: ") && msg.contains(bad), "{msg}");
            assert!(msg.contains("zipfian, uniform or latest"), "{msg}");
        }
        let e = s.apply(&props("recordcount=lots")).unwrap_err();
        assert!(matches!(&e, SpecError::Property(p) if p.line == Some(1)));
        assert!(e.to_string().contains("recordcount") && e.to_string().contains("lots"));
        assert!(s.apply(&props("readproportion=half")).is_err());
        assert!(s.apply(&props("insertorder=random")).is_err());
        assert_eq!(s, WorkloadSpec::default(), "failed applies changed nothing");
    }

    #[test]
    fn validation_errors() {
        let check = |f: &dyn Fn(&mut WorkloadSpec), needle: &str| {
            let mut s = WorkloadSpec::default();
            f(&mut s);
            let msg = s.validate().unwrap_err().to_string();
            assert!(msg.contains(needle), "expected '{needle}' in '{msg}'");
        };
        check(
            &|s| s.scan = 0.05,
            "range scans are not supported by a hash-partitioned store",
        );
        check(&|s| s.read = 1.5, "readproportion must be in [0, 1]");
        check(&|s| s.update = -0.1, "updateproportion");
        check(&|s| s.rmw = f64::NAN, "readmodifywriteproportion");
        check(
            &|s| (s.read, s.update) = (0.0, 0.0),
            "all operation proportions are 0",
        );
        check(&|s| s.record_count = 0, "recordcount");
        check(&|s| s.zipf_theta = 1.0, "zipfianconstant");
        check(&|s| s.key_bytes = 0, "keybytes must be in 1..=255");
        check(&|s| s.key_bytes = 256, "keybytes must be in 1..=255");
        check(
            &|s| (s.key_bytes, s.value_bytes) = (255, MAX_VALUE_BYTES),
            "keybytes + valuebytes must be at most",
        );
        check(&|s| s.value_bytes = 15, "valuebytes must be in 16..=1300");
        check(&|s| s.value_bytes = 1301, "valuebytes");
        check(
            &|s| {
                s.key_bytes = 2;
                s.record_count = 40_000;
            },
            "keybytes=2 gives only 65536 distinct keys",
        );
        check(
            &|s| {
                s.key_bytes = 3;
                s.record_count = 1_000_000;
                s.insert = 0.5;
                s.operation_count = Some(16_000_000);
            },
            "plus inserts",
        );

        // Accepted edge cases.
        let mut s = WorkloadSpec {
            key_bytes: 2,
            record_count: 32_767,
            value_bytes: 16,
            ..WorkloadSpec::default()
        };
        s.validate().unwrap();
        s.key_bytes = dataplane::wire::MAX_ENTRY_LEN - MAX_VALUE_BYTES;
        s.value_bytes = MAX_VALUE_BYTES;
        s.validate().unwrap();
        // Proportions are weights: a sum other than 1 is accepted.
        s.read = 0.9;
        s.update = 0.5;
        s.validate().unwrap();
        assert!((s.proportion_sum() - 1.4).abs() < 1e-12);
        s.normalize();
        assert!((s.proportion_sum() - 1.0).abs() < 1e-12);
        assert!((s.read - 0.9 / 1.4).abs() < 1e-12);
    }

    #[test]
    fn key_layout() {
        let mut s = WorkloadSpec {
            insert_order_hashed: false,
            ..WorkloadSpec::default()
        };
        assert_eq!(s.key_vec(0x0102), vec![0, 0, 0, 0, 0, 0, 1, 2]);
        s.key_bytes = 16;
        assert_eq!(s.key_vec(1), b"user0000\0\0\0\0\0\0\0\x01".to_vec());
        s.key_bytes = 10;
        assert_eq!(s.key_vec(1), b"us\0\0\0\0\0\0\0\x01".to_vec());
        s.key_bytes = 3;
        assert_eq!(s.key_vec(0x0a0b0c), vec![0x0a, 0x0b, 0x0c]);
        let mut buf = [0xffu8; 32];
        assert_eq!(s.key_of(5, &mut buf), 3);
        assert_eq!(&buf[..4], &[0, 0, 5, 0xff]);

        s.key_bytes = 12;
        s.insert_order_hashed = true;
        let k = s.key_vec(1);
        assert_eq!(&k[..4], b"user");
        assert_ne!(&k[4..], &1u64.to_be_bytes());
    }

    fn assert_unique(s: &WorkloadSpec, n: u64) {
        let mut seen = HashSet::with_capacity(n as usize);
        let mut buf = [0u8; 8];
        for r in 0..n {
            let len = s.key_of(r, &mut buf);
            assert!(
                seen.insert(buf[..len].to_vec()),
                "duplicate key for record {r}"
            );
        }
    }

    #[test]
    fn keys_unique_8_bytes() {
        for hashed in [true, false] {
            let s = WorkloadSpec {
                insert_order_hashed: hashed,
                ..WorkloadSpec::default()
            };
            assert_unique(&s, 1_000_000);
        }
    }

    #[test]
    fn keys_unique_short() {
        let mut s = WorkloadSpec {
            key_bytes: 4,
            insert_order_hashed: false,
            ..WorkloadSpec::default()
        };
        assert_unique(&s, 1_000_000);
        s.insert_order_hashed = true;
        assert_unique(&s, 1_000_000);
        // Hashed order on 1 and 2 bytes is a full permutation.
        for kb in [1usize, 2] {
            s.key_bytes = kb;
            assert_unique(&s, 1 << (8 * kb));
        }
        // And the hashed order actually scrambles.
        assert_ne!(s.key_vec(0), vec![0, 0]);
    }

    #[test]
    fn zipfian_key_space_follows_ycsb() {
        let mut s = WorkloadSpec::builtin("d").unwrap();
        assert_eq!(
            s.zipfian_key_space(),
            2000,
            "no operation count: assume recordcount inserts"
        );
        s.operation_count = Some(10_000);
        assert_eq!(s.zipfian_key_space(), 1000 + 1000);
        s.insert = 0.0;
        assert_eq!(s.zipfian_key_space(), 1000);
    }
}
