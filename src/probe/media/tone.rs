//! The audio the probe sends: a 1004 Hz test tone (ITU-T O.6's reference frequency, chosen so
//! that it is not a submultiple of the 8 kHz sampling rate), G.711-encoded.
//!
//! A tone and not digital silence: SBCs, media gateways and transcoders may suppress silence
//! (VAD/comfort noise) or drop all-zero frames, which would show up as loss that a real call
//! does not have. The G.711 encoders are the classic few lines of ITU-T G.711 §2/§3 (as in the
//! CCITT reference `g711.c`); no maintained Rust crate offers just the encoder, and a
//! transcoding library for two lookup formulas would be out of proportion.

use super::Codec;
use std::sync::LazyLock;

/// Samples per 20 ms packet at 8 kHz: one byte each in G.711.
pub const FRAME_SAMPLES: usize = 160;

/// One second of the tone: 8000 samples hold exactly 1004 periods, so the second repeats
/// without a phase jump and frames are slices of it.
const TONE_SAMPLES: usize = 8000;
const TONE_HZ: f64 = 1004.0;
/// About −10 dBm0 (G.711's full scale is +3.14 dBm0): loud enough for any level detector,
/// far from clipping.
const TONE_AMPLITUDE: f64 = 0.3 * i16::MAX as f64;

static PCMA_TONE: LazyLock<Vec<u8>> = LazyLock::new(|| tone(linear_to_alaw));
static PCMU_TONE: LazyLock<Vec<u8>> = LazyLock::new(|| tone(linear_to_ulaw));

/// The payload of packet number `index` (0, 1, ...) of a stream in `codec`.
pub fn frame(codec: Codec, index: u32) -> &'static [u8] {
    let second: &'static [u8] = match codec {
        Codec::Pcma => &PCMA_TONE,
        Codec::Pcmu => &PCMU_TONE,
    };
    let start = (index as usize % (TONE_SAMPLES / FRAME_SAMPLES)) * FRAME_SAMPLES;
    &second[start..start + FRAME_SAMPLES]
}

fn tone(encode: fn(i16) -> u8) -> Vec<u8> {
    (0..TONE_SAMPLES)
        .map(|n| {
            let phase = 2.0 * std::f64::consts::PI * TONE_HZ * n as f64 / TONE_SAMPLES as f64;
            encode((TONE_AMPLITUDE * phase.sin()).round() as i16)
        })
        .collect()
}

/// The G.711 segment (0..=7) of a magnitude, given each segment's upper end; 8 = beyond.
fn segment(magnitude: i32, ends: &[i32; 8]) -> i32 {
    ends.iter().take_while(|&&end| magnitude > end).count() as i32
}

/// G.711 A-law (§3): 13-bit magnitude, 8 segments, even bits inverted (XOR 0x55).
pub fn linear_to_alaw(sample: i16) -> u8 {
    const ENDS: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
    let value = i32::from(sample) >> 3;
    let (mask, magnitude) = if value >= 0 {
        (0xD5, value)
    } else {
        (0x55, -value - 1)
    };
    let seg = segment(magnitude, &ENDS);
    let code = match seg {
        8 => 0x7F,
        0 | 1 => (seg << 4) | ((magnitude >> 1) & 0x0F),
        _ => (seg << 4) | ((magnitude >> seg) & 0x0F),
    };
    (code ^ mask) as u8
}

/// G.711 µ-law (§2): 14-bit magnitude plus the bias 33, 8 segments, all bits inverted.
pub fn linear_to_ulaw(sample: i16) -> u8 {
    const ENDS: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
    const CLIP: i32 = 8159;
    const BIAS: i32 = 0x84 >> 2;
    let value = i32::from(sample) >> 2;
    let (mask, magnitude) = if value < 0 {
        (0x7F, -value)
    } else {
        (0xFF, value)
    };
    let magnitude = magnitude.min(CLIP) + BIAS;
    let seg = segment(magnitude, &ENDS);
    let code = if seg >= 8 {
        0x7F
    } else {
        (seg << 4) | ((magnitude >> (seg + 1)) & 0x0F)
    };
    (code ^ mask) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    /// G.711 decoders (the reference `g711.c`), to check the encoders against: test-only.
    fn alaw_to_linear(code: u8) -> i32 {
        let a = i32::from(code ^ 0x55);
        let mut t = (a & 0x0F) << 4;
        let seg = (a & 0x70) >> 4;
        match seg {
            0 => t += 8,
            1 => t += 0x108,
            _ => t = (t + 0x108) << (seg - 1),
        }
        if a & 0x80 != 0 { t } else { -t }
    }

    fn ulaw_to_linear(code: u8) -> i32 {
        let u = i32::from(!code);
        let t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4);
        if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 }
    }

    #[test]
    fn encoders_match_the_g711_code_points() {
        // (linear, A-law, µ-law): zero, the smallest negative value, the extremes.
        let table: [(i16, u8, u8); 4] = [
            (0, 0xD5, 0xFF),
            (-1, 0x55, 0x7E),
            (i16::MAX, 0xAA, 0x80),
            (i16::MIN, 0x2A, 0x00),
        ];
        for (linear, alaw, ulaw) in table {
            assert_eq!(linear_to_alaw(linear), alaw, "A-law of {linear}");
            assert_eq!(linear_to_ulaw(linear), ulaw, "µ-law of {linear}");
        }
    }

    #[test]
    fn encoding_then_decoding_stays_within_the_segment_step() {
        for linear in (i16::MIN..=i16::MAX).step_by(7) {
            let x = i32::from(linear);
            // The quantisation step doubles per segment: 1/16 of the magnitude plus the
            // smallest step bounds the error of both laws.
            let bound = x.abs() / 16 + 64;
            let a = alaw_to_linear(linear_to_alaw(linear));
            let u = ulaw_to_linear(linear_to_ulaw(linear));
            assert!((a - x).abs() <= bound, "A-law {x} -> {a}");
            assert!((u - x).abs() <= bound, "µ-law {x} -> {u}");
        }
    }

    #[test]
    fn frames_carry_the_tone_not_silence() {
        for codec in [Codec::Pcma, Codec::Pcmu] {
            for index in [0, 1, 49, 50, 12345] {
                let frame = frame(codec, index);
                assert_eq!(frame.len(), FRAME_SAMPLES);
                let silence = match codec {
                    Codec::Pcma => linear_to_alaw(0),
                    Codec::Pcmu => linear_to_ulaw(0),
                };
                let loud = frame.iter().filter(|&&b| b != silence).count();
                assert!(loud > FRAME_SAMPLES * 9 / 10, "{codec} frame {index}");
            }
            // 50 frames are one second; the 51st repeats the first.
            assert_eq!(frame(codec, 50), frame(codec, 0));
            assert_ne!(frame(codec, 1), frame(codec, 0));
        }
        // The decoded tone peaks near its amplitude: a real signal, not a constant.
        let peak = frame(Codec::Pcma, 0)
            .iter()
            .map(|&b| alaw_to_linear(b).abs())
            .max();
        assert!(peak.is_some_and(|p| (p as f64 - TONE_AMPLITUDE).abs() < TONE_AMPLITUDE * 0.1));
    }
}
