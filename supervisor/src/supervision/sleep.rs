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
//! The system bus is the one `DBUS_SYSTEM_BUS_ADDRESS` names, or the standard socket: tests
//! point it at a private bus with a stand-in logind.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use zbus::message::Type;
use zbus::{Connection, MatchRule, MessageStream, OwnedFd};

use crate::report::board::Board;
use crate::report::status::SLEEP_GOING;
use crate::supervision::placer::Placer;

/// logind's bus name, object and interface.
pub const LOGIND: &str = "org.freedesktop.login1";
const LOGIND_PATH: &str = "/org/freedesktop/login1";
const MANAGER: &str = "org.freedesktop.login1.Manager";

/// How long the request in flight may take to finish before the machine is let sleep; well
/// within logind's default 5 s delay.
pub const DRAIN: Duration = Duration::from_secs(3);

/// Why sleep and wake cannot be followed through logind.
#[derive(Debug, thiserror::Error)]
pub enum SleepError {
    /// No system bus to connect to.
    #[error("no system bus ({0})")]
    NoBus(zbus::Error),
    /// The bus answers but logind is not on it.
    #[error("logind is not running on the system bus")]
    NoLogind,
    /// The bus refused the subscription.
    #[error("could not follow logind's PrepareForSleep: {0}")]
    Subscribe(zbus::Error),
    /// The connection ended.
    #[error("the system bus connection closed")]
    Closed,
}

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

/// Whether sleep and wake can be followed through logind here, in words: a delay lock is taken
/// and given back at once. For `swictation doctor`.
pub async fn probe() -> Result<String, SleepError> {
    let conn = Connection::system().await.map_err(SleepError::NoBus)?;
    if !logind_present(&conn).await {
        return Err(SleepError::NoLogind);
    }
    Ok(match inhibit(&conn).await {
        Ok(_) => "logind answers, and gives the delay lock that lets GPU work finish before sleep".into(),
        Err(e) => format!("logind answers, but gives no delay lock ({e}): GPU work may still run as the machine sleeps"),
    })
}

async fn follow(placer: &Placer, board: &Board) -> Result<(), SleepError> {
    let conn = Connection::system().await.map_err(SleepError::NoBus)?;
    if !logind_present(&conn).await {
        return Err(SleepError::NoLogind);
    }
    let rule = MatchRule::builder()
        .msg_type(Type::Signal)
        .sender(LOGIND)
        .path(LOGIND_PATH)
        .interface(MANAGER)
        .member("PrepareForSleep")
        .build()
        .map_err(SleepError::Subscribe)?;
    let mut signals = MessageStream::for_match_rule(rule, &conn, std::num::NonZeroUsize::new(16))
        .await
        .map_err(SleepError::Subscribe)?;
    let mut lock = take_lock(&conn, board).await;
    crate::log_info!(
        "sleep and wake: following logind{}",
        if lock.is_some() {
            ", with a delay lock to finish GPU work before sleeping"
        } else {
            ""
        }
    );
    while let Some(message) = signals.next().await {
        let Ok(message) = message else { continue };
        let Ok(going) = message.body().deserialize::<bool>() else {
            continue;
        };
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
                lock = take_lock(&conn, board).await;
            }
        }
    }
    Err(SleepError::Closed)
}

/// Take the delay lock and say in status how sleep is followed.
async fn take_lock(conn: &Connection, board: &Board) -> Option<OwnedFd> {
    let (lock, text) = match inhibit(conn).await {
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

/// Whether someone owns logind's name on the bus.
async fn logind_present(conn: &Connection) -> bool {
    let reply = conn
        .call_method(
            Some("org.freedesktop.DBus"),
            "/org/freedesktop/DBus",
            Some("org.freedesktop.DBus"),
            "NameHasOwner",
            &(LOGIND,),
        )
        .await;
    reply
        .ok()
        .and_then(|m| m.body().deserialize::<bool>().ok())
        .unwrap_or(false)
}

/// Take a delay lock on sleep.
async fn inhibit(conn: &Connection) -> zbus::Result<OwnedFd> {
    let reply = conn
        .call_method(
            Some(LOGIND),
            LOGIND_PATH,
            Some(MANAGER),
            "Inhibit",
            &(
                "sleep",
                "swictation",
                "finishing speech recognition and releasing the GPU before sleep",
                "delay",
            ),
        )
        .await;
    reply.and_then(|m| m.body().deserialize::<OwnedFd>())
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
