//! The DPDK backend between real processes (needs `--features dpdk`, DPDK 22.11 and root):
//! a DPDK server and a DPDK YCSB client over memif (copying, and with the client as memif's
//! zero-copy side on 2-MiB hugepages it reserves and gives back), and a kernel-UDP client
//! reaching a DPDK server on af_packet across a veth pair between two network namespaces this
//! test creates, or on tap with the UDP checksums offloaded (the tap PMD computes them, the
//! kernel checks), and the whole experiment with the switch host on DPDK.
//! Every child process has a time limit; namespaces and sockets are removed at the end.
#![cfg(feature = "dpdk")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_netmigrate");
/// One DPDK process at a time per test; both tests together stay inside a few cores.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("netmigrate-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server process; killed and reaped if a test fails before stopping it.
struct Server(Option<Child>);

impl Server {
    fn start(command: &mut Command) -> Server {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start server");
        Server(Some(child))
    }

    /// SIGINT (the server prints its final statistics and exits), then its stderr.
    fn stop(mut self) -> String {
        let mut child = self.0.take().expect("running");
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr).into_owned()
    }

    /// Stops the server, then checks the client's report and the server's statistics.
    fn stop_and_check(self, report: &Path, client: &Output) {
        let server_log = self.stop();
        check_report(report, client);
        assert!(
            server_log.contains("partition  0:"),
            "server printed no statistics:\n{server_log}"
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn run_with_timeout(command: &mut Command, limit: Duration) -> Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    finish_within(child, limit)
}

/// Waits for a child started with piped output; kills it past `limit`.
fn finish_within(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a child did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn check_report(path: &Path, client: &Output) {
    let stderr = String::from_utf8_lossy(&client.stderr);
    assert!(client.status.success(), "client failed:\n{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("report written")).unwrap();
    assert!(
        report["ops"]["completed"].as_u64().unwrap() > 1000,
        "{stderr}"
    );
    assert_eq!(report["ops"]["failed"], 0, "{stderr}");
    assert!(report["consistency"]["checked_ops"].as_u64().unwrap() > 0);
    assert_eq!(report["consistency"]["violations"], 0, "{stderr}");
}

fn eal(core: u32, prefix: &str, vdev: &str) -> String {
    format!("-l {core} --no-pci --no-huge -m 512 --file-prefix {prefix} --vdev={vdev}")
}

/// Waits (up to 10 s) for a memif server's socket. memif sockets are abstract: the path
/// names the socket in /proc/net/unix, and no file appears.
fn wait_for_socket(path: &Path) {
    let name = format!("@{}", path.display());
    let listening = || {
        std::fs::read_to_string("/proc/net/unix")
            .is_ok_and(|table| table.lines().any(|line| line.ends_with(&name)))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !listening() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The memif device of one side of the socket.
fn memif(role: &str, socket: &Path) -> String {
    format!("net_memif0,role={role},socket={}", socket.display())
}

/// A DPDK server at 10.0.0.2:7100 that stops by itself after `seconds`.
fn memif_server(core: u32, prefix: &str, vdev: &str, seconds: &str) -> Command {
    let mut command = Command::new(BIN);
    command.args([
        "server",
        "--transport",
        "dpdk",
        "--listen",
        "10.0.0.2:7100",
        "--duration",
        seconds,
        "--eal",
        &eal(core, prefix, vdev),
    ]);
    command
}

/// A DPDK YCSB-A client of that server, checked for linearizability, its report in `report`.
fn memif_ycsb(eal: &str, report: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(["ycsb", "--transport", "dpdk", "--server", "10.0.0.2:7100"])
        .args(["--workload", "a", "--check", "--quiet"])
        .args(["--json", report.to_str().unwrap(), "--eal", eal])
        .args(extra);
    command
}

#[test]
fn dpdk_client_and_server_over_memif() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("memif");
    let socket = dir.0.join("memif.sock");
    let report = dir.0.join("report.json");
    let server = Server::start(&mut memif_server(
        0,
        "nmtsrv",
        &memif("server", &socket),
        "60",
    ));
    wait_for_socket(&socket);
    let client = run_with_timeout(
        &mut memif_ycsb(
            &eal(1, "nmtcli", &memif("client", &socket)),
            &report,
            &["--records", "20000", "--duration", "2"],
        ),
        Duration::from_secs(60),
    );
    server.stop_and_check(&report, &client);
}

/// 2-MiB hugepages for the length of a test: at least `pages` reserved and hugetlbfs mounted
/// at /dev/hugepages; what was changed is put back when dropped.
struct HugePages {
    reserved_before: Option<u64>,
    mounted: bool,
}

const NR_HUGEPAGES: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";

impl HugePages {
    fn reserve(pages: u64) -> HugePages {
        let before: u64 = std::fs::read_to_string(NR_HUGEPAGES)
            .expect("read nr_hugepages")
            .trim()
            .parse()
            .unwrap();
        let mut guard = HugePages {
            reserved_before: None,
            mounted: false,
        };
        if before < pages {
            std::fs::write(NR_HUGEPAGES, pages.to_string()).expect("reserve hugepages (root)");
            guard.reserved_before = Some(before);
        }
        let mounted = Command::new("mountpoint")
            .args(["-q", "/dev/hugepages"])
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            std::fs::create_dir_all("/dev/hugepages").unwrap();
            let status = Command::new("mount")
                .args(["-t", "hugetlbfs", "nodev", "/dev/hugepages"])
                .status()
                .expect("mount hugetlbfs");
            assert!(status.success(), "mount -t hugetlbfs failed");
            guard.mounted = true;
        }
        guard
    }
}

impl Drop for HugePages {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg("/dev/hugepages").status();
        }
        if let Some(before) = self.reserved_before {
            let _ = std::fs::write(NR_HUGEPAGES, before.to_string());
        }
    }
}

/// The client as memif's zero-copy side (`scripts/bench-dpdk.sh` measures it so): its mbufs
/// lie in memory it shares with the server, received ones are sent from again, and every
/// operation still checks out linearizable.
#[test]
fn dpdk_zero_copy_client_and_server_over_memif() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _pages = HugePages::reserve(256);
    let dir = TempDir::new("memif-zc");
    let socket = dir.0.join("memif.sock");
    let report = dir.0.join("report.json");
    let server = Server::start(&mut memif_server(
        0,
        "nmtzsrv",
        &memif("server", &socket),
        "60",
    ));
    wait_for_socket(&socket);
    let client_eal = format!(
        "-l 1 --no-pci --in-memory --single-file-segments --file-prefix nmtzcli --vdev={},zero-copy=yes",
        memif("client", &socket)
    );
    let client = run_with_timeout(
        &mut memif_ycsb(
            &client_eal,
            &report,
            &["--records", "20000", "--duration", "2"],
        ),
        Duration::from_secs(60),
    );
    server.stop_and_check(&report, &client);
}

/// The client starts first (the memif server side, so its socket exists) and its server a
/// moment later: the client waits for the link instead of spending its first window on a
/// link that refuses every frame, so the load loses nothing.
#[test]
fn a_client_started_before_its_server_waits_for_the_link() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("link");
    let socket = dir.0.join("memif.sock");
    let report = dir.0.join("report.json");
    let extra = [
        "--records",
        "2000",
        "--duration",
        "1",
        "--give-up-ms",
        "3000",
        "--link-timeout",
        "40",
    ];
    let client = memif_ycsb(
        &eal(1, "nmtlcli", &memif("server", &socket)),
        &report,
        &extra,
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start client");
    wait_for_socket(&socket);
    std::thread::sleep(Duration::from_millis(500));
    let server = Server::start(&mut memif_server(
        0,
        "nmtlsrv",
        &memif("client", &socket),
        "90",
    ));
    let client = finish_within(client, Duration::from_secs(80));
    let stderr = String::from_utf8_lossy(&client.stderr).into_owned();
    assert!(stderr.contains("load: 2000 records in"), "{stderr}");
    assert!(stderr.contains("s), 0 failed"), "{stderr}");
    server.stop_and_check(&report, &client);
}

/// A server with two partitions on one DPDK device, which must refuse and exit; its stderr.
fn two_partitions_on(prefix: &str, vdev: &str) -> String {
    let server = run_with_timeout(
        Command::new(BIN).args([
            "server",
            "--transport",
            "dpdk",
            "--listen",
            "10.0.0.2:7100",
            "--partitions",
            "2",
            "--duration",
            "20",
            "--eal",
            &eal(0, prefix, vdev),
        ]),
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&server.stderr).into_owned();
    assert!(!server.status.success(), "{stderr}");
    assert!(stderr.contains("its own device"), "{stderr}");
    // The EAL was stopped on the way out: its runtime files (MiBs in a tmpfs) are gone.
    let runtime = Path::new("/var/run/dpdk").join(prefix);
    assert!(!runtime.exists(), "{} left behind", runtime.display());
    stderr
}

/// Two partitions on one device need a queue each and flow rules steering each partition's
/// UDP port to its queue. memif has queues but no flow rules, a pcap device one queue: the
/// server must say which and exit, not serve one partition.
#[test]
fn two_partitions_on_one_device_without_queues_or_flow_rules_are_refused() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("steer");
    let socket = dir.0.join("memif.sock");
    let stderr = two_partitions_on("nmtsteer", &memif("server", &socket));
    assert!(stderr.contains("2 queue pair(s)"), "{stderr}");
    assert!(
        stderr.contains("cannot steer UDP port 7100 to queue 0 with a flow rule"),
        "{stderr}"
    );

    // An empty capture file: a pcap global header (little-endian, version 2.4, Ethernet).
    let capture = dir.0.join("empty.pcap");
    let mut header = Vec::new();
    for word in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
        header.extend_from_slice(&word.to_le_bytes());
    }
    std::fs::write(&capture, header).unwrap();
    let stderr = two_partitions_on(
        "nmtqueues",
        &format!(
            "net_pcap0,rx_pcap={},tx_pcap={}",
            capture.display(),
            dir.0.join("out.pcap").display()
        ),
    );
    assert!(
        stderr.contains("has at most 1 rx and 1 tx queue(s), 2 needed"),
        "{stderr}"
    );
}

/// Runs `ip` (iproute2) with `args`; fails the test if it fails.
fn ip(args: &str) {
    let status = Command::new("ip")
        .args(args.split_whitespace())
        .status()
        .expect("ip (iproute2)");
    assert!(status.success(), "ip {args} failed");
}

fn delete_namespace(name: &str) {
    let _ = Command::new("ip").args(["netns", "del", name]).status();
}

/// Two network namespaces joined by a veth pair, deleted when dropped.
struct Namespaces {
    server: String,
    client: String,
}

impl Namespaces {
    fn create() -> Namespaces {
        let id = std::process::id() % 100_000;
        let ns = Namespaces {
            server: format!("nmt-s{id}"),
            client: format!("nmt-c{id}"),
        };
        ip(&format!("netns add {}", ns.server));
        ip(&format!("netns add {}", ns.client));
        ip(&format!(
            "link add nmt-s{id} netns {} type veth peer name nmt-c{id} netns {}",
            ns.server, ns.client
        ));
        ip(&format!("-n {} link set nmt-s{id} up", ns.server));
        ip(&format!("-n {} link set lo up", ns.client));
        ip(&format!(
            "-n {} addr add 10.77.0.1/24 dev nmt-c{id}",
            ns.client
        ));
        ip(&format!("-n {} link set nmt-c{id} up", ns.client));
        ns
    }

    /// The veth end inside the server namespace (named like the namespace).
    fn interface(&self) -> &str {
        &self.server
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        delete_namespace(&self.server);
        delete_namespace(&self.client);
    }
}

/// A kernel-UDP YCSB client (in namespace `ns`) against the server at `server`; checks the
/// report and the server's statistics.
fn kernel_udp_client_against(server: Server, ns: &str, address: &str, report: &Path) {
    let client = run_with_timeout(
        Command::new("ip").args([
            "netns",
            "exec",
            ns,
            BIN,
            "ycsb",
            "--transport",
            "udp",
            "--server",
            address,
            "--records",
            "5000",
            "--workload",
            "b",
            "--duration",
            "2",
            "--check",
            "--quiet",
            "--json",
            report.to_str().unwrap(),
        ]),
        Duration::from_secs(60),
    );
    server.stop_and_check(report, &client);
}

#[test]
fn kernel_udp_client_reaches_dpdk_server_on_af_packet_over_veth() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("veth");
    let report = dir.0.join("report.json");
    let ns = Namespaces::create();
    let vdev = format!("net_af_packet0,iface={},qpairs=1", ns.interface());
    let server = Server::start(Command::new("ip").args([
        "netns",
        "exec",
        &ns.server,
        BIN,
        "server",
        "--transport",
        "dpdk",
        "--listen",
        "10.77.0.2:7100",
        "--duration",
        "60",
        "--eal",
        &eal(0, "nmtveth", &vdev),
    ]));
    std::thread::sleep(Duration::from_secs(2)); // EAL start-up
    kernel_udp_client_against(server, &ns.client, "10.77.0.2:7100", &report);
}

/// The server on a tap device with `--udp-checksum offload`: its replies leave with the
/// offload flags and header lengths set, the tap PMD computes the checksums from them (it
/// rewrites the field, so the pseudo-header sum we leave there is checked by a property test
/// in `wire/frame.rs` instead), and the kernel, which drops a datagram whose checksum is
/// wrong, hands every reply to the client.
#[test]
fn kernel_udp_client_gets_replies_whose_udp_checksum_a_tap_device_offloaded() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("tap");
    let report = dir.0.join("report.json");
    let id = std::process::id() % 100_000;
    let ns = format!("nmt-t{id}");
    let tap = format!("nmt-t{id}");
    ip(&format!("netns add {ns}"));
    struct Delete(String);
    impl Drop for Delete {
        fn drop(&mut self) {
            delete_namespace(&self.0);
        }
    }
    let _delete = Delete(ns.clone());
    let server = Server::start(Command::new("ip").args([
        "netns",
        "exec",
        &ns,
        BIN,
        "server",
        "--transport",
        "dpdk",
        "--listen",
        "10.79.0.2:7100",
        "--duration",
        "60",
        "--udp-checksum",
        "offload",
        "--eal",
        &eal(0, "nmttap", &format!("net_tap0,iface={tap}")),
    ]));
    // The tap PMD creates the interface (up) when the EAL starts.
    let deadline = Instant::now() + Duration::from_secs(20);
    let exists = || {
        Command::new("ip")
            .args(["-n", &ns, "link", "show", &tap])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    while !exists() {
        assert!(
            Instant::now() < deadline,
            "the tap interface never appeared"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ip(&format!("-n {ns} addr add 10.79.0.1/24 dev {tap}"));
    ip(&format!("-n {ns} link set lo up"));
    kernel_udp_client_against(server, &ns, "10.79.0.2:7100", &report);
}

/// The whole experiment over DPDK: the switch, the source and the destination as separate
/// processes joined to the switch by memif links (two partitions each, two client threads),
/// multi-key requests split by the switch, and the linearizability check.
#[test]
fn netmigrate_experiment_over_dpdk_memif_links() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("experiment");
    let report = dir.0.join("report.json");
    let run = run_with_timeout(
        Command::new(BIN).args([
            "experiment",
            "--transport",
            "dpdk",
            "--records",
            "10000",
            "--duration",
            "4",
            "--migrate-at",
            "1",
            "--partitions",
            "2",
            "--threads",
            "2",
            "-p",
            "keysperrequest=4",
            "--check",
            "--quiet",
            "--json",
            report.to_str().unwrap(),
        ]),
        Duration::from_secs(120),
    );
    check_report(&report, &run);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let migration = &report["migration"];
    assert!(migration["finished_at_s"].is_number(), "{migration}");
    assert_eq!(migration["keys_moved"], 10000, "{migration}");
    let switch = &report["server"]["switch"]["counters"];
    assert_eq!(switch["pairs_installed"], 1, "{switch}");
    assert_eq!(switch["pairs_removed"], 1, "{switch}");
    assert!(switch["multi_splits"].as_u64().unwrap() > 0, "{switch}");
}
