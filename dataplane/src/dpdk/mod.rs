//! Kernel-bypass backend on DPDK 22.11 LTS (cargo feature `dpdk`): EAL start-up, devices
//! (mempool, one rx/tx queue pair each), and a `Port` that moves our datagrams as
//! Ethernet/IPv4/UDP frames it builds and parses itself, answering ARP for its address.

mod device;
mod port;
mod switch_port;

pub use device::{DeviceStats, DpdkDevice, FlowRule};
pub use port::DpdkPort;
pub use switch_port::DpdkSwitchPort;

use std::ffi::{CStr, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

#[allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code,
    unnecessary_transmutes,
    clippy::all
)]
mod sys {
    include!(concat!(env!("OUT_DIR"), "/dpdk_bindings.rs"));
}

/// A DPDK failure, with what the user can do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpdkError(pub String);

impl std::fmt::Display for DpdkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DpdkError {}

/// The text of `rte_errno` (or of a negative return code).
fn error_text(code: i32) -> String {
    // SAFETY: rte_strerror returns a static or thread-local C string.
    unsafe { CStr::from_ptr(sys::rte_strerror(code.abs())) }
        .to_string_lossy()
        .into_owned()
}

fn last_error() -> i32 {
    // SAFETY: reads the calling thread's rte_errno.
    unsafe { sys::nm_errno() }
}

static EAL: OnceLock<Result<(), DpdkError>> = OnceLock::new();
/// Raised by `cleanup`: the EAL can neither stop twice nor start again.
static EAL_STOPPED: AtomicBool = AtomicBool::new(false);

/// Starts the EAL once per process with `args` (as given to `--eal`, split on white space,
/// e.g. `-l 0-1 --no-pci --in-memory --vdev=net_memif0,role=server`). Later calls return the
/// first outcome: DPDK cannot start twice in one process.
pub fn init_eal(args: &str) -> Result<(), DpdkError> {
    if EAL_STOPPED.load(Ordering::SeqCst) {
        return Err(DpdkError(
            "DPDK's EAL was already stopped in this process and cannot start again".into(),
        ));
    }
    EAL.get_or_init(|| start_eal(args)).clone()
}

fn start_eal(args: &str) -> Result<(), DpdkError> {
    let argv: Vec<CString> = std::iter::once("netmigrate")
        .chain(args.split_whitespace())
        .map(|a| {
            CString::new(a).map_err(|_| DpdkError(format!("EAL argument `{a}` holds a NUL byte")))
        })
        .collect::<Result<_, _>>()?;
    // The EAL may keep pointers into argv for the life of the process.
    let argv: &'static mut [*mut libc::c_char] =
        Vec::leak(argv.into_iter().map(CString::into_raw).collect());
    // SAFETY: argv is a valid, leaked array of NUL-terminated strings.
    let parsed = unsafe { sys::rte_eal_init(argv.len() as i32, argv.as_mut_ptr()) };
    if parsed >= 0 {
        return Ok(());
    }
    let code = last_error();
    let advice = match code {
        libc::EACCES | libc::EPERM => {
            "no hugepage information or no permission: reserve hugepages \
             (scripts/setup.sh --hugepages 1024) or pass --no-huge -m 512 in --eal, and run \
             as root"
        }
        libc::ENOMEM | libc::EFAULT => {
            "no memory for DPDK: reserve hugepages (scripts/setup.sh --hugepages) or pass \
             --in-memory or --no-huge -m 512 in --eal"
        }
        libc::EALREADY => "the EAL is already running in this process",
        libc::EINVAL => {
            "the EAL arguments are invalid: check --eal (e.g. `-l 0-1 --no-pci --in-memory`)"
        }
        libc::ENOTSUP => "this platform or device is not supported by this DPDK build",
        _ => "see the EAL messages above",
    };
    Err(DpdkError(format!(
        "DPDK EAL start failed ({}): {advice}",
        error_text(code)
    )))
}

/// Ethernet devices the EAL found (`--vdev` devices and bound NICs).
pub fn device_count() -> u16 {
    // SAFETY: valid after EAL start; returns 0 before.
    unsafe { sys::rte_eth_dev_count_avail() }
}

/// Registers the calling thread with the EAL (an lcore id, per-lcore mempool caches).
/// Threads the EAL did not start must do this before they touch a queue.
pub fn register_thread() -> Result<(), DpdkError> {
    // SAFETY: safe to call from any thread after EAL start.
    if unsafe { sys::rte_thread_register() } == 0 {
        Ok(())
    } else {
        Err(DpdkError(format!(
            "cannot register a thread with the EAL ({}): give the EAL more lcores in --eal",
            error_text(last_error())
        )))
    }
}

/// Stops the EAL; call once at exit, after every device is closed. Also removes the EAL's
/// runtime directory (`/var/run/dpdk/<file-prefix>`), which `rte_eal_cleanup` leaves behind:
/// without hugepages it holds a few MiB of memory maps, in a tmpfs, per run.
pub fn cleanup() {
    if matches!(EAL.get(), Some(Ok(()))) && !EAL_STOPPED.swap(true, Ordering::SeqCst) {
        // SAFETY: the EAL was started; returns its runtime directory's path.
        let runtime_dir = unsafe { CStr::from_ptr(sys::rte_eal_get_runtime_dir()) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: the EAL was started; nothing uses it any more.
        unsafe { sys::rte_eal_cleanup() };
        // Only a per-prefix directory: never the parent holding other processes' prefixes.
        let path = std::path::Path::new(&runtime_dir);
        if path.parent().is_some_and(|parent| parent.ends_with("dpdk")) {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}
