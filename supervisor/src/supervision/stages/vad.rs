//! The VAD stage: audio in, segments out.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use swictation_policy::restart::Verdict;
use swictation_policy::segmenter::{Segment, Segmenter, SegmenterConfig};
use swictation_proto::{Role, VAD_FRAME};
use tokio::sync::mpsc;

use super::{
    command, energy_probability, recv_opt, set_degraded, Inbox, Queued, Shared, StageCommand,
};
use crate::io::journal::{Journal, Span};
use crate::supervision::placer::Order;
use crate::supervision::supervised::{CallError, Supervised};

/// Most frames sent in one VAD request (2 s): bounds the deadline and the replay on a failure.
const MAX_BATCH_FRAMES: usize = 64;

/// How often the open segment's audio is rewritten to the journal while it grows: what a crash
/// in the middle of an utterance can lose.
pub(super) const DRAFT_EVERY: Duration = Duration::from_millis(500);

/// Longest a VAD move waits for a pause in speech.
const ORDER_PATIENCE: Duration = Duration::from_secs(5);

/// The VAD stage: audio → frames → the worker (or the energy detector) → the segmenter →
/// segments for the ASR stage. Ends when the audio queue closes, with the open segment closed.
pub(super) async fn run(
    mut sup: Supervised,
    cfg: SegmenterConfig,
    journal: Option<Journal>,
    mut audio: mpsc::Receiver<Vec<f32>>,
    seg_tx: mpsc::UnboundedSender<Queued>,
    inbox: Inbox,
    shared: Shared,
) -> Supervised {
    let Inbox {
        mut commands,
        mut orders,
        held: _,
    } = inbox;
    let Shared { board, counters } = shared;
    // A VAD move waits for a pause in speech (a fresh worker starts with fresh Silero state),
    // but not forever.
    let mut order: Option<(Order, Instant)> = None;
    let mut seg = Segmenter::new(cfg);
    let mut pending: VecDeque<f32> = VecDeque::new();
    let mut energy = false;
    let mut done = false;
    let mut kept = ToJournal {
        journal,
        draft: None,
        last_flush: Instant::now(),
    };
    let emit = |kept: &mut ToJournal, segments: Vec<Segment>| {
        for s in segments {
            counters.segments_in.fetch_add(1, Ordering::Relaxed);
            counters.queued.fetch_add(1, Ordering::Relaxed);
            let journal = kept.close(&s);
            let _ = seg_tx.send(Queued {
                seg: s,
                journal,
                recovered: false,
            });
        }
    };
    while !done {
        tokio::select! {
            biased;
            Some(cmd) = recv_opt(&mut commands) => {
                if let StageCommand::Hold { at, mark } = cmd {
                    emit(&mut kept, seg.mark(at, mark));
                } else if !energy {
                    command(&mut sup, cmd).await;
                }
                continue;
            }
            // Wake at least every DRAFT_EVERY, so the open segment's draft is rewritten even
            // while no audio arrives.
            _ = tokio::time::sleep(DRAFT_EVERY) => {}
            Some(o) = orders.recv() => {
                // Carried out below, at once if no speech is in progress.
                order = Some((o, Instant::now()));
            }
            chunk = audio.recv() => match chunk {
                Some(c) => pending.extend(c),
                None => {
                    done = true;
                    let rem = pending.len() % VAD_FRAME;
                    if rem != 0 {
                        pending.extend(std::iter::repeat_n(0.0, VAD_FRAME - rem));
                    }
                }
            }
        }
        while let Ok(c) = audio.try_recv() {
            pending.extend(c);
        }
        if let Some((o, since)) = order.take() {
            if energy {
                // The worker is not running: the next start is placed afresh anyway.
            } else if !seg.in_speech() || since.elapsed() >= ORDER_PATIENCE {
                sup.switch(o).await;
            } else {
                order = Some((o, since));
            }
        }
        while pending.len() >= VAD_FRAME {
            let n = (pending.len() / VAD_FRAME).min(MAX_BATCH_FRAMES) * VAD_FRAME;
            let frames: Vec<f32> = pending.range(..n).copied().collect();
            let probs = loop {
                if energy
                    && sup.next_attempt().is_none_or(|t| t <= Instant::now())
                    && sup.ensure_ready().await.is_ok()
                {
                    energy = false;
                    crate::log_info!("VAD worker is back: leaving the energy detector");
                    set_degraded(&board, &counters, Role::Vad, false);
                }
                if energy {
                    counters
                        .energy_frames
                        .fetch_add((n / VAD_FRAME) as u64, Ordering::Relaxed);
                    break frames
                        .chunks_exact(VAD_FRAME)
                        .map(energy_probability)
                        .collect::<Vec<_>>();
                }
                if let Err(f) = sup.ensure_ready().await {
                    if matches!(f.decision, Verdict::Escalate { .. }) {
                        crate::log_error!(
                            "VAD worker keeps failing ({}): segmenting by energy until it recovers",
                            f.class
                        );
                        energy = true;
                        set_degraded(&board, &counters, Role::Vad, true);
                    }
                    continue;
                }
                let sent = Instant::now();
                match sup.vad_frames(frames.clone()).await {
                    Ok(p) => {
                        let per_frame = sent.elapsed().as_secs_f64() * 1e3 / p.len().max(1) as f64;
                        counters.record_vad(per_frame);
                        break p;
                    }
                    // The worker is gone: the same frames go to its successor.
                    Err(CallError::Failed(_)) => continue,
                    Err(CallError::Rejected(msg)) => {
                        crate::log_warn!(
                            "VAD worker refused frames ({msg}); scoring them by energy"
                        );
                        break frames
                            .chunks_exact(VAD_FRAME)
                            .map(energy_probability)
                            .collect();
                    }
                }
            };
            pending.drain(..n);
            for (frame, p) in frames.chunks_exact(VAD_FRAME).zip(probs) {
                emit(&mut kept, seg.push(frame, p));
                kept.drop_abandoned(&seg);
            }
        }
        kept.flush_open(&seg);
    }
    emit(&mut kept, seg.finish());
    kept.drop_abandoned(&seg);
    sup
}

/// The VAD stage's side of the journal: each closed segment is appended, and the open one is
/// kept as a draft, rewritten at least every [`DRAFT_EVERY`] while it grows.
struct ToJournal {
    journal: Option<Journal>,
    /// The open segment's entry stem, once its draft has been written.
    draft: Option<String>,
    last_flush: Instant,
}

impl ToJournal {
    /// Keep closed segment `s` (replacing its draft); its entry's id.
    fn close(&mut self, s: &Segment) -> Option<String> {
        let j = self.journal.as_ref()?;
        let stem = self.draft.take().unwrap_or_else(|| j.next_stem());
        let span = Span {
            start: s.start,
            end: s.end,
            speech_start: s.speech_start,
            speech_end: s.speech_end,
        };
        Some(j.put(&stem, false, span, s.samples.clone()))
    }

    /// Rewrite the open segment's draft if the last one is [`DRAFT_EVERY`] old.
    fn flush_open(&mut self, seg: &Segmenter) {
        let Some(j) = &self.journal else { return };
        if self.last_flush.elapsed() < DRAFT_EVERY {
            return;
        }
        let Some((start, speech_start, samples)) = seg.open_audio() else {
            return;
        };
        self.last_flush = Instant::now();
        let stem = self.draft.get_or_insert_with(|| j.next_stem()).clone();
        let end = start + samples.len() as u64;
        let span = Span {
            start,
            end,
            speech_start,
            speech_end: end,
        };
        j.put(&stem, true, span, samples.to_vec());
    }

    /// The open segment ended without becoming a segment (too short: noise): its draft goes.
    fn drop_abandoned(&mut self, seg: &Segmenter) {
        if seg.in_speech() {
            return;
        }
        if let (Some(j), Some(stem)) = (&self.journal, self.draft.take()) {
            j.retire(&format!("{stem}.draft"));
        }
    }
}
