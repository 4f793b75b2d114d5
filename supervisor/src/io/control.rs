//! The control socket: how `swictation status|toggle|pause|resume|restart|stop|subscribe` talk
//! to the running daemon.
//!
//! A Unix stream socket at `$XDG_RUNTIME_DIR/swictation/control.sock` (or
//! `/tmp/swictation-$UID/control.sock` without a runtime dir), in a directory of mode 0700,
//! itself mode 0600, and every connection's peer uid checked with `SO_PEERCRED`: transcripts
//! flow through `subscribe`, so only the daemon's own user may connect (root included: root
//! can read our memory anyway, but it should not get dictation by accident via a socket).
//!
//! Protocol: JSON lines. Each request is one object `{"v":1,"cmd":"…"}` (`restart` also takes
//! `"role":"vad"|"asr"`), answered by one line `{"v":1,"ok":true,…}` or
//! `{"v":1,"ok":false,"error":"…"}`. A bad request gets an error line and the connection stays
//! open for the next one. `subscribe` answers `{"v":1,"ok":true,"subscribed":true}` and then
//! streams [`Event`]s, one JSON line each, until the client disconnects.
//!
//! The server never waits on a worker: `status` is answered from the `watch` snapshot the main
//! loop publishes, and commands go to the main loop as [`ControlCommand`]s, whose reply it
//! sends at once (the work they start, such as a restart, shows up in status and events).

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Map, Value};
use swictation_proto::Role;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::report::status::{Event, Status};

/// The protocol version this daemon speaks (`"v"` in every message).
pub const PROTOCOL_VERSION: u64 = 1;

/// Longest request line accepted. Requests are tiny; this only bounds memory against a client
/// that sends bytes without a newline.
const MAX_LINE: usize = 64 * 1024;

/// How long a connection waits for the main loop to take and answer a command. The loop answers
/// immediately, so hitting this means it is stuck, and the client should hear so.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client waits for an answer to a request.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The commands that change what the daemon does (everything but `status` and `subscribe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Pause if listening, resume if paused.
    Toggle,
    /// Stop transcribing (audio is discarded).
    Pause,
    /// Start transcribing again.
    Resume,
    /// Restart one worker (it reloads its model).
    Restart(Role),
    /// Shut the daemon down.
    Stop,
    /// A push-to-talk key went down or up (`"key":"down"|"up"`).
    Ptt(swictation_policy::ptt::Key),
}

impl Command {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Toggle => "toggle",
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Restart(_) => "restart",
            Command::Stop => "stop",
            Command::Ptt(_) => "ptt",
        }
    }
}

/// The main loop's answer to a command: fields to add to the `ok` response (e.g.
/// `{"state":"paused"}`; may be empty), or an error message for the client.
pub type CommandReply = Result<Map<String, Value>, String>;

/// A command from a control client, for the daemon's main loop. Answer it with
/// [`ControlCommand::respond`] without waiting on workers.
#[derive(Debug)]
pub struct ControlCommand {
    /// What was asked.
    pub command: Command,
    /// Where the answer goes.
    pub reply: oneshot::Sender<CommandReply>,
}

impl ControlCommand {
    /// Sends the answer. A client that has gone away is not an error.
    pub fn respond(self, reply: CommandReply) {
        let _ = self.reply.send(reply);
    }
}

/// Errors the CLI side of the socket reports.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Nothing is listening at the socket.
    #[error(
        "swictation is not running (no daemon at {}): start it with `systemctl --user start swictation` or `swictation run`",
        path.display()
    )]
    NotRunning {
        /// The socket tried.
        path: PathBuf,
    },
    /// Talking to the socket failed. (The I/O error is part of the message, not a separate
    /// source, so error chains do not print it twice.)
    #[error("control socket {}: {error}", path.display())]
    Io {
        /// The socket.
        path: PathBuf,
        /// What failed.
        error: io::Error,
    },
    /// The daemon's answer was not the protocol.
    #[error("unexpected answer from the daemon: {0}")]
    Protocol(String),
    /// The daemon answered `ok: false`.
    #[error("{0}")]
    Daemon(String),
}

/// The directory the socket lives in: `$XDG_RUNTIME_DIR/swictation`, else
/// `/tmp/swictation-$UID` (the runtime dir is per-user and private; /tmp is neither, which is
/// why [`prepare_dir`] checks ownership).
pub fn socket_dir() -> PathBuf {
    swictation_proto::paths::runtime_dir()
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/swictation-{}", nix::unistd::geteuid())))
}

/// The default socket path, `socket_dir()/control.sock`.
pub fn socket_path() -> PathBuf {
    socket_dir().join("control.sock")
}

/// Creates `dir` (mode 0700) if needed and makes sure it is a real directory owned by us with
/// mode 0700, fixing the mode if it is looser. Under /tmp someone else could have created it
/// first; then we refuse rather than put our socket in their directory.
pub fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let meta =
        std::fs::symlink_metadata(dir).with_context(|| format!("checking {}", dir.display()))?;
    if !meta.file_type().is_dir() {
        bail!(
            "{} is not a directory (a symlink?); remove it",
            dir.display()
        );
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        bail!(
            "{} belongs to uid {}, not to us (uid {me}); remove it",
            dir.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o7777 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("setting mode 0700 on {}", dir.display()))?;
    }
    Ok(())
}

/// Whether a peer with `peer_uid` may use a daemon running as `our_uid`: same user only.
fn peer_allowed(peer_uid: u32, our_uid: u32) -> Result<(), String> {
    if peer_uid == our_uid {
        Ok(())
    } else {
        Err(format!(
            "permission denied: uid {peer_uid} may not control the daemon of uid {our_uid}"
        ))
    }
}

/// The bound control socket. Dropping it removes the socket file (if it is still ours).
#[derive(Debug)]
pub struct ControlListener {
    listener: UnixListener,
    path: PathBuf,
    /// (device, inode) of the socket file we created, so that drop never deletes a socket a
    /// newer daemon put in its place.
    identity: (u64, u64),
}

impl ControlListener {
    /// Prepares the directory and binds the socket at `path` (mode 0600). A socket file left by
    /// a dead daemon is replaced; a live daemon there is an error naming its pid. Must be called
    /// inside a Tokio runtime.
    pub fn bind(path: &Path) -> anyhow::Result<ControlListener> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        prepare_dir(dir)?;
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                bail!("{} exists and is not a socket; remove it", path.display())
            }
            Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
                Ok(live) => {
                    let pid = nix::sys::socket::getsockopt(
                        &live,
                        nix::sys::socket::sockopt::PeerCredentials,
                    )
                    .map(|c| c.pid().to_string())
                    .unwrap_or_else(|_| "unknown".to_owned());
                    bail!(
                        "swictation is already running (pid {pid}, control socket {})",
                        path.display()
                    )
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    // Nobody listens: a daemon died without cleaning up. Replace the file.
                    match std::fs::remove_file(path) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => {
                            return Err(e)
                                .with_context(|| format!("removing stale {}", path.display()))
                        }
                        _ => {}
                    }
                }
                Err(e) => return Err(e).with_context(|| format!("probing {}", path.display())),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("checking {}", path.display())),
        }
        let listener =
            UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
        // Between bind and chmod the file has the umask's mode, but the 0700 directory already
        // keeps everyone else out; the chmod and the peer check are defence in depth.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("setting mode 0600 on {}", path.display()))?;
        let meta = std::fs::symlink_metadata(path)
            .with_context(|| format!("checking {}", path.display()))?;
        Ok(ControlListener {
            listener,
            path: path.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts connections forever, each served on its own task. Returns only on an accept
    /// error that is not about one connection.
    pub async fn run(
        self,
        status: watch::Receiver<Status>,
        commands: mpsc::Sender<ControlCommand>,
        events: broadcast::Sender<Event>,
    ) -> anyhow::Result<()> {
        let our_uid = nix::unistd::geteuid().as_raw();
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                // Out of file descriptors and the like: transient, and one connection's
                // problem must not take the control socket down. Back off briefly.
                Err(e) if is_transient_accept_error(&e) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("accepting on {}", self.path.display()))
                }
            };
            let (status, commands, events) = (status.clone(), commands.clone(), events.clone());
            tokio::spawn(async move {
                // A failed connection only concerns its client.
                let _ = handle_connection(stream, our_uid, status, commands, events).await;
            });
        }
    }
}

impl Drop for ControlListener {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.identity {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc_errno::EMFILE
                | libc_errno::ENFILE
                | libc_errno::ENOBUFS
                | libc_errno::ENOMEM
                | libc_errno::ECONNABORTED
        )
    ) || e.kind() == io::ErrorKind::Interrupted
}

/// The errno values [`is_transient_accept_error`] needs, via nix (no direct libc dependency).
mod libc_errno {
    use nix::errno::Errno;
    pub const EMFILE: i32 = Errno::EMFILE as i32;
    pub const ENFILE: i32 = Errno::ENFILE as i32;
    pub const ENOBUFS: i32 = Errno::ENOBUFS as i32;
    pub const ENOMEM: i32 = Errno::ENOMEM as i32;
    pub const ECONNABORTED: i32 = Errno::ECONNABORTED as i32;
}

/// Binds the control socket at `listener_path` and serves it forever (see
/// [`ControlListener::bind`] and [`ControlListener::run`]; use those directly to know when the
/// socket is listening, e.g. before telling systemd `READY=1`).
pub async fn serve(
    listener_path: &Path,
    status: watch::Receiver<Status>,
    commands: mpsc::Sender<ControlCommand>,
    events: broadcast::Sender<Event>,
) -> anyhow::Result<()> {
    ControlListener::bind(listener_path)?
        .run(status, commands, events)
        .await
}

/// A parsed request.
#[derive(Debug, PartialEq)]
enum Request {
    Status,
    Subscribe,
    Do(Command),
}

const KNOWN_COMMANDS: &str = "status, toggle, pause, resume, ptt, restart, stop, subscribe";

fn parse_request(line: &str) -> Result<Request, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("malformed JSON: {e}"))?;
    let obj = v
        .as_object()
        .ok_or("a request must be a JSON object, e.g. {\"v\":1,\"cmd\":\"status\"}")?;
    match obj.get("v") {
        None => return Err(format!("missing protocol version: send {{\"v\":{PROTOCOL_VERSION},\"cmd\":…}}")),
        Some(v) if v.as_u64() == Some(PROTOCOL_VERSION) => {}
        Some(v) => {
            return Err(format!(
                "unsupported protocol version {v}: this daemon speaks v{PROTOCOL_VERSION} (is the CLI from another swictation version?)"
            ))
        }
    }
    let cmd = match obj.get("cmd") {
        Some(Value::String(s)) => s.as_str(),
        _ => return Err(format!("missing \"cmd\" (one of: {KNOWN_COMMANDS})")),
    };
    Ok(match cmd {
        "status" => Request::Status,
        "subscribe" => Request::Subscribe,
        "toggle" => Request::Do(Command::Toggle),
        "pause" => Request::Do(Command::Pause),
        "resume" => Request::Do(Command::Resume),
        "stop" => Request::Do(Command::Stop),
        "ptt" => Request::Do(Command::Ptt(match obj.get("key").and_then(Value::as_str) {
            Some("down" | "press") => swictation_policy::ptt::Key::Down,
            Some("up" | "release") => swictation_policy::ptt::Key::Up,
            Some(other) => {
                return Err(format!(
                    "unknown key event `{other}`: ptt takes \"key\": \"down\" or \"up\""
                ))
            }
            None => return Err("ptt needs \"key\": \"down\" or \"up\"".to_owned()),
        })),
        "restart" => Request::Do(Command::Restart(
            match obj.get("role").and_then(Value::as_str) {
                Some("vad") => Role::Vad,
                Some("asr") => Role::Asr,
                Some(other) => {
                    return Err(format!(
                        "unknown role `{other}`: restart takes \"role\": \"vad\" or \"asr\""
                    ))
                }
                None => return Err("restart needs \"role\": \"vad\" or \"asr\"".to_owned()),
            },
        )),
        other => {
            return Err(format!(
                "unknown command `{other}` (known: {KNOWN_COMMANDS})"
            ))
        }
    })
}

fn ok_response(fields: Map<String, Value>) -> Value {
    let mut m = fields;
    m.insert("v".into(), json!(PROTOCOL_VERSION));
    m.insert("ok".into(), json!(true));
    Value::Object(m)
}

fn error_response(message: &str) -> Value {
    json!({ "v": PROTOCOL_VERSION, "ok": false, "error": message })
}

async fn write_json<W: tokio::io::AsyncWrite + Unpin>(w: &mut W, v: &Value) -> io::Result<()> {
    let mut line = serde_json::to_vec(v).map_err(io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await?;
    w.flush().await
}

/// One line from the peer.
enum Line {
    Text(String),
    TooLong,
    Eof,
}

async fn read_line<R: AsyncBufRead + Unpin>(rd: &mut R, buf: &mut Vec<u8>) -> io::Result<Line> {
    buf.clear();
    let n = (&mut *rd)
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', buf)
        .await?;
    if n == 0 {
        return Ok(Line::Eof);
    }
    if buf.last() != Some(&b'\n') && buf.len() > MAX_LINE {
        return Ok(Line::TooLong);
    }
    Ok(Line::Text(String::from_utf8_lossy(buf).into_owned()))
}

async fn handle_connection(
    stream: UnixStream,
    our_uid: u32,
    status: watch::Receiver<Status>,
    commands: mpsc::Sender<ControlCommand>,
    events: broadcast::Sender<Event>,
) -> io::Result<()> {
    let peer = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| format!("cannot identify the peer (SO_PEERCRED): {e}"))
        .and_then(|c| peer_allowed(c.uid(), our_uid));
    let (rd, mut wr) = stream.into_split();
    if let Err(refusal) = peer {
        return write_json(&mut wr, &error_response(&refusal)).await;
    }
    let mut rd = BufReader::new(rd);
    let mut buf = Vec::new();
    loop {
        let line = match read_line(&mut rd, &mut buf).await? {
            Line::Eof => return Ok(()),
            Line::TooLong => {
                // The rest of the stream cannot be re-synchronised to a line boundary reliably.
                return write_json(
                    &mut wr,
                    &error_response(&format!("request longer than {MAX_LINE} bytes")),
                )
                .await;
            }
            Line::Text(t) => t,
        };
        if line.trim().is_empty() {
            continue;
        }
        let response = match parse_request(&line) {
            Err(msg) => error_response(&msg),
            Ok(Request::Status) => {
                // Clone out of the borrow before any await: the watch lock must not be held.
                let snapshot = status.borrow().clone();
                match serde_json::to_value(&snapshot) {
                    Ok(s) => ok_response(Map::from_iter([("status".to_owned(), s)])),
                    Err(e) => error_response(&format!("cannot encode the status: {e}")),
                }
            }
            Ok(Request::Subscribe) => return stream_events(rd, wr, events.subscribe()).await,
            Ok(Request::Do(command)) => dispatch(&commands, command).await,
        };
        write_json(&mut wr, &response).await?;
    }
}

/// Hands `command` to the main loop and waits (bounded) for its answer.
async fn dispatch(commands: &mpsc::Sender<ControlCommand>, command: Command) -> Value {
    let (reply, answer) = oneshot::channel();
    match tokio::time::timeout(
        REPLY_TIMEOUT,
        commands.send(ControlCommand { command, reply }),
    )
    .await
    {
        Err(_) => {
            return error_response("the daemon is busy (its command queue is full); try again")
        }
        Ok(Err(_)) => return error_response("the daemon is shutting down"),
        Ok(Ok(())) => {}
    }
    match tokio::time::timeout(REPLY_TIMEOUT, answer).await {
        Err(_) => error_response(&format!(
            "the daemon did not answer `{}` within {} s",
            command.as_str(),
            REPLY_TIMEOUT.as_secs()
        )),
        Ok(Err(_)) => error_response("the daemon dropped the command (shutting down?)"),
        Ok(Ok(Ok(fields))) => ok_response(fields),
        Ok(Ok(Err(msg))) => error_response(&msg),
    }
}

/// After `subscribe`: acknowledge, then forward events until the client goes away. The
/// receiver was created before the acknowledgement, so nothing sent after the client sees it
/// is missed.
async fn stream_events<R: AsyncRead + Unpin, W: tokio::io::AsyncWrite + Unpin>(
    mut rd: R,
    mut wr: W,
    mut rx: broadcast::Receiver<Event>,
) -> io::Result<()> {
    write_json(
        &mut wr,
        &ok_response(Map::from_iter([("subscribed".to_owned(), json!(true))])),
    )
    .await?;
    let mut scratch = [0u8; 1024];
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(ev) => match serde_json::to_value(&ev) {
                    Ok(v) => write_json(&mut wr, &v).await?,
                    Err(_) => continue,
                },
                // A slow client missed some: say so rather than silently skipping.
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    write_json(&mut wr, &json!({ "event": "lagged", "missed": n })).await?
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            // Anything the client sends is ignored; end of stream means it has gone.
            n = rd.read(&mut scratch) => if n? == 0 { return Ok(()) },
        }
    }
}

async fn connect(path: &Path) -> Result<UnixStream, ControlError> {
    UnixStream::connect(path).await.map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ControlError::NotRunning {
            path: path.to_path_buf(),
        },
        _ => ControlError::Io {
            path: path.to_path_buf(),
            error: e,
        },
    })
}

/// Adds `"v"` if the caller left it out, so the CLI can send `{"cmd":"status"}`.
fn with_version(cmd: &Value) -> Value {
    let mut cmd = cmd.clone();
    if let Value::Object(m) = &mut cmd {
        m.entry("v").or_insert(json!(PROTOCOL_VERSION));
    }
    cmd
}

/// Reads one response line and turns `ok: false` into [`ControlError::Daemon`].
async fn read_response<R: AsyncBufRead + Unpin>(
    rd: &mut R,
    path: &Path,
) -> Result<Value, ControlError> {
    let io_err = |error| ControlError::Io {
        path: path.to_path_buf(),
        error,
    };
    let mut buf = Vec::new();
    let line = match tokio::time::timeout(CLIENT_TIMEOUT, read_line(rd, &mut buf)).await {
        Err(_) => {
            return Err(ControlError::Protocol(format!(
                "no answer within {} s",
                CLIENT_TIMEOUT.as_secs()
            )))
        }
        Ok(r) => r.map_err(io_err)?,
    };
    let text = match line {
        Line::Text(t) => t,
        Line::Eof => {
            return Err(ControlError::Protocol(
                "the daemon closed the connection".to_owned(),
            ))
        }
        Line::TooLong => return Err(ControlError::Protocol("answer too long".to_owned())),
    };
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| ControlError::Protocol(format!("{e}: {}", text.trim())))?;
    match v.get("ok") {
        Some(Value::Bool(true)) => Ok(v),
        Some(Value::Bool(false)) => Err(ControlError::Daemon(
            v.get("error")
                .and_then(Value::as_str)
                .unwrap_or("unspecified error")
                .to_owned(),
        )),
        _ => Err(ControlError::Protocol(format!(
            "no \"ok\" in {}",
            text.trim()
        ))),
    }
}

/// Sends one request to the daemon at the default socket and returns its `ok` response.
pub async fn request(cmd: &Value) -> Result<Value, ControlError> {
    request_at(&socket_path(), cmd).await
}

/// As [`request`], at an explicit socket path.
pub async fn request_at(path: &Path, cmd: &Value) -> Result<Value, ControlError> {
    let stream = connect(path).await?;
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    if let Err(source) = write_json(&mut wr, &with_version(cmd)).await {
        return Err(write_failed(&mut rd, path, source).await);
    }
    read_response(&mut rd, path).await
}

/// How long a client whose request could not be written still waits for the daemon's answer.
/// The write failed because the daemon closed the connection, so whatever it said is already
/// here: this only bounds the wait.
const ANSWER_AFTER_WRITE_ERROR: Duration = Duration::from_secs(1);

/// The error for a request that could not be written. The daemon refuses a peer (another
/// user) by writing one error line and closing without reading the request; a client still
/// writing then gets "Broken pipe" (or "Connection reset"), but the daemon's line is waiting
/// in its receive queue, and it says why far better: return that when it is there.
async fn write_failed<R: AsyncBufRead + Unpin>(
    rd: &mut R,
    path: &Path,
    source: io::Error,
) -> ControlError {
    match tokio::time::timeout(ANSWER_AFTER_WRITE_ERROR, read_response(rd, path)).await {
        Ok(Err(answer @ ControlError::Daemon(_))) => answer,
        _ => ControlError::Io {
            path: path.to_path_buf(),
            error: source,
        },
    }
}

/// Subscribes at the default socket and calls `on_event` with each event (a JSON object with
/// an `"event"` tag) until the daemon closes the connection.
pub async fn subscribe(on_event: impl FnMut(Value)) -> Result<(), ControlError> {
    subscribe_at(&socket_path(), on_event).await
}

/// As [`subscribe`], at an explicit socket path.
pub async fn subscribe_at(
    path: &Path,
    mut on_event: impl FnMut(Value),
) -> Result<(), ControlError> {
    let stream = connect(path).await?;
    let (rd, mut wr) = stream.into_split();
    let io_err = |error| ControlError::Io {
        path: path.to_path_buf(),
        error,
    };
    let mut rd = BufReader::new(rd);
    if let Err(source) = write_json(
        &mut wr,
        &json!({ "v": PROTOCOL_VERSION, "cmd": "subscribe" }),
    )
    .await
    {
        return Err(write_failed(&mut rd, path, source).await);
    }
    read_response(&mut rd, path).await?;
    let mut buf = Vec::new();
    loop {
        // No timeout here: events come when something happens, which may be never.
        match read_line(&mut rd, &mut buf).await.map_err(io_err)? {
            Line::Eof => return Ok(()),
            Line::TooLong => return Err(ControlError::Protocol("event too long".to_owned())),
            Line::Text(t) => match serde_json::from_str::<Value>(&t) {
                Ok(v) => on_event(v),
                Err(e) => return Err(ControlError::Protocol(format!("{e}: {}", t.trim()))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::status::DaemonState;

    struct Harness {
        _dir: tempfile::TempDir,
        path: PathBuf,
        status: watch::Sender<Status>,
        commands: mpsc::Receiver<ControlCommand>,
        events: broadcast::Sender<Event>,
        server: tokio::task::JoinHandle<anyhow::Result<()>>,
    }

    /// A server on a real socket in a temporary runtime dir.
    fn start() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/swictation/control.sock");
        let (status, status_rx) = watch::channel(Status::starting());
        let (cmd_tx, commands) = mpsc::channel(8);
        let (events, _) = broadcast::channel(16);
        let listener = ControlListener::bind(&path).unwrap();
        let server = tokio::spawn(listener.run(status_rx, cmd_tx, events.clone()));
        Harness {
            _dir: dir,
            path,
            status,
            commands,
            events,
            server,
        }
    }

    /// A raw client: send lines, read lines.
    struct Raw {
        rd: BufReader<tokio::net::unix::OwnedReadHalf>,
        wr: tokio::net::unix::OwnedWriteHalf,
    }

    impl Raw {
        async fn open(path: &Path) -> Raw {
            let (rd, wr) = UnixStream::connect(path).await.unwrap().into_split();
            Raw {
                rd: BufReader::new(rd),
                wr,
            }
        }
        async fn send(&mut self, line: &str) {
            self.wr
                .write_all(format!("{line}\n").as_bytes())
                .await
                .unwrap();
        }
        async fn recv(&mut self) -> Value {
            let mut line = String::new();
            tokio::time::timeout(Duration::from_secs(5), self.rd.read_line(&mut line))
                .await
                .unwrap()
                .unwrap();
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
        }
    }

    #[tokio::test]
    async fn status_is_answered_from_the_watch() {
        let h = start();
        let r = request_at(&h.path, &json!({"cmd": "status"}))
            .await
            .unwrap();
        assert_eq!(r["v"], 1);
        assert_eq!(r["status"]["state"], "starting");
        h.status.send_modify(|s| {
            s.state = DaemonState::Listening;
            s.queue_depth = 3;
        });
        let r = request_at(&h.path, &json!({"v": 1, "cmd": "status"}))
            .await
            .unwrap();
        assert_eq!(r["status"]["state"], "listening");
        assert_eq!(r["status"]["queue_depth"], 3);
        h.server.abort();
    }

    #[tokio::test]
    async fn commands_reach_the_main_loop_and_its_answer_comes_back() {
        let mut h = start();
        let main_loop = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(c) = h.commands.recv().await {
                seen.push(c.command);
                match c.command {
                    Command::Pause => {
                        c.respond(Ok(Map::from_iter([("state".to_owned(), json!("paused"))])))
                    }
                    Command::Restart(Role::Vad) => {
                        c.respond(Err("the VAD is already restarting".to_owned()))
                    }
                    _ => c.respond(Ok(Map::new())),
                }
                if seen.len() == 3 {
                    return seen;
                }
            }
            seen
        });
        let r = request_at(&h.path, &json!({"v": 1, "cmd": "pause"}))
            .await
            .unwrap();
        assert_eq!(
            (r["ok"].clone(), r["state"].clone()),
            (json!(true), json!("paused"))
        );
        let e = request_at(&h.path, &json!({"v": 1, "cmd": "restart", "role": "vad"}))
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "the VAD is already restarting");
        request_at(&h.path, &json!({"v": 1, "cmd": "restart", "role": "asr"}))
            .await
            .unwrap();
        assert_eq!(
            main_loop.await.unwrap(),
            [
                Command::Pause,
                Command::Restart(Role::Vad),
                Command::Restart(Role::Asr)
            ]
        );
        h.server.abort();
    }

    #[tokio::test]
    async fn a_gone_main_loop_is_a_clear_error() {
        let h = start();
        drop(h.commands);
        let e = request_at(&h.path, &json!({"cmd": "toggle"}))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("shutting down"), "{e}");
        h.server.abort();
    }

    #[tokio::test]
    async fn subscribe_streams_broadcast_events() {
        let h = start();
        let mut raw = Raw::open(&h.path).await;
        raw.send(r#"{"v":1,"cmd":"subscribe"}"#).await;
        assert_eq!(
            raw.recv().await,
            json!({"v": 1, "ok": true, "subscribed": true})
        );
        h.events
            .send(Event::Transcript {
                index: 1,
                text: "hello world".into(),
            })
            .unwrap();
        h.events
            .send(Event::StateChanged {
                state: DaemonState::Paused,
            })
            .unwrap();
        assert_eq!(
            raw.recv().await,
            json!({"event": "transcript", "index": 1, "text": "hello world"})
        );
        assert_eq!(
            raw.recv().await,
            json!({"event": "state_changed", "state": "paused"})
        );

        // The client helper, too: it sees the events, in order, until the daemon goes away.
        let (tx, mut rx) = mpsc::unbounded_channel();
        let path = h.path.clone();
        let client =
            tokio::spawn(async move { subscribe_at(&path, move |v| drop(tx.send(v))).await });
        while h.events.receiver_count() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        h.events
            .send(Event::WorkerReady {
                role: "asr".into(),
                pid: 7,
                device: "cpu".into(),
                model: "m".into(),
            })
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got["event"], "worker_ready");
        assert_eq!(got["pid"], 7);
        // The subscriber leaving frees its receiver.
        drop(raw);
        while h.events.receiver_count() > 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        h.server.abort();
        client.abort();
    }

    #[tokio::test]
    async fn bad_requests_get_an_error_and_the_connection_stays_usable() {
        let h = start();
        let mut raw = Raw::open(&h.path).await;
        let cases = [
            ("{not json", "malformed JSON"),
            ("[1,2]", "must be a JSON object"),
            (r#"{"cmd":"status"}"#, "missing protocol version"),
            (
                r#"{"v":2,"cmd":"status"}"#,
                "unsupported protocol version 2: this daemon speaks v1",
            ),
            (
                r#"{"v":"1","cmd":"status"}"#,
                "unsupported protocol version \"1\"",
            ),
            (r#"{"v":1}"#, "missing \"cmd\""),
            (
                r#"{"v":1,"cmd":"explode"}"#,
                "unknown command `explode` (known: status",
            ),
            (r#"{"v":1,"cmd":"restart"}"#, "restart needs \"role\""),
            (
                r#"{"v":1,"cmd":"restart","role":"gpu"}"#,
                "unknown role `gpu`",
            ),
        ];
        for (line, needle) in cases {
            raw.send(line).await;
            let r = raw.recv().await;
            assert_eq!(r["ok"], false, "{line}: {r}");
            assert_eq!(r["v"], 1, "{line}: {r}");
            let err = r["error"].as_str().unwrap();
            assert!(err.contains(needle), "{line}: {err:?} lacks {needle:?}");
        }
        raw.send("").await; // blank lines are skipped, not answered
        raw.send(r#"{"v":1,"cmd":"status"}"#).await;
        assert_eq!(raw.recv().await["ok"], true);
        h.server.abort();
    }

    #[tokio::test]
    async fn an_endless_line_is_refused() {
        let h = start();
        let mut raw = Raw::open(&h.path).await;
        raw.wr.write_all(&vec![b'x'; MAX_LINE + 10]).await.unwrap();
        let r = raw.recv().await;
        assert!(r["error"].as_str().unwrap().contains("longer than"), "{r}");
        h.server.abort();
    }

    #[tokio::test]
    async fn socket_and_directory_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let sock_dir = dir.path().join("swictation");
        std::fs::create_dir(&sock_dir).unwrap();
        std::fs::set_permissions(&sock_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = sock_dir.join("control.sock");
        let listener = ControlListener::bind(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(
            mode(&sock_dir),
            0o700,
            "a looser existing directory is tightened"
        );
        assert_eq!(mode(&path), 0o600);
        drop(listener);
        assert!(!path.exists(), "dropping the listener removes its socket");

        // A symlink in place of the directory is refused.
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        let e = ControlListener::bind(&link.join("control.sock")).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
    }

    #[tokio::test]
    async fn stale_socket_is_replaced_and_live_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("swictation/control.sock");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap()); // a dead daemon's file
        assert!(path.exists());
        let first = ControlListener::bind(&path).unwrap();
        let e = ControlListener::bind(&path).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "swictation is already running (pid {}",
                std::process::id()
            )),
            "{e}"
        );
        // The failed second bind must not have removed the live daemon's socket.
        assert!(path.exists());
        drop(first);

        std::fs::write(&path, "not a socket").unwrap();
        let e = ControlListener::bind(&path).unwrap_err().to_string();
        assert!(e.contains("is not a socket"), "{e}");
    }

    #[tokio::test]
    async fn no_daemon_says_how_to_start_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("swictation/control.sock");
        let e = request_at(&path, &json!({"cmd": "status"}))
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!(
                "swictation is not running (no daemon at {}): start it with `systemctl --user start swictation` or `swictation run`",
                path.display()
            )
        );
        let e = subscribe_at(&path, |_| {}).await.unwrap_err();
        assert!(matches!(e, ControlError::NotRunning { .. }));
    }

    /// A server that answers like the daemon refusing a peer: one error line, then close
    /// without reading anything.
    fn refusing_server(path: &Path, connections: usize) -> std::thread::JoinHandle<()> {
        use std::io::Write;
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            for _ in 0..connections {
                let (mut s, _) = listener.accept().unwrap();
                let line = error_response(
                    "permission denied: uid 4242 may not control the daemon of uid 0",
                );
                writeln!(s, "{line}").unwrap();
            }
        })
    }

    #[tokio::test]
    async fn a_refusal_is_reported_even_when_the_request_cannot_be_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("swictation/control.sock");
        let server = refusing_server(&path, 2);
        // Far larger than the socket buffer: the write cannot complete before the server
        // closes, so it always fails (EPIPE or ECONNRESET) with the refusal already received.
        let big = json!({"cmd": "status", "pad": "x".repeat(4 << 20)});
        let e = request_at(&path, &big).await.unwrap_err();
        assert!(
            matches!(&e, ControlError::Daemon(m) if m.starts_with("permission denied: uid 4242")),
            "{e:?}"
        );
        // A small request (written before or after the close, whichever comes first) too.
        let e = subscribe_at(&path, |_| {}).await.unwrap_err();
        assert!(
            matches!(&e, ControlError::Daemon(m) if m.contains("uid 4242 may not control")),
            "{e:?}"
        );
        server.join().unwrap();
        // With no answer at all, the write error itself is reported.
        let path2 = dir.path().join("silent.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path2).unwrap();
        let silent = std::thread::spawn(move || drop(listener.accept().unwrap()));
        let e = request_at(&path2, &big).await.unwrap_err();
        silent.join().unwrap();
        assert!(matches!(&e, ControlError::Io { .. }), "{e:?}");
    }

    const OTHER_UID_SOCK: &str = "SWICTATION_TEST_OTHER_UID_SOCK";

    /// Not a test by itself: the client half of `another_uid_is_refused_even_by_a_root_daemon`,
    /// run by it as a child process under another uid.
    #[test]
    fn other_uid_client() {
        use std::io::Read;
        let Some(path) = std::env::var_os(OTHER_UID_SOCK) else {
            return;
        };
        let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // Send nothing: the refusal comes on connect, unasked. (Had we written, the server's
        // close with our bytes unread would make Linux report ECONNRESET after the reply.)
        let mut out = Vec::new();
        // Reading to the end also proves the server closed the connection (else: timeout).
        s.read_to_end(&mut out).unwrap();
        println!("REPLY:{}", String::from_utf8_lossy(&out).trim());
    }

    #[tokio::test]
    async fn another_uid_is_refused_even_by_a_root_daemon() {
        use std::os::unix::process::CommandExt;
        // Running a client as another user needs root; elsewhere `only_the_same_uid_is_allowed`
        // covers the decision alone.
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let h = start();
        // Open the filesystem path so that only the SO_PEERCRED check stands in the way.
        let mut dir = h.path.parent().map(Path::to_path_buf);
        while let Some(d) = dir {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o711)).unwrap();
            if d == h._dir.path() {
                break;
            }
            dir = d.parent().map(Path::to_path_buf);
        }
        std::fs::set_permissions(&h.path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let exe = std::env::current_exe().unwrap();
        let path = h.path.clone();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(exe)
                .args([
                    "--exact",
                    "io::control::tests::other_uid_client",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(OTHER_UID_SOCK, &path)
                .uid(65534)
                .gid(65534)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        // libtest prints "test … … " on the same line before the helper's output.
        let reply = stdout
            .lines()
            .find_map(|l| l.split_once("REPLY:").map(|(_, r)| r))
            .unwrap_or_else(|| {
                panic!(
                    "no reply from the other-uid client:\n{stdout}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        let v: Value = serde_json::from_str(reply).unwrap();
        assert_eq!(v["ok"], false, "{reply}");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .starts_with("permission denied: uid 65534"),
            "{reply}"
        );
        assert!(v.get("status").is_none());
        // The server is unaffected for its own user.
        assert_eq!(
            request_at(&h.path, &json!({"cmd": "status"}))
                .await
                .unwrap()["ok"],
            true
        );
        h.server.abort();
    }

    #[test]
    fn only_the_same_uid_is_allowed() {
        assert!(peer_allowed(1000, 1000).is_ok());
        assert!(peer_allowed(0, 1000)
            .unwrap_err()
            .contains("permission denied: uid 0"));
        assert!(peer_allowed(1001, 1000).is_err());
        assert!(
            peer_allowed(1000, 0).is_err(),
            "a root daemon does not take other users either"
        );
    }

    #[test]
    fn requests_parse() {
        assert_eq!(
            parse_request(r#"{"v":1,"cmd":"toggle"}"#),
            Ok(Request::Do(Command::Toggle))
        );
        assert_eq!(
            parse_request(r#"{"v":1,"cmd":"stop","extra":true}"#),
            Ok(Request::Do(Command::Stop))
        );
        assert_eq!(
            parse_request(r#"{"v":1,"cmd":"subscribe"}"#),
            Ok(Request::Subscribe)
        );
        use swictation_policy::ptt::Key;
        assert_eq!(
            parse_request(r#"{"v":1,"cmd":"ptt","key":"down"}"#),
            Ok(Request::Do(Command::Ptt(Key::Down)))
        );
        assert_eq!(
            parse_request(r#"{"v":1,"cmd":"ptt","key":"release"}"#),
            Ok(Request::Do(Command::Ptt(Key::Up)))
        );
        assert!(parse_request(r#"{"v":1,"cmd":"ptt"}"#).is_err_and(|e| e.contains("\"down\"")));
        assert!(parse_request(r#"{"v":1,"cmd":"ptt","key":"sideways"}"#)
            .is_err_and(|e| e.contains("sideways")));
        assert_eq!(
            with_version(&json!({"cmd":"status"})),
            json!({"v":1,"cmd":"status"})
        );
        assert_eq!(
            with_version(&json!({"v":9,"cmd":"status"})),
            json!({"v":9,"cmd":"status"})
        );
    }
}
