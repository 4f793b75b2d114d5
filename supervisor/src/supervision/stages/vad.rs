//! The VAD stage: audio in, segments out.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use swictation_policy::restart::Verdict;
use swictation_policy::segmenter::{Segment, Segmenter, SegmenterConfig};
use swictation_proto::{Role, VAD_FRAME};
use tokio::sync::mpsc;

use super::{command, energy_probability, recv_opt, set_degraded, Inbox, Shared};
use crate::supervision::placer::Order;
use crate::supervision::supervised::{CallError, Supervised};

/// Most frames sent in one VAD request (2 s): bounds the deadline and the replay on a failure.
const MAX_BATCH_FRAMES: usize = 64;

/// Longest a VAD move waits for a pause in speech.
const ORDER_PATIENCE: Duration = Duration::from_secs(5);

/// The VAD stage: audio → frames → the worker (or the energy detector) → the segmenter →
/// segments for the ASR stage. Ends when the audio queue closes, with the open segment closed.
pub(super) async fn run(
    mut sup: Supervised,
    cfg: SegmenterConfig,
    mut audio: mpsc::Receiver<Vec<f32>>,
    seg_tx: mpsc::UnboundedSender<Segment>,
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
    let emit = |segments: Vec<Segment>| {
        for s in segments {
            counters.segments_in.fetch_add(1, Ordering::Relaxed);
            counters.queued.fetch_add(1, Ordering::Relaxed);
            let _ = seg_tx.send(s);
        }
    };
    while !done {
        tokio::select! {
            biased;
            Some(cmd) = recv_opt(&mut commands) => {
                if !energy {
                    command(&mut sup, cmd).await;
                }
                continue;
            }
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
                emit(seg.push(frame, p));
            }
        }
    }
    emit(seg.finish());
    sup
}
