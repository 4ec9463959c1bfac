//! The experiment's roles as separate processes: a `netmigrate switch` and two `netmigrate
//! server`s, driven over their control APIs. Over kernel UDP (`--transport udp`) they live on
//! loopback and are reached through the overlay; over DPDK (`--transport dpdk`) each host is
//! joined to the switch by memif links (one per partition or client thread), the switch
//! process owning every link's other end. Each run takes its own 127.x.y.0/24 (data over
//! UDP, control APIs always) and its own socket directory, so runs side by side do not
//! collide.

use super::super::CommandError;
use crate::server::control::ControlClient;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::server::transport::Transport;

const DATA_PORT: u16 = 7100;
const SWITCH_PORT: u16 = 9000;
const CONTROL_PORT: u16 = 50051;
const READY_WITHIN: Duration = Duration::from_secs(20);
const STOP_WITHIN: Duration = Duration::from_secs(10);

/// The first UDP port of the client's threads over DPDK (thread t uses this + t).
const DPDK_CLIENT_PORT: u16 = 20000;
/// Ethernet devices one DPDK process can have (`RTE_MAX_ETHPORTS` of Debian's build).
const MAX_LINKS: usize = 32;

/// The CPUs this process may run on, as an EAL CPU set (`0,1`).
fn allowed_cpus() -> String {
    let cores = dataplane::runner::allowed_cores();
    if cores.is_empty() {
        return "0".to_string();
    }
    let cores: Vec<String> = cores.iter().map(usize::to_string).collect();
    cores.join(",")
}

/// Where each role of one run lives.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub client: SocketAddrV4,
    pub switch: SocketAddrV4,
    pub source: SocketAddrV4,
    pub destination: SocketAddrV4,
    /// The loopback /24 of the control APIs: a role's is at the last byte of its data
    /// address.
    control_net: [u8; 3],
}

impl Addresses {
    /// The roles of the in-process run (no control APIs).
    pub fn in_process(
        client: SocketAddrV4,
        switch: SocketAddrV4,
        source: SocketAddrV4,
        destination: SocketAddrV4,
    ) -> Addresses {
        Addresses {
            client,
            switch,
            source,
            destination,
            control_net: [127, 0, 0],
        }
    }

    /// A /24 of its own inside 127/8 for this process's run number `run`; over kernel UDP
    /// the data addresses are in it too, over DPDK they are 10.0.0.x on the memif links.
    pub fn for_run(run: u32, transport: Transport) -> Addresses {
        let id = std::process::id().wrapping_mul(31).wrapping_add(run);
        let control_net = [127, 1 + (id % 250) as u8, ((id / 250) % 250) as u8];
        let (net, client_port) = match transport {
            Transport::Dpdk => ([10, 0, 0], DPDK_CLIENT_PORT),
            _ => (control_net, 0),
        };
        let host = |last| Ipv4Addr::new(net[0], net[1], net[2], last);
        Addresses {
            client: SocketAddrV4::new(host(1), client_port),
            switch: SocketAddrV4::new(host(254), SWITCH_PORT),
            source: SocketAddrV4::new(host(2), DATA_PORT),
            destination: SocketAddrV4::new(host(3), DATA_PORT),
            control_net,
        }
    }

    /// The control API of the role whose data address is `data`.
    pub fn control_of(&self, data: SocketAddrV4) -> SocketAddr {
        let [a, b, c] = self.control_net;
        let ip = Ipv4Addr::new(a, b, c, data.ip().octets()[3]);
        SocketAddr::V4(SocketAddrV4::new(ip, CONTROL_PORT))
    }
}

/// How the roles are joined: the kernel-UDP overlay, or memif links to the switch process.
#[derive(Debug, Clone)]
pub enum Links {
    Udp,
    /// The client process has `client_threads` links; the memif sockets live in the run's
    /// log directory.
    Dpdk {
        client_threads: usize,
    },
}

impl Links {
    /// EAL arguments of one process of the run: no core pinning (the EAL's lcore 0 may run
    /// on any CPU this process may use), no hugepages, memory for each device's mbuf pool
    /// (about 20 MB), and its memif devices.
    fn eal(&self, process: &str, vdevs: &[String]) -> String {
        let mut eal = format!(
            "--lcores=0@({}) --no-pci --no-huge -m {} --file-prefix nm{}{process}",
            allowed_cpus(),
            64 + 24 * vdevs.len(),
            std::process::id()
        );
        for (i, vdev) in vdevs.iter().enumerate() {
            eal.push_str(&format!(" --vdev=net_memif{i},{vdev}"));
        }
        eal
    }

    /// Refuses what the switch process could not open: DPDK has room for 32 devices.
    pub fn check(&self, partitions: u32) -> Result<(), CommandError> {
        if let Links::Dpdk { client_threads } = self {
            let links = client_threads + 2 * partitions as usize;
            if links > MAX_LINKS {
                return Err(CommandError(format!(
                    "--transport dpdk joins every client thread and every partition of both \
                     servers to the switch by its own link: {links} links, more than DPDK's \
                     {MAX_LINKS} devices per process; use fewer --threads or --partitions"
                )));
            }
        }
        Ok(())
    }

    fn socket(dir: &Path, name: &str, index: usize) -> String {
        dir.join(format!("{name}{index}.sock"))
            .display()
            .to_string()
    }

    /// The switch's end of every link (memif servers), in the order hosts attach.
    fn switch_eal(&self, dir: &Path, partitions: u32) -> Option<String> {
        let Links::Dpdk { client_threads } = self else {
            return None;
        };
        let ends = (0..*client_threads)
            .map(|t| ("client", t))
            .chain((0..partitions as usize).map(|p| ("source", p)))
            .chain((0..partitions as usize).map(|p| ("destination", p)))
            .map(|(name, i)| format!("role=server,socket={}", Self::socket(dir, name, i)))
            .collect::<Vec<_>>();
        Some(self.eal("switch", &ends))
    }

    /// A host's ends of its links (memif clients): `count` devices named `name`.
    pub fn host_eal(&self, dir: &Path, name: &str, count: usize) -> Option<String> {
        let Links::Dpdk { .. } = self else {
            return None;
        };
        let ends = (0..count)
            .map(|i| format!("role=client,socket={}", Self::socket(dir, name, i)))
            .collect::<Vec<_>>();
        Some(self.eal(name, &ends))
    }
}

/// What every server of the run is started with.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub partitions: u32,
    pub group_bits: u8,
    pub shard: u16,
    pub work_capacity: Option<f64>,
    pub cores: Option<String>,
}

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped.
struct Role {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Role {
    fn spawn(
        name: &'static str,
        binary: &Path,
        args: &[String],
        logs: &Path,
    ) -> Result<Role, CommandError> {
        let log = logs.join(format!("{name}.log"));
        let file = File::create(&log)
            .map_err(|e| CommandError(format!("cannot create {}: {e}", log.display())))?;
        let mut command = Command::new(binary);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        // SAFETY: prctl is async-signal-safe; the child dies with its parent, so an aborted
        // experiment leaves no server behind.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = command.spawn().map_err(|e| {
            CommandError(format!(
                "cannot start the {name} ({}): {e}",
                binary.display()
            ))
        })?;
        Ok(Role { name, child, log })
    }

    /// Fails with the end of the role's log if it has exited.
    fn check_alive(&mut self) -> Result<(), CommandError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(CommandError(format!(
                "the {} exited ({status}); its log {}:\n{}",
                self.name,
                self.log.display(),
                tail(&self.log)
            ))),
            Err(e) => Err(CommandError(format!("cannot watch the {}: {e}", self.name))),
        }
    }

    /// SIGTERM (the role prints its final statistics), then SIGKILL if it lingers.
    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_WITHIN;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<_> = text.lines().collect();
    lines[lines.len().saturating_sub(12)..].join("\n")
}

/// The switch and both servers, running.
pub struct Processes {
    roles: Vec<Role>,
    pub logs: PathBuf,
}

impl Processes {
    /// Starts the roles and waits until each control API answers.
    pub fn start(
        addrs: &Addresses,
        links: &Links,
        settings: &ServerSettings,
        source_table_capacity: usize,
        switch_args: &[String],
    ) -> Result<Processes, CommandError> {
        let binary = std::env::current_exe()
            .map_err(|e| CommandError(format!("cannot find the netmigrate binary: {e}")))?;
        let logs = std::env::temp_dir().join(format!(
            "netmigrate-experiment-{}-{}",
            std::process::id(),
            addrs.control_of(addrs.switch).ip()
        ));
        std::fs::create_dir_all(&logs)
            .map_err(|e| CommandError(format!("cannot create {}: {e}", logs.display())))?;
        let switch_control = addrs.control_of(addrs.switch);
        let transport = match links {
            Links::Udp => "udp",
            Links::Dpdk { .. } => "dpdk",
        };
        let mut switch: Vec<String> = [
            "switch",
            "--transport",
            transport,
            "--listen",
            &addrs.switch.to_string(),
            "--control",
            &switch_control.to_string(),
            "--group-bits",
            &settings.group_bits.to_string(),
        ]
        .map(String::from)
        .to_vec();
        switch.extend_from_slice(switch_args);
        if let Some(eal) = links.switch_eal(&logs, settings.partitions) {
            switch.extend(["--eal".into(), eal]);
        }
        let memif_dir = logs.clone();
        let server = |name: &str, listen: SocketAddrV4, table: usize| {
            let mut args: Vec<String> = [
                "server",
                "--transport",
                transport,
                "--listen",
                &listen.to_string(),
                "--control",
                &addrs.control_of(listen).to_string(),
                "--partitions",
                &settings.partitions.to_string(),
                "--group-bits",
                &settings.group_bits.to_string(),
                "--shard",
                &settings.shard.to_string(),
                "--capacity",
                &table.to_string(),
            ]
            .map(String::from)
            .to_vec();
            if let Some(capacity) = settings.work_capacity {
                args.extend(["--work-capacity".into(), capacity.to_string()]);
            }
            if let Some(cores) = &settings.cores {
                args.extend(["--cores".into(), cores.clone()]);
            }
            match links.host_eal(&memif_dir, name, settings.partitions as usize) {
                Some(eal) => args.extend(["--eal".into(), eal]),
                None => args.extend(["--via".into(), addrs.switch.to_string()]),
            }
            args
        };
        let mut processes = Processes {
            roles: Vec::new(),
            logs,
        };
        // The switch first: the servers' and clients' datagrams go through it.
        processes
            .roles
            .push(Role::spawn("switch", &binary, &switch, &processes.logs)?);
        processes.wait_until_ready(switch_control, |addr| {
            crate::server::control::switch_state(addr).map(|_| ())
        })?;
        for (name, listen, table) in [
            ("source", addrs.source, source_table_capacity),
            ("destination", addrs.destination, 1024),
        ] {
            let role = Role::spawn(name, &binary, &server(name, listen, table), &processes.logs)?;
            processes.roles.push(role);
            processes.wait_until_ready(addrs.control_of(listen), |addr| {
                ControlClient::connect(addr).map(|_| ())
            })?;
        }
        Ok(processes)
    }

    fn wait_until_ready(
        &mut self,
        control: SocketAddr,
        probe: impl Fn(SocketAddr) -> Result<(), String>,
    ) -> Result<(), CommandError> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let role = self.roles.last_mut().expect("a role was just started");
            role.check_alive()?;
            match probe(control) {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(CommandError(format!(
                        "the {} did not come up within {} s: {e}",
                        role.name,
                        READY_WITHIN.as_secs()
                    )))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Fails if a role has died.
    pub fn check_alive(&mut self) -> Result<(), CommandError> {
        self.roles.iter_mut().try_for_each(Role::check_alive)
    }

    /// Stops every role and removes their logs: a run that got this far needs none. A
    /// run that fails drops `Processes` instead, which stops the roles and keeps the logs.
    pub fn stop(mut self) {
        for role in self.roles.iter_mut().rev() {
            role.stop();
        }
        let _ = std::fs::remove_dir_all(&self.logs);
    }
}
