//! The experiment's roles as separate processes (`--transport udp`): a `netmigrate switch`
//! and two `netmigrate server`s on loopback, reached through the kernel-UDP overlay and
//! driven over their control APIs. Each run takes its own 127.x.y.0/24, so runs (and
//! tests) side by side do not collide.

use super::super::CommandError;
use crate::control::ControlClient;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DATA_PORT: u16 = 7100;
const SWITCH_PORT: u16 = 9000;
const CONTROL_PORT: u16 = 50051;
const READY_WITHIN: Duration = Duration::from_secs(20);
const STOP_WITHIN: Duration = Duration::from_secs(10);

/// Where each role of one run lives.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub client: SocketAddrV4,
    pub switch: SocketAddrV4,
    pub source: SocketAddrV4,
    pub destination: SocketAddrV4,
}

impl Addresses {
    /// A /24 of its own inside 127/8 for this process's run number `run`.
    pub fn for_run(run: u32) -> Addresses {
        let id = std::process::id().wrapping_mul(31).wrapping_add(run);
        let (a, b) = (1 + (id % 250) as u8, ((id / 250) % 250) as u8);
        let host = |last| Ipv4Addr::new(127, a, b, last);
        Addresses {
            client: SocketAddrV4::new(host(1), 0),
            switch: SocketAddrV4::new(host(254), SWITCH_PORT),
            source: SocketAddrV4::new(host(2), DATA_PORT),
            destination: SocketAddrV4::new(host(3), DATA_PORT),
        }
    }

    pub fn control_of(data: SocketAddrV4) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(*data.ip(), CONTROL_PORT))
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
        settings: &ServerSettings,
        source_table_capacity: usize,
        switch_args: &[String],
    ) -> Result<Processes, CommandError> {
        let binary = std::env::current_exe()
            .map_err(|e| CommandError(format!("cannot find the netmigrate binary: {e}")))?;
        let logs = std::env::temp_dir().join(format!(
            "netmigrate-experiment-{}-{}",
            std::process::id(),
            addrs.switch.ip()
        ));
        std::fs::create_dir_all(&logs)
            .map_err(|e| CommandError(format!("cannot create {}: {e}", logs.display())))?;
        let switch_control = Addresses::control_of(addrs.switch);
        let mut switch: Vec<String> = [
            "switch",
            "--transport",
            "udp",
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
        let server = |listen: SocketAddrV4, table: usize| {
            let mut args: Vec<String> = [
                "server",
                "--transport",
                "udp",
                "--listen",
                &listen.to_string(),
                "--via",
                &addrs.switch.to_string(),
                "--control",
                &Addresses::control_of(listen).to_string(),
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
            crate::control::switch_state(addr).map(|_| ())
        })?;
        for (name, listen, table) in [
            ("source", addrs.source, source_table_capacity),
            ("destination", addrs.destination, 1024),
        ] {
            let role = Role::spawn(name, &binary, &server(listen, table), &processes.logs)?;
            processes.roles.push(role);
            processes.wait_until_ready(Addresses::control_of(listen), |addr| {
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
