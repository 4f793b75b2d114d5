//! The board: everything the daemon reports, shared by every task. Supervision writes to it;
//! the control socket, `swictation status` and the notifier read it.

use std::sync::Arc;

use swictation_proto::Role;
use tokio::sync::{broadcast, watch};

use super::status::{Event, Status, WorkerStatus};

/// Everything the daemon reports, shared by every task: the status document and the event stream.
#[derive(Clone)]
pub struct Board {
    status: Arc<watch::Sender<Status>>,
    events: broadcast::Sender<Event>,
}

impl Board {
    /// A board starting from [`Status::starting`].
    pub fn new() -> Self {
        let (status, _) = watch::channel(Status::starting());
        let (events, _) = broadcast::channel(1024);
        Self {
            status: Arc::new(status),
            events,
        }
    }

    /// A receiver of status snapshots.
    pub fn subscribe_status(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// The event sender (for the control socket's subscribers).
    pub fn events(&self) -> broadcast::Sender<Event> {
        self.events.clone()
    }

    /// The current status.
    pub fn snapshot(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Change the status in place.
    pub fn update(&self, f: impl FnOnce(&mut Status)) {
        self.status.send_modify(f);
    }

    /// Change one worker's entry (created if missing).
    pub fn update_worker(&self, role: Role, f: impl FnOnce(&mut WorkerStatus)) {
        self.status.send_modify(|s| {
            let i = match s.workers.iter().position(|w| w.role == role.as_str()) {
                Some(i) => i,
                None => {
                    s.workers.push(WorkerStatus {
                        role: role.as_str().into(),
                        ..WorkerStatus::default()
                    });
                    s.workers.sort_by(|a, b| b.role.cmp(&a.role));
                    s.workers
                        .iter()
                        .position(|w| w.role == role.as_str())
                        .unwrap_or(0)
                }
            };
            f(&mut s.workers[i]);
        });
    }

    /// Publish an event (dropped if nobody listens).
    pub fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }
}

impl Default for Board {
    fn default() -> Self {
        Self::new()
    }
}
