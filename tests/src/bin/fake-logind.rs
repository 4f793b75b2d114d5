//! `fake-logind`: a stand-in for systemd-logind's sleep interface, for end-to-end tests on
//! machines without systemd (the tests' own private D-Bus daemon, never the real system bus).
//!
//! It owns `org.freedesktop.login1` on the bus `DBUS_SYSTEM_BUS_ADDRESS` names, answers
//! `Manager.Inhibit` the way logind does (the caller gets the write end of a pipe and holds the
//! lock until it closes it), and broadcasts `Manager.PrepareForSleep` when told on stdin:
//!
//! - `sleep`: `PrepareForSleep(true)`, then, like logind with delay locks taken, wait (at most
//!   5 s) for every lock to be released, printing `released after MS ms` or `lock still held`.
//! - `wake`: `PrepareForSleep(false)`.
//! - `spoof`: `PrepareForSleep(true)` from another connection, which does not own logind's name
//!   (anyone on a bus may send a signal; only logind's must count).
//!
//! On stdout: `ready` once the name is owned, `inhibit WHO WHAT MODE` for each lock taken,
//! `slept`, `woke` and `spoofed` after each broadcast. Nothing else.

use std::io::{BufRead, Write};
use std::os::fd::OwnedFd as StdFd;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use zbus::message::Type;
use zbus::{Connection, MessageStream};

const NAME: &str = "org.freedesktop.login1";
const PATH: &str = "/org/freedesktop/login1";
const MANAGER: &str = "org.freedesktop.login1.Manager";
/// logind's default `InhibitDelayMaxSec`.
const DELAY_MAX: Duration = Duration::from_secs(5);

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let conn = Connection::system().await?;
    conn.request_name(NAME).await?;
    say("ready");

    // Locks still held: the read end of each pipe, done when the holder closes its end.
    let (lock_tx, mut lock_rx) = mpsc::unbounded_channel::<StdFd>();
    let calls = {
        let conn = conn.clone();
        tokio::spawn(async move {
            let mut stream = MessageStream::from(&conn);
            while let Some(Ok(msg)) = stream.next().await {
                let header = msg.header();
                if msg.message_type() != Type::MethodCall
                    || header.interface().map(|i| i.as_str()) != Some(MANAGER)
                {
                    continue;
                }
                if header.member().map(|m| m.as_str()) != Some("Inhibit") {
                    let _ = conn
                        .reply_error(
                            &header,
                            "org.freedesktop.DBus.Error.UnknownMethod",
                            &"fake-logind answers Inhibit only",
                        )
                        .await;
                    continue;
                }
                let Ok((what, who, _why, mode)) =
                    msg.body().deserialize::<(String, String, String, String)>()
                else {
                    continue;
                };
                let Ok((read, write)) = nix::unistd::pipe() else {
                    continue;
                };
                if conn
                    .reply(&header, &(zbus::OwnedFd::from(write),))
                    .await
                    .is_ok()
                {
                    say(&format!("inhibit {who} {what} {mode}"));
                    let _ = lock_tx.send(read);
                }
            }
        })
    };

    let (line_tx, mut lines) = mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = lines.recv().await {
        match line.trim() {
            "sleep" => {
                let mut held: Vec<StdFd> = Vec::new();
                while let Ok(fd) = lock_rx.try_recv() {
                    held.push(fd);
                }
                conn.emit_signal(None::<&str>, PATH, MANAGER, "PrepareForSleep", &(true,))
                    .await?;
                let start = Instant::now();
                let mut released = true;
                for fd in held {
                    let mut pipe = tokio::fs::File::from_std(std::fs::File::from(fd));
                    let mut byte = [0u8; 1];
                    let left = DELAY_MAX.saturating_sub(start.elapsed());
                    // EOF: every copy of the write end is closed.
                    match tokio::time::timeout(left, pipe.read(&mut byte)).await {
                        Ok(Ok(0)) => {}
                        _ => released = false,
                    }
                }
                if released {
                    say(&format!(
                        "released after {} ms",
                        start.elapsed().as_millis()
                    ));
                } else {
                    say("lock still held");
                }
                say("slept");
            }
            "spoof" => {
                let other = Connection::system().await?;
                other
                    .emit_signal(None::<&str>, PATH, MANAGER, "PrepareForSleep", &(true,))
                    .await?;
                say("spoofed");
            }
            "wake" => {
                conn.emit_signal(None::<&str>, PATH, MANAGER, "PrepareForSleep", &(false,))
                    .await?;
                say("woke");
            }
            _ => {}
        }
    }
    calls.abort();
    Ok(())
}
