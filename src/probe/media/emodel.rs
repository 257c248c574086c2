//! The ITU-T G.107 (06/2015) E-model for a G.711 call, reduced to what the probe measures:
//! the mouth-to-ear delay and the packet loss. Every other input keeps its G.107 Table 3
//! default (loudness ratings, noise, sidetone, echo loss: a standard handset on a standard
//! line), so the score says what the *network* does to the call.
//!
//! Hand-written: no Rust crate implements the E-model. Equation numbers are G.107's (06/2015).
//! The delays are set as G.107 §7.4 describes a connection with echo cancellation: talker
//! echo travels the mouth-to-ear delay (T = Ta) and the listener-echo loop is the round trip
//! (Tr = 2·Ta), with the default echo loss TELR = 65 dB.

use super::Mos;
use std::time::Duration;

// G.107 Table 3 defaults.
const SLR: f64 = 8.0;
const RLR: f64 = 2.0;
const STMR: f64 = 15.0;
const LSTR: f64 = 18.0;
const DS: f64 = 3.0;
const TELR: f64 = 65.0;
const WEPL: f64 = 110.0;
const QDU: f64 = 1.0;
const NC: f64 = -70.0;
const NFOR: f64 = -64.0;
const PS: f64 = 35.0;
const PR: f64 = 35.0;
const A: f64 = 0.0;
/// §7.4 (06/2015): the delay sensitivity parameters, at their defaults (mT = 100 ms, sT = 1).
const MT: f64 = 100.0;
const ST: f64 = 1.0;

/// G.711's equipment impairment (G.113 Table I.1): none.
const IE_G711: f64 = 0.0;
/// G.711 with packet loss concealment (G.113 Appendix I, Table I.3): its robustness to
/// random packet loss.
const BPL_G711: f64 = 25.1;
/// Random (not bursty) loss: G.107 §7.5, BurstR = 1.
const BURST_R: f64 = 1.0;

fn lg(x: f64) -> f64 {
    x.log10()
}

/// Eq. 7-3: the total noise power No (dBm0p), from circuit noise, room noise at send
/// (Nos, 7-4) and receive (Nor, 7-5, with Pre of 7-6) and the noise floor (Nfo, 7-7).
fn noise() -> f64 {
    let olr = SLR + RLR;
    let nos = PS - SLR - DS - 100.0 + 0.004 * (PS - olr - DS - 14.0).powi(2);
    let pre = PR + 10.0 * lg(1.0 + 10f64.powf((10.0 - LSTR) / 10.0));
    let nor = RLR - 121.0 + pre + 0.008 * (pre - 35.0).powi(2);
    let nfo = NFOR + RLR;
    10.0 * lg(10f64.powf(NC / 10.0)
        + 10f64.powf(nos / 10.0)
        + 10f64.powf(nor / 10.0)
        + 10f64.powf(nfo / 10.0))
}

/// Eq. 7-2: the basic signal-to-noise ratio Ro = 15 − 1.5·(SLR + No).
fn ro() -> f64 {
    15.0 - 1.5 * (SLR + noise())
}

/// Eq. 7-8 to 7-16: the simultaneous impairment Is = Iolr + Ist + Iq.
fn is() -> f64 {
    let no = noise();
    let olr = SLR + RLR;
    // 7-9, 7-10: too low a loudness.
    let xolr = olr + 0.2 * (64.0 + no - RLR);
    let iolr = 20.0 * ((1.0 + (xolr / 8.0).powi(8)).powf(1.0 / 8.0) - xolr / 8.0);
    // 7-11, 7-12: sidetone (T = 0 for the sidetone's own echo term, e^(−T/4) = 1).
    let stmro = -10.0 * lg(10f64.powf(-STMR / 10.0) + 10f64.powf(-TELR / 10.0));
    let ist = 12.0 * (1.0 + ((stmro - 13.0) / 6.0).powi(8)).powf(1.0 / 8.0)
        - 28.0 * (1.0 + ((stmro + 1.0) / 19.4).powi(35)).powf(1.0 / 35.0)
        - 13.0 * (1.0 + ((stmro - 3.0) / 33.0).powi(13)).powf(1.0 / 13.0)
        + 29.0;
    // 7-13 to 7-16: quantizing distortion, qdu = 1 for one G.711 coding.
    let q = 37.0 - 15.0 * lg(QDU);
    let g = 1.07 + 0.258 * q + 0.0602 * q * q;
    let y = (ro() - 100.0) / 15.0 + 46.0 / 8.4 - g / 9.0;
    let z = 46.0 / 30.0 - g / 40.0;
    let iq = 15.0 * lg(1.0 + 10f64.powf(y) + 10f64.powf(z));
    iolr + ist + iq
}

/// Eq. 7-17 to 7-28: the delay impairment Id = Idte + Idle + Idd for a mouth-to-ear delay
/// `ta` in ms (T = Ta, Tr = 2·Ta, see the module comment).
pub fn id(ta: f64) -> f64 {
    let t = ta;
    let tr = 2.0 * ta;
    // 7-18 to 7-21: talker echo.
    let roe = -1.5 * (noise() - RLR);
    let terv = TELR - 40.0 * lg((1.0 + t / 10.0) / (1.0 + t / 150.0)) + 6.0 * (-0.3 * t * t).exp();
    let re = 80.0 + 2.5 * (terv - 14.0);
    let idte =
        ((roe - re) / 2.0 + (((roe - re).powi(2)) / 4.0 + 100.0).sqrt() - 1.0) * (1.0 - (-t).exp());
    // 7-25, 7-26: listener echo.
    let rle = 10.5 * (WEPL + 7.0) * (tr + 1.0).powf(-0.25);
    let idle = (ro() - rle) / 2.0 + ((ro() - rle).powi(2) / 4.0 + 169.0).sqrt();
    // 7-27, 7-28: absolute delay, with the 06/2015 sensitivity parameters mT and sT.
    let idd = if ta > MT {
        let x = lg(ta / MT) / lg(2.0);
        25.0 * ((1.0 + x.powf(6.0 * ST)).powf(1.0 / (6.0 * ST))
            - 3.0 * (1.0 + (x / 3.0).powf(6.0 * ST)).powf(1.0 / (6.0 * ST))
            + 2.0)
    } else {
        0.0
    };
    idte + idle + idd
}

/// Eq. 7-29: the effective equipment impairment of G.711 with PLC at `ppl` percent random
/// packet loss: Ie,eff = Ie + (95 − Ie)·Ppl / (Ppl/BurstR + Bpl).
pub fn ie_eff(ppl: f64) -> f64 {
    IE_G711 + (95.0 - IE_G711) * ppl / (ppl / BURST_R + BPL_G711)
}

/// Eq. 7-1: R = Ro − Is − Id − Ie,eff + A.
pub fn r_factor(ta: Duration, loss_ratio: f64) -> f64 {
    let ppl = loss_ratio.clamp(0.0, 1.0) * 100.0;
    ro() - is() - id(ta.as_secs_f64() * 1000.0) - ie_eff(ppl) + A
}

/// Annex B, eq. B-4: the estimated conversational quality MOS-CQE from R.
pub fn mos_from_r(r: f64) -> f64 {
    if r < 0.0 {
        1.0
    } else if r > 100.0 {
        4.5
    } else {
        1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6
    }
}

/// The mouth-to-ear delay Ta the probe feeds the model: the network's one-way delay plus a
/// jitter buffer of twice the measured interarrival jitter (a receiver has to hold packets
/// that long to play out nearly all of them; adaptive buffers settle at 2–4 × the RFC 3550
/// jitter, 2 × is the lenient end).
pub fn mouth_to_ear(one_way: Duration, jitter: Duration) -> Duration {
    one_way + 2 * jitter
}

/// The MOS of one direction of a G.711 call.
pub fn mos(ta: Duration, loss_ratio: f64) -> Mos {
    Mos::from_f64(mos_from_r(r_factor(ta, loss_ratio)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_give_r_93_2_and_mos_4_41() {
        // G.107 §7.7: "the default values ... result in a very high quality with R = 93.2".
        let r = r_factor(Duration::ZERO, 0.0);
        assert!((r - 93.2).abs() < 0.05, "R = {r}");
        assert_eq!(mos(Duration::ZERO, 0.0).to_string(), "4.41");
    }

    #[test]
    fn mos_from_r_matches_g107_annex_b() {
        // G.107 Table B.1 / Figure B.1: user satisfaction boundaries.
        for (r, published) in [
            (93.2, 4.41),
            (90.0, 4.34),
            (80.0, 4.03),
            (70.0, 3.60),
            (60.0, 3.10),
            (50.0, 2.58),
        ] {
            let mos = mos_from_r(r);
            assert!(
                (mos - published).abs() <= 0.01,
                "R {r}: {mos} vs {published}"
            );
        }
        assert_eq!(mos_from_r(-5.0), 1.0);
        assert_eq!(mos_from_r(100.5), 4.5);
    }

    #[test]
    fn ie_eff_of_g711_with_plc() {
        // Eq. 7-29 with Ie = 0, Bpl = 25.1, BurstR = 1, worked by hand: 95·Ppl/(Ppl + 25.1).
        for (ppl, expected) in [
            (0.0, 0.0),
            (1.0, 3.64),
            (2.0, 7.01),
            (5.0, 15.78),
            (10.0, 27.07),
            (20.0, 42.13),
        ] {
            let ie = ie_eff(ppl);
            assert!((ie - expected).abs() < 0.01, "{ppl}%: {ie} vs {expected}");
        }
    }

    #[test]
    fn delay_impairment_follows_the_published_curve() {
        // G.107's Id for the default echo loss, as Cole & Rosenbluth's fit of it ("Voice over
        // IP performance monitoring", ACM CCR 31(2), 2001: Id = 0.024·Ta + 0.11·(Ta − 177.3)
        // for Ta > 177.3 ms) gives it; the fit's own error grows with the delay, so ±3.5.
        for ta in [150.0, 200.0, 300.0, 400.0] {
            let fit = 0.024 * ta + if ta > 177.3 { 0.11 * (ta - 177.3) } else { 0.0 };
            let id = id(ta);
            assert!((id - fit).abs() <= 3.5, "Ta {ta} ms: Id {id} vs {fit}");
        }
        // Below 100 ms only the small echo terms remain, and Id grows with the delay.
        assert!(id(0.0) < 0.5);
        let ids: Vec<f64> = (0..=8).map(|i| id(f64::from(i) * 50.0)).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    }

    #[test]
    fn loss_lowers_the_mos() {
        // Worked by hand: R = 93.2 − Ie,eff (the values above), then eq. B-4.
        for (loss, expected) in [(0.01, 4.33), (0.05, 3.92)] {
            let mos = mos(Duration::ZERO, loss).as_f64();
            assert!(
                (mos - expected).abs() <= 0.01,
                "{loss}: {mos} vs {expected}"
            );
        }
        assert_eq!(
            mouth_to_ear(Duration::from_millis(40), Duration::from_millis(5)),
            Duration::from_millis(50)
        );
    }
}
