//! Sleep and wake, from logind (`org.freedesktop.login1`) over the system bus, where there is
//! one.
//!
//! Before the machine sleeps logind broadcasts `PrepareForSleep(true)` and waits for every
//! program holding a *delay* inhibitor lock to close it (at most `InhibitDelayMaxSec`, 5 s by
//! default). The daemon holds one. When the signal comes, the placer holds new ASR requests
//! (they stay queued), the request in flight gets up to [`DRAIN`] to finish, and then the lock is
//! closed: the GPU suspends with no CUDA work running. `PrepareForSleep(false)` comes after the
//! wake: the placer restarts the GPU workers at once, before a stale CUDA context fails with
//! "unspecified launch failure", releases the held requests to the fresh worker, and a new lock
//! is taken for the next sleep.
//!
//! Without a system bus or logind (a container, CI, another init system) this gives up at once
//! and says so in the log; the placer then notices a sleep from the clocks alone
//! (`CLOCK_BOOTTIME` − `CLOCK_MONOTONIC`), within a second of waking.
//!
//! The bus half (connecting, the signal, the lock) is [`crate::io::logind`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use zbus::OwnedFd;

use crate::io::logind::{Logind, SleepError};
use crate::report::board::Board;
use crate::report::status::SLEEP_GOING;
use crate::supervision::placer::Placer;

/// How long the request in flight may take to finish before the machine is let sleep; well
/// within logind's default 5 s delay.
pub const DRAIN: Duration = Duration::from_secs(3);

/// Follow logind's sleep and wake for as long as the bus lasts, telling `placer`; log why it
/// stopped (or could not start).
pub async fn watch(placer: Arc<Placer>, board: Board) {
    if let Err(e) = follow(&placer, &board).await {
        let clocks = format!("{CLOCKS_ONLY}: {e}");
        crate::log_info!("sleep and wake: {clocks}");
        board.update(|s| s.sleep = Some(clocks));
    }
}

/// How a sleep is noticed without logind.
const CLOCKS_ONLY: &str = "noticed from the clocks after waking";

async fn follow(placer: &Placer, board: &Board) -> Result<(), SleepError> {
    let logind = Logind::connect().await?;
    let mut signals = logind.prepare_for_sleep().await?;
    let mut lock = take_lock(&logind, board).await;
    crate::log_info!(
        "sleep and wake: following logind{}",
        if lock.is_some() {
            ", with a delay lock to finish GPU work before sleeping"
        } else {
            ""
        }
    );
    while let Some(going) = signals.next().await {
        if going {
            board.update(|s| {
                s.sleep = Some(format!(
                    "{SLEEP_GOING} (logind): new ASR requests wait for the wake"
                ))
            });
            placer.on_sleeping();
            let idle = drain(board).await;
            if !idle {
                crate::log_warn!(
                    "going to sleep with an ASR request still running after {} s: it is retried after waking if it fails",
                    DRAIN.as_secs()
                );
            }
            // Closing the lock lets logind go on.
            drop(lock.take());
        } else {
            placer.on_woken();
            if lock.is_none() {
                lock = take_lock(&logind, board).await;
            }
        }
    }
    Err(SleepError::Closed)
}

/// Take the delay lock and say in status how sleep is followed.
async fn take_lock(logind: &Logind, board: &Board) -> Option<OwnedFd> {
    let (lock, text) = match logind.inhibit().await {
        Ok(fd) => (
            Some(fd),
            "logind: a delay lock lets GPU work finish before sleep; GPU workers restart on waking"
                .to_owned(),
        ),
        Err(e) => {
            crate::log_info!("sleep and wake: logind gave no delay lock ({e}); GPU work may still be running as the machine sleeps");
            (
                None,
                format!("logind, without a delay lock ({e}); GPU workers restart on waking"),
            )
        }
    };
    board.update(|s| s.sleep = Some(text));
    lock
}

/// Wait until the ASR worker is not busy with a request, at most [`DRAIN`]; whether it is idle.
async fn drain(board: &Board) -> bool {
    let start = Instant::now();
    loop {
        let busy = board
            .snapshot()
            .workers
            .iter()
            .any(|w| w.role == "asr" && w.state == "busy");
        if !busy {
            return true;
        }
        if start.elapsed() >= DRAIN {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
