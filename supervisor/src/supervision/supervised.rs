//! A worker under supervision: started with back-off, proven ready by a canary inference,
//! classified when it fails, and reported on the status board.
//!
//! The state machine is explicit ([`WorkerState`]): every change is computed by the one
//! [`transition`] function and published to the board with it. Process mechanics stay in [`crate::io::worker`]; the
//! choice of *where* to run stays with the caller (placement).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use swictation_proto::{ErrorKind, Fault, Reply, Request, Role, VAD_FRAME};

use crate::io::launch::LaunchConfig;
use crate::io::worker::{Deadlines, Worker, WorkerCommand, WorkerError};

/// One request on a worker, borrowed for as long as it runs.
type WorkerCall<'w, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, WorkerError>> + Send + 'w>>;
use crate::report::board::Board;
use crate::report::status::{Event, FailureRecord};
use crate::supervision::placer::{Order, Placer, WorkerNews};
use swictation_policy::failure::{self, FailureClass, Observation};
use swictation_policy::placement::Switch;
use swictation_policy::restart::{RestartHistory, RestartPolicy, Verdict};

/// Where a supervised worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Process being started.
    Spawning,
    /// Connected; loading its model and running the canary.
    Loading,
    /// Proven by a canary inference; idle.
    Ready,
    /// Working on a request.
    Busy,
    /// Just failed (classified, not yet restarted).
    Failed,
    /// Waiting out the back-off delay before the next start.
    BackingOff,
    /// Too many failures: the caller runs degraded and retries rarely.
    GivenUp,
}

impl WorkerState {
    /// Lower-case name for status.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Spawning => "spawning",
            WorkerState::Loading => "loading",
            WorkerState::Ready => "ready",
            WorkerState::Busy => "busy",
            WorkerState::Failed => "failed",
            WorkerState::BackingOff => "backing_off",
            WorkerState::GivenUp => "given_up",
        }
    }
}

/// What drives the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerEvent {
    /// A start was attempted.
    Spawn,
    /// The handshake arrived; the canary runs next.
    Connected,
    /// The canary passed.
    CanaryPassed,
    /// A request was sent.
    RequestSent,
    /// Its answer arrived.
    Answered,
    /// The process died, closed its socket, missed a deadline or broke the protocol.
    Failed,
    /// The restart decision is to wait before the next start.
    BackOff,
    /// The restart decision escalated.
    GiveUp,
    /// Stopped on purpose (restart on request, shutdown).
    Stop,
}

/// The transition function: pure, total, and the only definition of legal moves.
pub fn transition(state: WorkerState, event: WorkerEvent) -> WorkerState {
    use WorkerEvent as E;
    use WorkerState as S;
    match (state, event) {
        (_, E::Failed) => S::Failed,
        (_, E::Stop) => S::BackingOff,
        (S::Failed | S::BackingOff | S::GivenUp, E::Spawn) => S::Spawning,
        (S::Failed, E::BackOff) => S::BackingOff,
        (S::Failed, E::GiveUp) => S::GivenUp,
        (S::Spawning, E::Connected) => S::Loading,
        (S::Loading, E::CanaryPassed) => S::Ready,
        (S::Ready, E::RequestSent) => S::Busy,
        (S::Busy, E::Answered) => S::Ready,
        (s, _) => s,
    }
}

/// A known-answer input that proves a worker really works (not merely that it is alive).
#[derive(Debug, Clone)]
pub struct Canary {
    /// Real speech, 16 kHz mono.
    pub speech: Vec<f32>,
    /// What the speech says (for the ASR canary).
    pub text: String,
}

impl Canary {
    /// The installed "go forward ten meters" clip (2.8 s); without it no worker can be proven,
    /// so the error (naming the file) becomes every start's load error.
    pub fn installed() -> Result<Self, String> {
        let path = swictation_proto::paths::canary_clip();
        let bytes = std::fs::read(&path).map_err(|e| {
            format!(
                "the canary clip {} cannot be read ({e}): no worker is trusted without it (run deploy/setup.sh)",
                path.display()
            )
        })?;
        if bytes.len() < 2 * 16_000 {
            return Err(format!(
                "the canary clip {} holds {} bytes, not speech (run deploy/setup.sh)",
                path.display(),
                bytes.len()
            ));
        }
        Ok(Self {
            speech: crate::io::audio::from_raw_s16le(&bytes),
            text: "go forward ten meters".into(),
        })
    }
}

/// A classified failure and what the restart policy decided.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Why.
    pub class: FailureClass,
    /// Detail for status and logs (never transcript text).
    pub reason: String,
    /// When and how to restart.
    pub decision: Verdict,
}

/// The outcome of a request that did not succeed.
#[derive(Debug)]
pub enum CallError {
    /// The worker is gone (crashed, hung, poisoned); it will be restarted.
    Failed(Failure),
    /// The worker refused this request but is fine (an inference error on this input).
    Rejected(String),
}

/// Counters the soak and status read.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Restarts by failure class key.
    pub restarts: BTreeMap<String, u32>,
    /// Failure detected → ready again (back-off included), for each recovery.
    pub recoveries: Vec<Duration>,
    /// Spawn → ready (handshake and canary), for every start.
    pub startups: Vec<Duration>,
}

/// One supervised worker.
pub struct Supervised {
    role: Role,
    /// Turns where the worker goes into the command line that starts it.
    launch: Arc<LaunchConfig>,
    /// The command line of the current (or next) start.
    command: WorkerCommand,
    load_timeout: Duration,
    worker: Option<Worker>,
    state: WorkerState,
    history: RestartHistory,
    policy: RestartPolicy,
    canary: Result<Canary, String>,
    board: Board,
    epoch: Instant,
    next_attempt: Option<Instant>,
    failed_at: Option<Instant>,
    ready_at: Option<Instant>,
    stats: Arc<Mutex<Stats>>,
    placer: Option<Arc<Placer>>,
    /// The running worker passed its canary (a failure now is "while serving").
    serving: bool,
}

impl Supervised {
    /// Supervise the `role` worker, started by `launch` where it is configured (or where a
    /// placer says); nothing is started until first needed.
    pub fn new(
        role: Role,
        launch: Arc<LaunchConfig>,
        load_timeout: Duration,
        policy: RestartPolicy,
        canary: Result<Canary, String>,
        board: Board,
    ) -> Self {
        let command = launch.command(&launch.configured(role));
        board.update_worker(role, |w| w.state = WorkerState::Spawning.as_str().into());
        Self {
            role,
            launch,
            command,
            load_timeout,
            worker: None,
            state: WorkerState::Failed,
            history: RestartHistory::default(),
            policy,
            canary,
            board,
            epoch: Instant::now(),
            next_attempt: None,
            failed_at: None,
            ready_at: None,
            stats: Arc::new(Mutex::new(Stats::default())),
            placer: None,
            serving: false,
        }
    }

    /// Let `placer` choose where every start goes, and tell it of every failure and start.
    pub fn set_placer(&mut self, placer: Arc<Placer>) {
        self.placer = Some(placer);
    }

    /// Request deadlines from the restart policy's hang timeout (the canary's too).
    fn deadlines(&self) -> Deadlines {
        Deadlines {
            hang: self.policy.hang_timeout,
        }
    }

    /// The role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The current state.
    pub fn state(&self) -> WorkerState {
        self.state
    }

    /// The worker's pid, while one runs.
    pub fn pid(&self) -> Option<u32> {
        self.worker.as_ref().and_then(Worker::pid)
    }

    /// Shared counters.
    pub fn stats(&self) -> Arc<Mutex<Stats>> {
        self.stats.clone()
    }

    /// The handshake of the running worker.
    pub fn hello(&self) -> Option<&swictation_proto::Hello> {
        self.worker.as_ref().map(Worker::hello)
    }

    /// Apply one event through [`transition`], publishing the new state.
    fn apply(&mut self, event: WorkerEvent) {
        let next = transition(self.state, event);
        if next != self.state {
            self.state = next;
            self.board
                .update_worker(self.role, |w| w.state = next.as_str().into());
        }
    }

    /// When the next start may happen (`None`: now).
    pub fn next_attempt(&self) -> Option<Instant> {
        self.next_attempt
    }

    /// Make sure a ready worker exists: wait out any back-off owed, start it, prove it with the
    /// canary. One attempt; on failure the classified [`Failure`] says what the policy decided.
    pub async fn ensure_ready(&mut self) -> Result<(), Failure> {
        if self.worker.is_some() {
            return Ok(());
        }
        if let Some(at) = self.next_attempt.take() {
            tokio::time::sleep_until(at.into()).await;
        }
        if let Some(p) = &self.placer {
            self.command = self.launch.command(&p.before_spawn(self.role));
        }
        self.apply(WorkerEvent::Spawn);
        let spawned = Instant::now();
        let mut worker = match Worker::spawn(&self.command, self.load_timeout).await {
            Ok(mut w) => {
                w.set_deadlines(self.deadlines());
                w
            }
            Err(e) => return Err(self.record(e, None).await),
        };
        self.apply(WorkerEvent::Connected);
        let canary = match self.canary.clone() {
            Ok(c) => c,
            Err(why) => return Err(self.record(why, Some(worker)).await),
        };
        if let Err(reason) = run_canary(self.role, &mut worker, &canary).await {
            return Err(self.record(reason, Some(worker)).await);
        }
        let h = worker.hello().clone();
        let pid = h.pid;
        self.worker = Some(worker);
        self.serving = true;
        self.apply(WorkerEvent::CanaryPassed);
        if let Some(p) = &self.placer {
            p.tell(self.role, WorkerNews::Ready { pid }).await;
        }
        let now = Instant::now();
        self.history.on_ready(now - self.epoch);
        self.ready_at = Some(now);
        if let Ok(mut s) = self.stats.lock() {
            s.startups.push(now - spawned);
        }
        if let Some(at) = self.failed_at.take() {
            let took = now - at;
            crate::log_info!(
                "{} worker recovered in {:.0} ms (pid {pid})",
                self.role,
                took.as_secs_f64() * 1e3
            );
            if let Ok(mut s) = self.stats.lock() {
                s.recoveries.push(took);
            }
        }
        let device = crate::supervision::engine::describe_placement(&h.placement);
        self.board.update_worker(self.role, |w| {
            w.pid = Some(pid);
            w.device = device.clone();
            w.model = h.model.clone();
            w.uptime_s = Some(0.0);
        });
        self.board.emit(Event::WorkerReady {
            role: self.role.as_str().into(),
            pid,
            device,
            model: h.model,
        });
        Ok(())
    }

    /// Resolves when the running worker's process has exited on its own (never, if none runs).
    /// Used while idle, so a killed worker is replaced before the next request needs it.
    pub async fn exited(&mut self) {
        match self.worker.as_mut() {
            Some(w) => w.wait_exit().await,
            None => std::future::pending().await,
        }
    }

    /// Record the death noticed by [`Supervised::exited`].
    pub async fn on_exit(&mut self) -> Failure {
        let worker = self.worker.take();
        let tail = worker.as_ref().map(Worker::stderr_tail).unwrap_or_default();
        let input = FailureInput {
            message: format!("{} worker died while idle", self.role),
            stderr_tail: tail,
            oom_killed: crate::io::worker::oom_kill_seen(),
            ..FailureInput::default()
        };
        self.record(input, worker).await
    }

    /// Seconds the current worker has been ready.
    pub fn uptime(&self) -> Option<Duration> {
        self.worker.as_ref().and(self.ready_at).map(|t| t.elapsed())
    }

    async fn call(&mut self, request: Request, timeout: Duration) -> Result<Reply, CallError> {
        // A liveness ping is not work: the worker does not show as busy for it.
        let work = !matches!(request, Request::Ping { .. });
        self.request(work, |w| Box::pin(w.call(request, timeout)))
            .await
    }

    /// A typed request (busy while it runs).
    async fn typed<T>(
        &mut self,
        f: impl for<'w> FnOnce(&'w mut Worker) -> WorkerCall<'w, T>,
    ) -> Result<T, CallError> {
        self.request(true, f).await
    }

    /// Run one request on the worker: busy on the board while it is `work`, an error reply
    /// reported as rejected, anything else a failure recorded and classified.
    async fn request<T>(
        &mut self,
        work: bool,
        f: impl for<'w> FnOnce(&'w mut Worker) -> WorkerCall<'w, T>,
    ) -> Result<T, CallError> {
        let Some(worker) = self.worker.as_mut() else {
            return Err(CallError::Failed(Failure {
                class: FailureClass::Exit(-1),
                reason: "no worker running".into(),
                decision: Verdict::Restart {
                    after: Duration::ZERO,
                },
            }));
        };
        let result = {
            let next = transition(self.state, WorkerEvent::RequestSent);
            if work && next != self.state {
                self.state = next;
                self.board
                    .update_worker(self.role, |w| w.state = next.as_str().into());
            }
            f(worker).await
        };
        match result {
            Ok(reply) => {
                self.apply(WorkerEvent::Answered);
                Ok(reply)
            }
            Err(WorkerError::Reported {
                kind: ErrorKind::BadRequest | ErrorKind::Inference,
                message,
                ..
            }) => {
                self.apply(WorkerEvent::Answered);
                Err(CallError::Rejected(message))
            }
            Err(e) => {
                let worker = self.worker.take();
                Err(CallError::Failed(self.record(e, worker).await))
            }
        }
    }

    /// Reap the process and classify why it failed.
    async fn classify(
        &self,
        input: FailureInput,
        worker: Option<Worker>,
    ) -> (FailureClass, String) {
        let (status, tail) = match worker {
            Some(mut w) => {
                let status = w.reap().await;
                (status, w.stderr_tail())
            }
            None => (input.status, input.stderr_tail.clone()),
        };
        use std::os::unix::process::ExitStatusExt;
        let obs = Observation {
            code: status.and_then(|s| s.code()),
            signal: status.and_then(|s| s.signal()),
            stderr_tail: &tail,
            last_report: input.report,
            deadline_missed: input.deadline_missed,
            protocol_violation: input.protocol,
            oom_killed: input.oom_killed,
        };
        let class = failure::classify(&obs);
        let mut reason = input.message;
        if let Some(line) = failure::explaining_line(&tail) {
            if !reason.contains(line) {
                reason = format!("{reason}; stderr: {line}");
            }
        }
        (class, reason)
    }

    /// Classify a failure, reap the process, update history, status and events.
    async fn record(&mut self, error: impl Into<FailureInput>, worker: Option<Worker>) -> Failure {
        let input = error.into();
        let now = Instant::now();
        self.failed_at.get_or_insert(now);
        let (class, reason) = self.classify(input, worker).await;
        self.apply(WorkerEvent::Failed);
        let decision = self.history.on_failure(now - self.epoch, &self.policy);
        self.next_attempt = Some(now + decision.delay());
        match decision {
            Verdict::Restart { .. } => self.apply(WorkerEvent::BackOff),
            Verdict::Escalate { .. } => self.apply(WorkerEvent::GiveUp),
        }
        if let Ok(mut s) = self.stats.lock() {
            *s.restarts.entry(class.key().into()).or_default() += 1;
        }
        crate::log_warn!(
            "{} worker failed: {class}: {reason}; {decision:?}",
            self.role
        );
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let key = class.key().to_string();
        let record = FailureRecord {
            class: class.to_string(),
            reason: reason.clone(),
            at_unix_s: at,
        };
        self.board.update_worker(self.role, |w| {
            *w.restarts.entry(key).or_default() += 1;
            w.last_failure = Some(record);
            w.pid = None;
            w.uptime_s = None;
        });
        self.board.emit(Event::WorkerFailed {
            role: self.role.as_str().into(),
            class: class.to_string(),
            reason: reason.clone(),
        });
        let after_ready = std::mem::take(&mut self.serving);
        if let Some(p) = self.placer.clone() {
            let escalated = matches!(decision, Verdict::Escalate { .. });
            p.tell(
                self.role,
                WorkerNews::Failed {
                    class,
                    after_ready,
                    escalated,
                },
            )
            .await;
        }
        Failure {
            class,
            reason,
            decision,
        }
    }

    /// Speech probability per frame (the typed request of [`Worker::vad_frames`], with the
    /// configured deadlines).
    pub async fn vad_frames(&mut self, samples: Vec<f32>) -> Result<Vec<f32>, CallError> {
        self.typed(|w| Box::pin(w.vad_frames(samples)))
            .await
            .map(|(probs, _)| probs)
    }

    /// Transcribe one segment ([`Worker::transcribe`]); the deadline scales with its length.
    pub async fn transcribe(
        &mut self,
        segment: u64,
        samples: Vec<f32>,
    ) -> Result<String, CallError> {
        self.typed(|w| Box::pin(w.transcribe(segment, samples)))
            .await
            .map(|(text, _)| text)
    }

    /// Liveness probe for an idle worker (a frozen one is killed and restarted).
    pub async fn ping(&mut self, timeout: Duration) -> Result<(), CallError> {
        let id = self.next_id();
        match self.call(Request::Ping { id }, timeout).await? {
            Reply::Pong { id: got } if got == id => Ok(()),
            other => Err(self.unexpected(other).await),
        }
    }

    /// Test-only: tell the worker to misbehave.
    pub async fn inject(&mut self, fault: Fault) -> Result<(), CallError> {
        let id = self.next_id();
        match self
            .call(Request::InjectFault { id, fault }, Duration::from_secs(2))
            .await?
        {
            Reply::Done { .. } => Ok(()),
            other => Err(self.unexpected(other).await),
        }
    }

    /// Carry out a placement [`Order`] between requests.
    ///
    /// Make-before-break: start the new worker and prove it with the canary while the old one
    /// stays in place; only then switch to it and stop the old one, so nothing in flight is lost.
    /// If the new one fails, the old one keeps serving and the failure is remembered against the
    /// new placement. Break-before-make (the new placement needs the old one's memory): stop the
    /// old worker, wait for its memory to show as free, and start the new one (requests wait).
    pub async fn switch(&mut self, order: Order) {
        let Some(placer) = self.placer.clone() else {
            return;
        };
        if order.switch == Switch::BreakBeforeMake || self.worker.is_none() {
            let released = placer.release_of(self.role);
            if let Some(w) = self.worker.take() {
                w.shutdown().await;
            }
            self.serving = false;
            self.apply(WorkerEvent::Stop);
            placer.take_over(&order, released).await;
            let _ = self.ensure_ready().await;
            return;
        }
        let spawned = Instant::now();
        let command = self.launch.command(&order.to);
        let mut candidate = match Worker::spawn(&command, self.load_timeout).await {
            Ok(mut w) => {
                w.set_deadlines(self.deadlines());
                w
            }
            Err(e) => {
                let (class, why) = self.classify(e.into(), None).await;
                placer
                    .tell(self.role, WorkerNews::SwitchFailed { order, class, why })
                    .await;
                return;
            }
        };
        let proven = match self.canary.clone() {
            Ok(canary) => run_canary(self.role, &mut candidate, &canary).await,
            Err(why) => Err(why),
        };
        if let Err(reason) = proven {
            let (class, why) = self.classify(reason.into(), Some(candidate)).await;
            placer
                .tell(self.role, WorkerNews::SwitchFailed { order, class, why })
                .await;
            return;
        }
        let h = candidate.hello().clone();
        let old = self.worker.replace(candidate);
        self.command = command;
        let now = Instant::now();
        self.ready_at = Some(now);
        if let Ok(mut s) = self.stats.lock() {
            s.startups.push(now - spawned);
        }
        let device = crate::supervision::engine::describe_placement(&h.placement);
        self.board.update_worker(self.role, |w| {
            w.pid = Some(h.pid);
            w.device = device.clone();
            w.model = h.model.clone();
            w.uptime_s = Some(0.0);
        });
        self.board.emit(Event::WorkerReady {
            role: self.role.as_str().into(),
            pid: h.pid,
            device,
            model: h.model,
        });
        placer
            .tell(self.role, WorkerNews::Switched { order, pid: h.pid })
            .await;
        if let Some(old) = old {
            old.shutdown().await;
        }
    }

    /// Stop the worker for good.
    pub async fn shutdown(&mut self) {
        if let Some(w) = self.worker.take() {
            w.shutdown().await;
        }
        self.serving = false;
        if let Some(p) = &self.placer {
            p.tell(self.role, WorkerNews::Stopped).await;
        }
        self.apply(WorkerEvent::Stop);
        self.board.update_worker(self.role, |w| {
            w.pid = None;
            w.uptime_s = None;
        });
    }

    fn next_id(&mut self) -> u64 {
        self.worker.as_mut().map(Worker::next_id).unwrap_or(0)
    }

    async fn unexpected(&mut self, reply: Reply) -> CallError {
        let worker = self.worker.take();
        let input = FailureInput {
            message: format!("unexpected reply {}", reply.kind()),
            protocol: true,
            ..FailureInput::default()
        };
        CallError::Failed(self.record(input, worker).await)
    }
}

/// What is known about a failure before the process is reaped.
#[derive(Debug, Default)]
struct FailureInput {
    message: String,
    report: Option<ErrorKind>,
    deadline_missed: bool,
    protocol: bool,
    oom_killed: bool,
    status: Option<std::process::ExitStatus>,
    stderr_tail: String,
}

impl From<WorkerError> for FailureInput {
    fn from(e: WorkerError) -> Self {
        let message = e.to_string();
        match e {
            WorkerError::Timeout { .. } => FailureInput {
                message,
                deadline_missed: true,
                ..Default::default()
            },
            WorkerError::Protocol { .. } => FailureInput {
                message,
                protocol: true,
                ..Default::default()
            },
            WorkerError::Reported { kind, .. } => FailureInput {
                message,
                report: Some(kind),
                ..Default::default()
            },
            WorkerError::Load { kind, status, .. } => FailureInput {
                message,
                report: Some(kind),
                status,
                ..Default::default()
            },
            WorkerError::Died {
                stderr_tail,
                status,
                ..
            } => FailureInput {
                message,
                stderr_tail,
                status,
                oom_killed: crate::io::worker::oom_kill_seen(),
                ..Default::default()
            },
            WorkerError::Spawn { .. } => FailureInput {
                message,
                ..Default::default()
            },
        }
    }
}

impl From<String> for FailureInput {
    fn from(message: String) -> Self {
        FailureInput {
            message: format!("canary failed: {message}"),
            ..Default::default()
        }
    }
}

/// Prove a freshly started worker with its known-answer input.
async fn run_canary(role: Role, worker: &mut Worker, canary: &Canary) -> Result<(), String> {
    match role {
        Role::Vad => {
            let silence = VAD_FRAME * 16;
            let mut samples = vec![0.0f32; silence];
            samples.extend_from_slice(&canary.speech);
            samples.resize(samples.len().div_ceil(VAD_FRAME) * VAD_FRAME, 0.0);
            let (probs, _) = worker
                .vad_frames(samples)
                .await
                .map_err(|e| e.to_string())?;
            let quiet = probs[..16].iter().cloned().fold(0.0f32, f32::max);
            let loud = probs[16..].iter().cloned().fold(0.0f32, f32::max);
            worker.vad_reset().await.map_err(|e| e.to_string())?;
            if quiet >= 0.5 || loud <= 0.5 || !quiet.is_finite() || !loud.is_finite() {
                return Err(format!(
                    "VAD scored silence {quiet:.3} and speech {loud:.3}"
                ));
            }
            Ok(())
        }
        Role::Asr => {
            let (text, _) = worker
                .transcribe(u64::MAX, canary.speech.clone())
                .await
                .map_err(|e| e.to_string())?;
            let (errors, words) = swictation_policy::wer::word_errors(&canary.text, &text);
            if errors * 4 > words {
                return Err(format!(
                    "expected {:?}, got {} words with {errors} errors",
                    canary.text,
                    text.split_whitespace().count()
                ));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use WorkerEvent as E;
    use WorkerState as S;

    #[test]
    fn transition_table() {
        let table = [
            (S::Failed, E::Spawn, S::Spawning),
            (S::Spawning, E::Connected, S::Loading),
            (S::Loading, E::CanaryPassed, S::Ready),
            (S::Ready, E::RequestSent, S::Busy),
            (S::Busy, E::Answered, S::Ready),
            (S::Busy, E::Failed, S::Failed),
            (S::Loading, E::Failed, S::Failed),
            (S::Spawning, E::Failed, S::Failed),
            (S::Failed, E::BackOff, S::BackingOff),
            (S::BackingOff, E::Spawn, S::Spawning),
            (S::Failed, E::GiveUp, S::GivenUp),
            (S::GivenUp, E::Spawn, S::Spawning),
            // Events that make no sense in a state leave it unchanged.
            (S::Ready, E::CanaryPassed, S::Ready),
            (S::Spawning, E::RequestSent, S::Spawning),
            (S::BackingOff, E::Answered, S::BackingOff),
            (S::Ready, E::Spawn, S::Ready),
            (S::Ready, E::Stop, S::BackingOff),
            (S::BackingOff, E::Spawn, S::Spawning),
        ];
        for (from, event, to) in table {
            assert_eq!(transition(from, event), to, "{from:?} + {event:?}");
        }
    }
}
