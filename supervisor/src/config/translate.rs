//! The configuration file's words turned into the placement policy's tuning: `[gpu]`, with
//! `[asr]` and `[vad]` for the derived and fixed ladders. It lives on the config side so that the
//! pure policy knows nothing of files and keys; a ladder that cannot be used comes back as a
//! [`LadderError`] naming the role and the key, never as text to guess from.

use std::time::Duration;

use swictation_policy::placement::{Ladder, ModelSize, PlacementConfig, Threshold, Thresholds};
use swictation_proto::Role;

use super::{Config, GpuConfig, PlacementMode};

/// A configured ladder the policy cannot use.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key} = {value}: {reason}")]
pub struct LadderError {
    /// Whose ladder.
    pub role: Role,
    /// The configuration key that holds it (`gpu.asr_ladder`, `gpu.vad_ladder`).
    pub key: &'static str,
    /// The value as written.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl LadderError {
    fn asr(g: &GpuConfig, reason: String) -> Self {
        Self {
            role: Role::Asr,
            key: "gpu.asr_ladder",
            value: format!("{:?}", g.asr_ladder),
            reason,
        }
    }

    fn vad(g: &GpuConfig, reason: String) -> Self {
        Self {
            role: Role::Vad,
            key: "gpu.vad_ladder",
            value: format!("{:?}", g.vad_ladder),
            reason,
        }
    }
}

/// The placement policy the configuration describes.
pub fn placement_config(c: &Config) -> Result<PlacementConfig, LadderError> {
    let g = &c.gpu;
    let model = match c.asr.model.as_str() {
        "tiny" => ModelSize::Tiny,
        // A model directory of the user's own is treated as the big one.
        _ => ModelSize::Base,
    };
    let ladder = match g.placement {
        PlacementMode::Auto => Ladder {
            asr: if g.asr_ladder.is_empty() {
                Ladder::derived(model, c.asr.context_s).asr
            } else {
                Ladder::parse_asr(&g.asr_ladder).map_err(|e| LadderError::asr(g, e))?
            },
            vad: Ladder::parse_vad(&g.vad_ladder).map_err(|e| LadderError::vad(g, e))?,
        },
        PlacementMode::Fixed => Ladder::fixed(
            c.vad.device,
            c.asr.encoder_device,
            c.asr.decoder_device,
            model,
            c.asr.context_s,
        ),
    };
    Ladder::validate_asr(&ladder.asr).map_err(|e| LadderError::asr(g, e))?;
    Ladder::validate_vad(&ladder.vad).map_err(|e| LadderError::vad(g, e))?;
    Ok(PlacementConfig {
        ladder,
        thresholds: thresholds(g),
        margin_mb: g.margin_mb,
        hysteresis_mb: g.hysteresis_mb,
        promote_after: Duration::from_secs_f64(g.promote_after_s.clamp(0.0, 86_400.0)),
        ..PlacementConfig::default()
    })
}

/// The pressure thresholds of the `[gpu]` section (MB in use where given, else percentages).
pub fn thresholds(g: &GpuConfig) -> Thresholds {
    Thresholds {
        warning: g
            .warning_mb
            .map_or(Threshold::Pct(g.warning_pct), Threshold::UsedMb),
        critical: g
            .critical_mb
            .map_or(Threshold::Pct(g.critical_pct), Threshold::UsedMb),
        emergency: g
            .emergency_mb
            .map_or(Threshold::Pct(g.emergency_pct), Threshold::UsedMb),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_come_from_percentages_or_mb() {
        let g = GpuConfig {
            warning_pct: 70.0,
            critical_pct: 80.0,
            emergency_pct: 90.0,
            ..GpuConfig::default()
        };
        assert_eq!(thresholds(&g).critical, Threshold::Pct(80.0));
        let g = GpuConfig {
            critical_mb: Some(3500),
            ..g
        };
        let t = thresholds(&g);
        assert_eq!(
            (t.warning, t.critical, t.emergency),
            (
                Threshold::Pct(70.0),
                Threshold::UsedMb(3500),
                Threshold::Pct(90.0)
            )
        );
    }

    #[test]
    fn a_ladder_error_names_the_role_and_key() {
        let mut c = Config::default();
        c.gpu.vad_ladder = "cuda".to_owned();
        let e = placement_config(&c).unwrap_err();
        assert_eq!((e.role, e.key), (Role::Vad, "gpu.vad_ladder"));
        let mut c = Config::default();
        c.gpu.asr_ladder = vec!["encoder=cuda decoder=cuda model=base context=10".to_owned()];
        let e = placement_config(&c).unwrap_err();
        assert_eq!((e.role, e.key), (Role::Asr, "gpu.asr_ladder"));
        let mut c = Config::default();
        c.gpu.asr_ladder = vec!["encoder=vulkan".to_owned()];
        let e = placement_config(&c).unwrap_err();
        assert_eq!(e.role, Role::Asr);
        assert!(e.reason.contains("asr rung 1"), "{e}");
    }
}
