//! The ASR stage: segments in, transcripts out, in order, once.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Result;
use swictation_policy::restart::Verdict;
use swictation_policy::segmenter::Segment;
use swictation_proto::{Role, SAMPLE_RATE};
use tokio::sync::{mpsc, watch};

use super::{command, recv_opt, set_degraded, Inbox, PipelineConfig, Queued, Shared, StageCommand};
use crate::report::status::Event;
use crate::supervision::engine::SegmentText;
use crate::supervision::placer::{Hold, Order};
use crate::supervision::supervised::{CallError, Supervised};

/// How often an idle ASR worker is pinged (a frozen one is then killed and restarted).
const HEARTBEAT: Duration = Duration::from_secs(1);

/// The ASR stage's state: its worker, what it hears, and the segments waiting for it.
pub(super) struct AsrStage<D> {
    sup: Supervised,
    seg_rx: mpsc::UnboundedReceiver<Queued>,
    deliver: D,
    commands: Option<mpsc::UnboundedReceiver<StageCommand>>,
    orders: mpsc::UnboundedReceiver<Order>,
    held: watch::Receiver<Option<Hold>>,
    shared: Shared,
    cfg: PipelineConfig,
    /// Segments waiting, oldest first, with the worker deaths on each.
    queue: VecDeque<(Queued, u32)>,
    /// The segment queue has closed: no more segments will come.
    closed: bool,
    /// Requests are held by the placer (reported once per hold).
    holding: bool,
    /// The worker keeps failing: segments wait (reported once per outage).
    degraded: bool,
    quarantined: Vec<u64>,
}

/// Indices given to segments replayed from the journal (an earlier run's own indices would
/// collide with this run's).
pub const REPLAYED_INDEX: u64 = 1 << 62;

impl<D: FnMut(SegmentText) + Send + 'static> AsrStage<D> {
    pub(super) fn new(
        sup: Supervised,
        seg_rx: mpsc::UnboundedReceiver<Queued>,
        deliver: D,
        inbox: Inbox,
        shared: Shared,
        mut cfg: PipelineConfig,
    ) -> Self {
        // What an earlier run left is transcribed first, in the order it was spoken.
        let mut queue = VecDeque::new();
        for (i, e) in std::mem::take(&mut cfg.replay).into_iter().enumerate() {
            let seg = Segment {
                index: REPLAYED_INDEX + i as u64,
                start: e.start,
                end: e.end,
                samples: e.samples,
                forced_split: false,
                speech_start: e.speech_start,
                speech_end: e.speech_end,
            };
            shared.counters.queued.fetch_add(1, Ordering::Relaxed);
            queue.push_back((
                Queued {
                    seg,
                    journal: Some(e.id),
                    recovered: true,
                },
                0,
            ));
        }
        Self {
            sup,
            seg_rx,
            deliver,
            commands: inbox.commands,
            orders: inbox.orders,
            held: inbox.held.unwrap_or_else(|| watch::channel(None).1),
            shared,
            cfg,
            queue,
            closed: false,
            holding: false,
            degraded: false,
            quarantined: Vec::new(),
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
    /// (the waiting segments are in the journal, when there is one).
    async fn worker_ready(&mut self) -> bool {
        let (board, counters) = (&self.shared.board, &self.shared.counters);
        if let Err(f) = self.sup.ensure_ready().await {
            if matches!(f.decision, Verdict::Escalate { .. }) && !self.degraded {
                self.degraded = true;
                crate::log_error!(
                    "ASR worker keeps failing ({}): {} segment(s) wait {} until it recovers",
                    f.class,
                    self.queue.len(),
                    if self.cfg.journal.is_some() {
                        "in the journal"
                    } else {
                        "in memory"
                    }
                );
                set_degraded(board, counters, Role::Asr, true);
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
        let Some((q, _)) = self.queue.front() else {
            return;
        };
        let result = self
            .sup
            .transcribe(q.seg.index, q.seg.samples.clone())
            .await;
        match result {
            Ok(text) => {
                let Some((q, _)) = self.queue.pop_front() else {
                    return;
                };
                let counters = &self.shared.counters;
                counters.delivered.fetch_add(1, Ordering::Relaxed);
                counters.queued.fetch_sub(1, Ordering::Relaxed);
                let mut t = SegmentText::new(&q.seg, text);
                t.journal = q.journal;
                t.recovered = q.recovered;
                (self.deliver)(t);
            }
            Err(CallError::Failed(f)) => {
                // The worker died (or hung and was killed) on this segment: a second death
                // quarantines it.
                let Some((_, deaths)) = self.queue.front_mut() else {
                    return;
                };
                *deaths += 1;
                if *deaths >= 2 {
                    self.quarantine_front(&format!("killed the worker twice: {}", f.class));
                }
            }
            Err(CallError::Rejected(m)) => {
                // An error reply: the worker lives and would refuse it again; the segment is set
                // aside with the reason rather than retried.
                crate::log_warn!("the ASR worker refused a segment: {m}");
                self.quarantine_front(&format!("refused by the worker: {m}"));
            }
        }
    }

    /// Set the oldest segment aside (WAV + JSON), with `reason`.
    fn quarantine_front(&mut self, reason: &str) {
        let Some((q, _)) = self.queue.pop_front() else {
            return;
        };
        let seg = q.seg;
        let counters = &self.shared.counters;
        counters.quarantined.fetch_add(1, Ordering::Relaxed);
        counters.queued.fetch_sub(1, Ordering::Relaxed);
        self.quarantined.push(seg.index);
        let path = quarantine(&self.cfg.quarantine_dir, &seg, reason);
        if let (Ok(_), Some(j), Some(id)) = (&path, &self.cfg.journal, &q.journal) {
            // The quarantine holds it now.
            j.retire(id);
        }
        let at = path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|e| format!("(not written: {e:#})"));
        crate::log_error!(
            "segment {} set aside ({reason}); quarantined at {at}",
            seg.index
        );
        self.shared.board.update(|s| s.quarantined += 1);
        self.shared.board.emit(Event::Quarantined {
            segment: seg.index,
            reason: reason.to_owned(),
            path: at,
        });
    }
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
