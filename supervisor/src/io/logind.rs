//! logind (`org.freedesktop.login1`) over the system bus: the mechanics of following sleep and
//! wake. What to do about them is [`crate::supervision::sleep`]'s.
//!
//! The system bus is the one `DBUS_SYSTEM_BUS_ADDRESS` names, or the standard socket: tests
//! point it at a private bus with a stand-in logind.

use futures_util::{Stream, StreamExt};
use zbus::message::Type;
use zbus::{Connection, MatchRule, MessageStream, OwnedFd};

/// logind's bus name, object and interface.
pub const LOGIND: &str = "org.freedesktop.login1";
const LOGIND_PATH: &str = "/org/freedesktop/login1";
const MANAGER: &str = "org.freedesktop.login1.Manager";

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

/// A connection to the system bus on which logind answers.
pub struct Logind {
    conn: Connection,
}

impl Logind {
    /// Connect, and check that logind is there.
    pub async fn connect() -> Result<Self, SleepError> {
        let conn = Connection::system().await.map_err(SleepError::NoBus)?;
        if !logind_present(&conn).await {
            return Err(SleepError::NoLogind);
        }
        Ok(Self { conn })
    }

    /// logind's `PrepareForSleep` signals from now on: `true` before a sleep, `false` after the
    /// wake. Only logind's own count (the match rule names its bus name).
    pub async fn prepare_for_sleep(&self) -> Result<impl Stream<Item = bool>, SleepError> {
        let rule = MatchRule::builder()
            .msg_type(Type::Signal)
            .sender(LOGIND)
            .path(LOGIND_PATH)
            .interface(MANAGER)
            .member("PrepareForSleep")
            .build()
            .map_err(SleepError::Subscribe)?;
        let signals =
            MessageStream::for_match_rule(rule, &self.conn, std::num::NonZeroUsize::new(16))
                .await
                .map_err(SleepError::Subscribe)?;
        Ok(signals.filter_map(|m| {
            std::future::ready(m.ok().and_then(|m| m.body().deserialize::<bool>().ok()))
        }))
    }

    /// Take a delay lock on sleep: held until the descriptor is closed.
    pub async fn inhibit(&self) -> zbus::Result<OwnedFd> {
        let reply = self
            .conn
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

/// Whether sleep and wake can be followed through logind here, in words: a delay lock is taken
/// and given back at once. For `swictation doctor`.
pub async fn probe() -> Result<String, SleepError> {
    let logind = Logind::connect().await?;
    Ok(match logind.inhibit().await {
        Ok(_) => "logind answers, and gives the delay lock that lets GPU work finish before sleep".into(),
        Err(e) => format!("logind answers, but gives no delay lock ({e}): GPU work may still run as the machine sleeps"),
    })
}
