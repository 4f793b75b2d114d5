//! The ASR stage: segments in, transcripts out, in order, once.

use std::collections::{BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Result;
use swictation_policy::restart::Verdict;
use swictation_policy::segmenter::Segment;
use swictation_proto::{Role, SAMPLE_RATE};
use tokio::sync::{mpsc, watch};

use super::{command, recv_opt, set_degraded, Inbox, PipelineConfig, Shared, StageCommand};
use crate::supervision::engine::SegmentText;
use crate::supervision::placer::{Hold, Order};
use crate::supervision::supervised::{CallError, Supervised};

/// How often an idle ASR worker is pinged (a frozen one is then killed and restarted).
const HEARTBEAT: Duration = Duration::from_secs(1);

/// The ASR stage's state: its worker, what it hears, and the segments waiting for it.
pub(super) struct AsrStage<D> {
    sup: Supervised,
    seg_rx: mpsc::UnboundedReceiver<Segment>,
    deliver: D,
    commands: Option<mpsc::UnboundedReceiver<StageCommand>>,
    orders: mpsc::UnboundedReceiver<Order>,
    held: watch::Receiver<Option<Hold>>,
    shared: Shared,
    cfg: PipelineConfig,
    /// Segments waiting, oldest first, with the failed attempts on each.
    queue: VecDeque<(Segment, u32)>,
    /// The segment queue has closed: no more segments will come.
    closed: bool,
    /// Requests are held by the placer (reported once per hold).
    holding: bool,
    /// The worker keeps failing: segments wait on disk (reported once per outage).
    degraded: bool,
    quarantined: Vec<u64>,
    on_disk: BTreeSet<u64>,
}

impl<D: FnMut(SegmentText) + Send + 'static> AsrStage<D> {
    pub(super) fn new(
        sup: Supervised,
        seg_rx: mpsc::UnboundedReceiver<Segment>,
        deliver: D,
        inbox: Inbox,
        shared: Shared,
        cfg: PipelineConfig,
    ) -> Self {
        Self {
            sup,
            seg_rx,
            deliver,
            commands: inbox.commands,
            orders: inbox.orders,
            held: inbox.held.unwrap_or_else(|| watch::channel(None).1),
            shared,
            cfg,
            queue: VecDeque::new(),
            closed: false,
            holding: false,
            degraded: false,
            quarantined: Vec::new(),
            on_disk: BTreeSet::new(),
        }
    }

    /// Run until the segment queue has closed and every segment has been delivered or
    /// quarantined; returns the worker and the quarantined segments' indices.
    pub(super) async fn run(mut self) -> (Supervised, Vec<u64>) {
        loop {
            if self.queue.is_empty() {
                if self.closed {
                    break;
                }
                self.idle().await;
                continue;
            }
            self.take_arrivals();
            if let Some(cmd) = self.commands.as_mut().and_then(|f| f.try_recv().ok()) {
                command(&mut self.sup, cmd).await;
            }
            if let Ok(o) = self.orders.try_recv() {
                self.sup.switch(o).await;
            }
            if self.held().await {
                continue;
            }
            if !self.worker_ready().await {
                continue;
            }
            self.transcribe_front().await;
        }
        self.shared.board.update(|s| s.queue_depth = 0);
        (self.sup, self.quarantined)
    }

    /// Nothing to transcribe: wait for a segment, a command or an order, and keep the worker
    /// proven (pinged) and running.
    async fn idle(&mut self) {
        let sup = &mut self.sup;
        tokio::select! {
            biased;
            Some(cmd) = recv_opt(&mut self.commands) => command(sup, cmd).await,
            Some(o) = self.orders.recv() => sup.switch(o).await,
            s = self.seg_rx.recv() => match s {
                Some(s) => self.queue.push_back((s, 0)),
                None => self.closed = true,
            },
            _ = sup.exited() => {
                sup.on_exit().await;
            }
            _ = tokio::time::sleep(HEARTBEAT) => {
                // Idle: prove the worker still answers (a frozen one is killed).
                if sup.pid().is_some() {
                    let _ = sup.ping(Duration::from_secs(1)).await;
                }
            }
        }
        // Bring a failed worker back now, before speech needs it.
        if self.sup.pid().is_none() {
            let _ = self.sup.ensure_ready().await;
        }
    }

    /// Queue every segment that has arrived.
    fn take_arrivals(&mut self) {
        while let Ok(s) = self.seg_rx.try_recv() {
            self.queue.push_back((s, 0));
        }
        let depth = self.queue.len();
        self.shared.board.update(|s| s.queue_depth = depth);
    }

    /// Circuit breaker: while GPU memory is in emergency, requests stay queued (never dropped)
    /// until ASR has stepped down or the pressure has passed; so too around a sleep, until the
    /// GPU workers have restarted. True while held (after waiting a little).
    async fn held(&mut self) -> bool {
        let hold = *self.held.borrow_and_update();
        let Some(why) = hold else {
            if self.holding {
                self.holding = false;
                crate::log_info!("releasing {} held segment(s) to ASR", self.queue.len());
            }
            return false;
        };
        if !self.holding {
            self.holding = true;
            crate::log_warn!("holding {} segment(s) for ASR: {why}", self.queue.len());
        }
        let sup = &mut self.sup;
        tokio::select! {
            biased;
            Some(o) = self.orders.recv() => sup.switch(o).await,
            Some(cmd) = recv_opt(&mut self.commands) => command(sup, cmd).await,
            _ = self.held.changed() => {}
            _ = tokio::time::sleep(HEARTBEAT) => {}
        }
        true
    }

    /// Make sure a proven worker is running; while it keeps failing, the stage runs degraded
    /// and the waiting segments are kept on disk.
    async fn worker_ready(&mut self) -> bool {
        let (board, counters) = (&self.shared.board, &self.shared.counters);
        if let Err(f) = self.sup.ensure_ready().await {
            if matches!(f.decision, Verdict::Escalate { .. }) && !self.degraded {
                self.degraded = true;
                crate::log_error!(
                    "ASR worker keeps failing ({}): keeping speech on disk until it recovers",
                    f.class
                );
                set_degraded(board, counters, Role::Asr, true);
            }
            if self.degraded {
                for (s, _) in &self.queue {
                    if self.on_disk.insert(s.index) {
                        if let Err(e) = keep_pending(&self.cfg.pending_dir, s) {
                            crate::log_warn!("cannot keep segment {} on disk: {e:#}", s.index);
                        }
                    }
                }
            }
            return false;
        }
        if self.degraded {
            self.degraded = false;
            crate::log_info!(
                "ASR worker is back: transcribing the {} waiting segments",
                self.queue.len()
            );
            set_degraded(board, counters, Role::Asr, false);
        }
        true
    }

    /// Transcribe the oldest waiting segment: deliver it, or count the failure against it.
    async fn transcribe_front(&mut self) {
        let Some((seg, _)) = self.queue.front() else {
            return;
        };
        let result = self.sup.transcribe(seg.index, seg.samples.clone()).await;
        match result {
            Ok(text) => {
                let Some((seg, _)) = self.queue.pop_front() else {
                    return;
                };
                if self.on_disk.remove(&seg.index) {
                    let _ = std::fs::remove_file(
                        self.cfg.pending_dir.join(format!("{:08}.wav", seg.index)),
                    );
                }
                let counters = &self.shared.counters;
                counters.delivered.fetch_add(1, Ordering::Relaxed);
                counters.queued.fetch_sub(1, Ordering::Relaxed);
                (self.deliver)(SegmentText::new(&seg, text));
            }
            Err(e) => self.failed(e),
        }
    }

    /// The oldest segment's request failed: a second failure quarantines it.
    fn failed(&mut self, e: CallError) {
        let reason = match &e {
            CallError::Failed(f) => format!("{}: {}", f.class, f.reason),
            CallError::Rejected(m) => format!("rejected: {m}"),
        };
        let Some((_, attempts)) = self.queue.front_mut() else {
            return;
        };
        *attempts += 1;
        if *attempts < 2 {
            return;
        }
        let Some((seg, _)) = self.queue.pop_front() else {
            return;
        };
        let counters = &self.shared.counters;
        counters.quarantined.fetch_add(1, Ordering::Relaxed);
        counters.queued.fetch_sub(1, Ordering::Relaxed);
        self.quarantined.push(seg.index);
        let path = quarantine(&self.cfg.quarantine_dir, &seg, &reason);
        crate::log_error!(
            "segment {} failed twice ({reason}); quarantined at {}",
            seg.index,
            path.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|e| format!("(not written: {e:#})"))
        );
        self.shared.board.update(|s| s.quarantined += 1);
    }
}

/// Keep a segment that is waiting for ASR on disk (16-bit WAV), so a supervisor restart or a long
/// outage does not lose it.
fn keep_pending(dir: &std::path::Path, seg: &Segment) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    crate::io::audio::write_wav(&dir.join(format!("{:08}.wav", seg.index)), &seg.samples)?;
    Ok(())
}

/// Write a quarantined segment as WAV plus a JSON description; returns the WAV's path.
fn quarantine(dir: &std::path::Path, seg: &Segment, reason: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let base = dir.join(format!("{stamp}-{:08}", seg.index));
    let wav = base.with_extension("wav");
    crate::io::audio::write_wav(&wav, &seg.samples)?;
    let meta = serde_json::json!({
        "segment": seg.index,
        "start_s": seg.start as f64 / SAMPLE_RATE as f64,
        "end_s": seg.end as f64 / SAMPLE_RATE as f64,
        "reason": reason,
        "quarantined_at_unix_s": stamp,
    });
    std::fs::write(
        base.with_extension("json"),
        serde_json::to_vec_pretty(&meta)?,
    )?;
    Ok(wav)
}
