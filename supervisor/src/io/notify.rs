//! The `sd_notify` protocol, spoken directly: one datagram of `KEY=VALUE` lines to the socket
//! named by `$NOTIFY_SOCKET`. Linking libsystemd for this would tie the binary to a shared
//! library for four short messages.
//!
//! Outside systemd (no `$NOTIFY_SOCKET`) every call is a no-op, so the daemon calls these
//! unconditionally. Sending never blocks the caller for long: datagrams to a Unix socket either
//! go or fail at once.
//!
//! Workers should not inherit `$NOTIFY_SOCKET` (`Command::env_remove("NOTIFY_SOCKET")`): with
//! `NotifyAccess=main` systemd ignores them anyway, but a worker that spoke the protocol would
//! be noise in the journal.

use std::ffi::OsStr;
use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Sends readiness, status and watchdog notifications to systemd, or nothing when not under it.
#[derive(Debug)]
pub struct Notifier {
    /// The unbound sending socket and where to send; `None` when not under systemd.
    target: Option<(UnixDatagram, SocketAddr)>,
    /// The watchdog interval systemd asked for, if it is ours.
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From the process environment: `$NOTIFY_SOCKET`, `$WATCHDOG_USEC`, `$WATCHDOG_PID`.
    ///
    /// An unusable `$NOTIFY_SOCKET` (empty, not absolute, cannot create a socket) gives a
    /// no-op notifier plus the reason, for the caller to log: systemd will then time the start
    /// out, which is the right outcome for a misconfiguration, but it should not crash us.
    pub fn from_env() -> (Notifier, Option<String>) {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        Self::from_values(
            socket.as_deref(),
            usec.as_deref(),
            pid.as_deref(),
            std::process::id(),
        )
    }

    /// As [`Notifier::from_env`], from explicit values (tests use this so that they do not
    /// race on the process environment). `our_pid` is compared with `watchdog_pid`.
    pub fn from_values(
        notify_socket: Option<&OsStr>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        our_pid: u32,
    ) -> (Notifier, Option<String>) {
        let watchdog = watchdog_interval_from(watchdog_usec, watchdog_pid, our_pid);
        let Some(name) = notify_socket.filter(|s| !s.is_empty()) else {
            return (
                Notifier {
                    target: None,
                    watchdog,
                },
                None,
            );
        };
        match target_for(name) {
            Ok(target) => (
                Notifier {
                    target: Some(target),
                    watchdog,
                },
                None,
            ),
            Err(e) => (
                Notifier {
                    target: None,
                    watchdog,
                },
                Some(format!(
                    "NOTIFY_SOCKET={}: {e}; not notifying systemd",
                    name.to_string_lossy()
                )),
            ),
        }
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier {
            target: None,
            watchdog: None,
        }
    }

    /// Whether messages go anywhere (we run under a `Type=notify` service).
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// `READY=1`: startup is finished (audio open, workers loaded, control socket listening).
    pub fn ready(&self) -> io::Result<()> {
        self.send("READY=1")
    }

    /// `STATUS=…`: one line shown by `systemctl --user status swictation`. Newlines would end
    /// the field early, so they become spaces.
    pub fn status(&self, text: &str) -> io::Result<()> {
        self.send(&format!("STATUS={}", text.replace(['\n', '\r'], " ")))
    }

    /// `WATCHDOG=1`: we are alive. Send it every [`Notifier::watchdog_ping_interval`], from the
    /// main loop (not from a separate timer task, which would keep pinging while the loop hangs).
    pub fn watchdog(&self) -> io::Result<()> {
        self.send("WATCHDOG=1")
    }

    /// `STOPPING=1`: an orderly shutdown has begun.
    pub fn stopping(&self) -> io::Result<()> {
        self.send("STOPPING=1")
    }

    /// `EXTEND_TIMEOUT_USEC=…`: ask for more time to start or stop (a slow first model load).
    pub fn extend_timeout(&self, by: Duration) -> io::Result<()> {
        self.send(&format!("EXTEND_TIMEOUT_USEC={}", by.as_micros()))
    }

    /// The watchdog timeout systemd enforces (`WatchdogSec=`), if it applies to this process:
    /// `$WATCHDOG_USEC` set and positive, and `$WATCHDOG_PID` either unset or our pid.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// How often to send [`Notifier::watchdog`]: half the timeout, as sd_watchdog_enabled(3)
    /// recommends, so that one late tick is not fatal.
    pub fn watchdog_ping_interval(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    /// Sends one raw notification datagram (`KEY=VALUE` lines). A no-op when disabled.
    pub fn send(&self, message: &str) -> io::Result<()> {
        match &self.target {
            None => Ok(()),
            Some((sock, addr)) => sock.send_to_addr(message.as_bytes(), addr).map(drop),
        }
    }
}

/// Resolves `$NOTIFY_SOCKET`: an absolute path, or `@name` for the abstract namespace.
fn target_for(name: &OsStr) -> io::Result<(UnixDatagram, SocketAddr)> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = name.as_bytes();
    let addr = match bytes.split_first() {
        Some((b'@', abstract_name)) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(abstract_name)?
        }
        Some((b'/', _)) => SocketAddr::from_pathname(name)?,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "neither an absolute path nor an abstract name (@…)",
            ))
        }
    };
    Ok((UnixDatagram::unbound()?, addr))
}

fn watchdog_interval_from(usec: Option<&str>, pid: Option<&str>, our_pid: u32) -> Option<Duration> {
    // systemd sets WATCHDOG_PID so that a child that inherited the environment does not think
    // the watchdog is its job; if it is set and not us, it is not ours.
    if let Some(pid) = pid.filter(|p| !p.is_empty()) {
        if pid.trim().parse::<u32>().ok() != Some(our_pid) {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive_all(sock: &UnixDatagram) -> Vec<String> {
        sock.set_nonblocking(true).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    #[test]
    fn sends_the_messages_in_order_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let (n, warning) = Notifier::from_values(Some(path.as_os_str()), None, None, 1);
        assert!(warning.is_none());
        assert!(n.is_enabled());
        n.ready().unwrap();
        n.status("listening on\nmic").unwrap();
        n.watchdog().unwrap();
        n.extend_timeout(Duration::from_secs(2)).unwrap();
        n.stopping().unwrap();
        assert_eq!(
            receive_all(&server),
            [
                "READY=1",
                "STATUS=listening on mic",
                "WATCHDOG=1",
                "EXTEND_TIMEOUT_USEC=2000000",
                "STOPPING=1"
            ]
        );
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("swictation-notify-test-{}", std::process::id());
        let server =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let at = format!("@{name}");
        let (n, warning) = Notifier::from_values(Some(OsStr::new(&at)), None, None, 1);
        assert!(warning.is_none());
        n.ready().unwrap();
        n.status("ok").unwrap();
        assert_eq!(receive_all(&server), ["READY=1", "STATUS=ok"]);
    }

    #[test]
    fn absent_socket_is_a_silent_no_op() {
        let (n, warning) = Notifier::from_values(None, None, None, 1);
        assert!(warning.is_none() && !n.is_enabled());
        n.ready().unwrap();
        n.watchdog().unwrap();
        let (n, _) = Notifier::from_values(Some(OsStr::new("")), None, None, 1);
        assert!(!n.is_enabled());
        assert!(!Notifier::disabled().is_enabled());
    }

    #[test]
    fn a_relative_socket_is_refused_with_a_reason() {
        let (n, warning) = Notifier::from_values(Some(OsStr::new("relative.sock")), None, None, 1);
        assert!(!n.is_enabled());
        assert!(warning.unwrap().contains("relative.sock"));
    }

    #[test]
    fn a_vanished_listener_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone.sock");
        let (n, _) = Notifier::from_values(Some(path.as_os_str()), None, None, 1);
        assert!(n.ready().is_err());
    }

    #[test]
    fn watchdog_interval_honours_watchdog_pid() {
        let w = |usec, pid| {
            Notifier::from_values(None, usec, pid, 42)
                .0
                .watchdog_interval()
        };
        assert_eq!(w(Some("30000000"), None), Some(Duration::from_secs(30)));
        assert_eq!(
            w(Some("30000000"), Some("42")),
            Some(Duration::from_secs(30))
        );
        assert_eq!(w(Some("30000000"), Some("43")), None);
        assert_eq!(w(Some("30000000"), Some("junk")), None);
        assert_eq!(w(Some("0"), None), None);
        assert_eq!(w(Some("soon"), None), None);
        assert_eq!(w(None, Some("42")), None);
        let n = Notifier::from_values(None, Some("30000000"), None, 42).0;
        assert_eq!(n.watchdog_ping_interval(), Some(Duration::from_secs(15)));
    }
}
