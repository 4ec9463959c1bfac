//! The software switch's loop: receive a burst, run each packet through the pipeline,
//! send what it became. The pipeline is shared with the control API behind a mutex that
//! only this loop takes on the fast path (uncontended unless someone reads registers).

use crate::pipeline::{Switch, SwitchConfig, SwitchSnapshot};
use dataplane::port::BURST;
use dataplane::runner::{spawn_loop, Idle, Placement};
use dataplane::{Packet, Port, PortStats};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A running software switch.
pub struct RunningSwitch {
    stop: Arc<AtomicBool>,
    pipeline: Arc<Mutex<Switch>>,
    handle: JoinHandle<PortStats>,
}

struct SwitchLoop {
    port: Box<dyn Port>,
    pipeline: Arc<Mutex<Switch>>,
    rx: Vec<Box<Packet>>,
    tx: Vec<Box<Packet>>,
    dropped: Vec<Box<Packet>>,
}

impl SwitchLoop {
    fn poll(&mut self) -> usize {
        let received = self.port.recv(&mut self.rx, BURST).unwrap_or(0);
        if received == 0 {
            return 0;
        }
        {
            let mut pipeline = self.pipeline.lock().expect("switch pipeline lock poisoned");
            for packet in self.rx.drain(..) {
                pipeline.process(packet, &mut self.tx, &mut self.dropped);
            }
        }
        for packet in self.dropped.drain(..) {
            self.port.release(packet);
        }
        // A failed send is counted by the port; senders retransmit.
        let _ = self.port.send(&mut self.tx);
        received
    }
}

/// Starts the switch on `port` (for the in-process backend, a gateway port that sees every
/// packet and sends with the original source address).
pub fn start(
    port: Box<dyn Port>,
    config: SwitchConfig,
    placement: Placement,
    idle: Idle,
) -> io::Result<RunningSwitch> {
    config.validate().map_err(io::Error::other)?;
    let stop = Arc::new(AtomicBool::new(false));
    let pipeline = Arc::new(Mutex::new(Switch::new(config)));
    let state = SwitchLoop {
        port,
        pipeline: Arc::clone(&pipeline),
        rx: Vec::with_capacity(BURST),
        tx: Vec::with_capacity(2 * BURST),
        dropped: Vec::new(),
    };
    let handle = spawn_loop(
        "switch".into(),
        placement,
        idle,
        Arc::clone(&stop),
        state,
        SwitchLoop::poll,
        |state| state.port.stats(),
    )?;
    Ok(RunningSwitch {
        stop,
        pipeline,
        handle,
    })
}

impl RunningSwitch {
    /// Counters, pairs and registers, read through the control path.
    pub fn snapshot(&self) -> SwitchSnapshot {
        self.pipeline
            .lock()
            .expect("switch pipeline lock poisoned")
            .snapshot()
    }

    /// The control API's gRPC service over this switch's pipeline.
    pub fn control_service(
        &self,
    ) -> crate::control::proto::switch_control_server::SwitchControlServer<crate::control::Service>
    {
        crate::control::Service::new(Arc::clone(&self.pipeline))
    }

    pub fn stop(self) -> (SwitchSnapshot, PortStats) {
        self.stop.store(true, Ordering::Relaxed);
        let port = self.handle.join().expect("switch loop panicked");
        let snapshot = self
            .pipeline
            .lock()
            .expect("switch pipeline lock poisoned")
            .snapshot();
        (snapshot, port)
    }
}
