//! Child processes of a test: killed when the test ends, whatever its outcome, and waited for
//! within a bound.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Child processes of one test, killed (SIGKILL) when it ends, whatever its outcome.
pub struct Children(pub Vec<Child>);

impl Children {
    /// Kills every child with SIGKILL (`Child::kill`), as a crash would stop it.
    #[allow(dead_code)] // Not every test file kills its children before the end.
    pub fn kill_all(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.0.clear();
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits for `child` to exit; kills it and panics if it runs past `limit`.
pub fn wait_within(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `netmigrate ARGS`, its output discarded.
#[allow(dead_code)] // Not every test file starts processes this way.
pub fn netmigrate(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_netmigrate"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("netmigrate starts")
}
