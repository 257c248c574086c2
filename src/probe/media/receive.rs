//! Reception statistics of one RTP stream, as RFC 3550 Appendix A defines them: sequence
//! tracking with the extended highest sequence number, probation and resynchronisation (A.1),
//! expected and lost packets (A.3), interarrival jitter (§6.4.1, A.8).
//!
//! Only the first SSRC heard is measured. A test call has one source per direction; a second
//! SSRC is a stray stream (the late packets of an earlier call on a reused port, a misrouted
//! stream, a media server switching sources), and mixing two sources' sequence numbers and
//! timestamps would turn both into nonsense loss and jitter. Its packets are counted, not
//! measured.

use rtcp::reception_report::ReceptionReport;
use std::time::Duration;

/// RTP's clock rate for G.711 (RFC 3551 §4.5.14): timestamp units per second.
pub const CLOCK_RATE: u32 = 8000;

const RTP_SEQ_MOD: u32 = 1 << 16;
/// A.1's suggested limits: a jump forward up to `MAX_DROPOUT` is loss, a step back up to
/// `MAX_MISORDER` is reordering, anything else a restart (or garbage) of the source.
const MAX_DROPOUT: u32 = 3000;
const MAX_MISORDER: u32 = 100;
/// Sequential packets a new source needs before it is measured (A.1 probation).
const MIN_SEQUENTIAL: u32 = 2;

/// One arriving RTP packet, as far as reception statistics care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    pub ssrc: u32,
    pub sequence: u16,
    pub timestamp: u32,
    /// Arrival time since the leg started.
    pub at: Duration,
}

/// What [`Reception::accept`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Counted (in order, late or reordered).
    Counted,
    /// A packet already counted.
    Duplicate,
    /// A new source's packet before it passed probation; counted once probation passes.
    Probation,
    /// A jump out of the dropout/misorder window (A.1 `bad_seq`): not counted unless the
    /// next packet follows it, which restarts the statistics.
    OutOfWindow,
    /// From a second SSRC: ignored.
    OtherSource,
}

/// The statistics of the first source heard.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reception {
    ssrc: Option<u32>,
    max_seq: u16,
    /// Sequence number cycles, shifted (A.1 `cycles`: a multiple of 2^16).
    cycles: u32,
    /// Extended sequence number of the first measured packet.
    base_seq: u32,
    bad_seq: u32,
    probation: u32,
    /// Distinct packets counted. Unlike A.1, duplicates are not counted here (they are in
    /// `duplicates`), so `expected - received` never goes negative through duplicates.
    received: u32,
    duplicates: u32,
    /// Bit `i` set: the packet `i` behind the highest was counted; 128 bits cover A.1's
    /// misorder window (up to 99 behind), which is how far back a packet is still accepted.
    seen: u128,
    /// A.3: expected and received at the last reception report, for `fraction lost`.
    expected_prior: u32,
    received_prior: u32,
    /// The last packet's arrival (in timestamp units) and RTP timestamp, for the jitter.
    last_transit: Option<(f64, u32)>,
    /// A.8 interarrival jitter, in timestamp units (kept unrounded).
    jitter: f64,
    other_source: u32,
    out_of_window: u32,
}

impl Reception {
    /// Takes one packet into the statistics.
    pub fn accept(&mut self, packet: Arrival) -> Accepted {
        match self.ssrc {
            None => {
                // A.1: a new source starts on probation, `max_seq` just before its first packet.
                self.ssrc = Some(packet.ssrc);
                self.max_seq = packet.sequence.wrapping_sub(1);
                self.probation = MIN_SEQUENTIAL;
            }
            // A source still on probation gives way to another: one stray packet must not
            // keep the real stream from being measured.
            Some(ssrc) if ssrc != packet.ssrc && self.probation > 0 => {
                self.other_source = self.other_source.saturating_add(1);
                self.ssrc = Some(packet.ssrc);
                self.max_seq = packet.sequence.wrapping_sub(1);
                self.probation = MIN_SEQUENTIAL;
            }
            Some(ssrc) if ssrc != packet.ssrc => {
                self.other_source = self.other_source.saturating_add(1);
                return Accepted::OtherSource;
            }
            Some(_) => {}
        }
        let accepted = self.update_seq(packet.sequence);
        if accepted == Accepted::Counted {
            self.update_jitter(packet);
        }
        accepted
    }

    /// RFC 3550 A.1 `update_seq`, with the duplicate check of [`Reception::seen`].
    fn update_seq(&mut self, seq: u16) -> Accepted {
        let udelta = u32::from(seq.wrapping_sub(self.max_seq));
        if self.probation > 0 {
            if seq == self.max_seq.wrapping_add(1) {
                self.probation -= 1;
                self.max_seq = seq;
                if self.probation == 0 {
                    // Unlike A.1 (which starts counting at the packet ending probation), the
                    // whole sequential run that passed probation is counted: those packets
                    // did arrive, and our own streams' loss is counted against what was sent.
                    let first = seq.wrapping_sub((MIN_SEQUENTIAL - 1) as u16);
                    self.init_seq(first);
                    self.max_seq = seq;
                    if seq < first {
                        self.cycles = RTP_SEQ_MOD;
                    }
                    self.received = MIN_SEQUENTIAL;
                    self.seen = (1 << MIN_SEQUENTIAL) - 1;
                    return Accepted::Counted;
                }
            } else {
                self.probation = MIN_SEQUENTIAL - 1;
                self.max_seq = seq;
            }
            return Accepted::Probation;
        }
        if udelta < MAX_DROPOUT {
            if udelta == 0 {
                self.duplicates = self.duplicates.saturating_add(1);
                return Accepted::Duplicate;
            }
            // In order, with a permissible gap.
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(RTP_SEQ_MOD);
            }
            self.max_seq = seq;
            self.seen = if udelta >= 128 {
                0
            } else {
                self.seen << udelta
            };
            self.seen |= 1;
        } else if udelta <= RTP_SEQ_MOD - MAX_MISORDER {
            // A very large jump: a restart of the sender if the next packet follows it.
            if u32::from(seq) == self.bad_seq {
                self.init_seq(seq);
                self.received = 1;
                self.seen = 1;
                self.last_transit = None;
                return Accepted::Counted;
            }
            self.bad_seq = (u32::from(seq) + 1) & (RTP_SEQ_MOD - 1);
            self.out_of_window = self.out_of_window.saturating_add(1);
            return Accepted::OutOfWindow;
        } else {
            // Late or reordered: `behind` (1..=99) packets behind the highest.
            let behind = RTP_SEQ_MOD - udelta;
            let bit = 1u128 << behind;
            if self.seen & bit != 0 {
                self.duplicates = self.duplicates.saturating_add(1);
                return Accepted::Duplicate;
            }
            self.seen |= bit;
        }
        self.received = self.received.saturating_add(1);
        Accepted::Counted
    }

    /// A.1 `init_seq`.
    fn init_seq(&mut self, seq: u16) {
        self.base_seq = u32::from(seq);
        self.max_seq = seq;
        self.bad_seq = RTP_SEQ_MOD + 1;
        self.cycles = 0;
        self.received = 0;
        self.expected_prior = 0;
        self.received_prior = 0;
    }

    /// §6.4.1 / A.8: J += (|D(i-1,i)| - J) / 16, D = (Rj - Ri) - (Sj - Si), in timestamp units.
    fn update_jitter(&mut self, packet: Arrival) {
        let arrival = packet.at.as_secs_f64() * f64::from(CLOCK_RATE);
        if let Some((last_arrival, last_timestamp)) = self.last_transit {
            let sent_apart = f64::from(packet.timestamp.wrapping_sub(last_timestamp) as i32);
            let d = (arrival - last_arrival) - sent_apart;
            self.jitter += (d.abs() - self.jitter) / 16.0;
        }
        self.last_transit = Some((arrival, packet.timestamp));
    }

    /// The measured source, once a packet arrived.
    pub fn ssrc(&self) -> Option<u32> {
        self.ssrc.filter(|_| self.probation == 0)
    }

    /// Distinct packets counted.
    pub fn received(&self) -> u32 {
        self.received
    }

    /// A.1's extended highest sequence number received (cycles and the highest number).
    pub fn extended_max(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }

    /// A.3: packets expected from the first to the highest sequence number counted.
    pub fn expected(&self) -> u32 {
        if self.ssrc().is_none() {
            return 0;
        }
        self.extended_max()
            .wrapping_sub(self.base_seq)
            .wrapping_add(1)
    }

    /// A.3: expected minus received, never below zero.
    pub fn lost(&self) -> u32 {
        self.expected().saturating_sub(self.received)
    }

    pub fn duplicates(&self) -> u32 {
        self.duplicates
    }

    /// Packets of another SSRC than the measured one.
    pub fn other_source(&self) -> u32 {
        self.other_source
    }

    /// Packets dropped as a jump out of the sequence window.
    pub fn out_of_window(&self) -> u32 {
        self.out_of_window
    }

    /// The interarrival jitter as time.
    pub fn jitter(&self) -> Duration {
        Duration::from_secs_f64(self.jitter / f64::from(CLOCK_RATE))
    }

    /// A reception report block about the source (§6.4.1, A.3), for an RTCP SR or RR; `None`
    /// before a source passed probation. `last_sr` and `delay` are the LSR and DLSR fields.
    pub fn report_block(&mut self, last_sr: u32, delay: u32) -> Option<ReceptionReport> {
        let ssrc = self.ssrc()?;
        let expected = self.expected();
        let expected_interval = expected.wrapping_sub(self.expected_prior);
        let received_interval = self.received.wrapping_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = i64::from(expected_interval) - i64::from(received_interval);
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / i64::from(expected_interval)).min(255) as u8
        };
        Some(ReceptionReport {
            ssrc,
            fraction_lost,
            // 24 bits on the wire.
            total_lost: self.lost().min(0x7F_FFFF),
            last_sequence_number: self.extended_max(),
            jitter: self.jitter as u32,
            last_sender_report: last_sr,
            delay,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SSRC: u32 = 0x1234_5678;

    /// Packets in the order given, `seq` with its nominal timestamp, 20 ms apart on arrival.
    fn receive(seqs: &[u16]) -> (Reception, Vec<Accepted>) {
        let mut reception = Reception::default();
        let accepted = seqs
            .iter()
            .enumerate()
            .map(|(i, &sequence)| {
                reception.accept(Arrival {
                    ssrc: SSRC,
                    sequence,
                    timestamp: u32::from(sequence) * 160,
                    at: Duration::from_millis(20 * i as u64),
                })
            })
            .collect();
        (reception, accepted)
    }

    /// (case, sequence numbers in arrival order, received, expected, lost, duplicates,
    /// extended highest)
    type Case = (&'static str, Vec<u16>, u32, u32, u32, u32, u32);

    #[test]
    fn sequence_tracking_table() {
        let table: [Case; 9] = [
            ("in order", vec![10, 11, 12, 13], 4, 4, 0, 0, 13),
            ("a gap", vec![10, 11, 13, 14], 4, 5, 1, 0, 14),
            (
                "wraps at 65535",
                vec![65534, 65535, 0, 1],
                4,
                4,
                0,
                0,
                65536 + 1,
            ),
            (
                "run ending probation wraps",
                vec![65535, 0, 1],
                3,
                3,
                0,
                0,
                65536 + 1,
            ),
            (
                "gap across the wrap",
                vec![65533, 65534, 1, 2],
                4,
                6,
                2,
                0,
                65536 + 2,
            ),
            ("reordered", vec![1, 2, 4, 3, 5], 5, 5, 0, 0, 5),
            ("duplicates", vec![1, 2, 3, 3, 2, 4], 4, 4, 0, 2, 4),
            (
                "late, 50 behind",
                (0..=60).filter(|&s| s != 10).chain([10]).collect(),
                61,
                61,
                0,
                0,
                60,
            ),
            (
                "a duplicate 99 behind",
                (0..=200).chain([101]).collect(),
                201,
                201,
                0,
                1,
                200,
            ),
        ];
        for (case, seqs, received, expected, lost, duplicates, ext) in table {
            let (r, _) = receive(&seqs);
            assert_eq!(r.received(), received, "{case}: received");
            assert_eq!(r.expected(), expected, "{case}: expected");
            assert_eq!(r.lost(), lost, "{case}: lost");
            assert_eq!(r.duplicates(), duplicates, "{case}: duplicates");
            assert_eq!(r.extended_max(), ext, "{case}: extended highest");
        }
    }

    #[test]
    fn reordering_across_the_wrap_keeps_the_cycle() {
        let (r, accepted) = receive(&[65533, 65534, 0, 65535, 1]);
        assert!(
            accepted[1..].iter().all(|a| *a == Accepted::Counted),
            "{accepted:?}"
        );
        assert_eq!((r.received(), r.expected(), r.lost()), (5, 5, 0));
        assert_eq!(r.extended_max(), 65536 + 1);
    }

    #[test]
    fn probation_needs_two_sequential_packets() {
        // A lone packet, then a gap: the first is discarded, the source restarts probation.
        let (r, accepted) = receive(&[100, 102, 103, 104]);
        assert_eq!(
            accepted,
            [
                Accepted::Probation,
                Accepted::Probation,
                Accepted::Counted,
                Accepted::Counted
            ]
        );
        assert_eq!((r.received(), r.expected()), (3, 3));
        let (r, _) = receive(&[100]);
        assert_eq!((r.ssrc(), r.received(), r.expected()), (None, 0, 0));
    }

    #[test]
    fn a_jump_is_dropped_unless_the_sender_restarted() {
        // One stray packet far away: dropped, the stream goes on.
        let (r, accepted) = receive(&[1, 2, 3, 30_000, 4]);
        assert_eq!(accepted[3], Accepted::OutOfWindow);
        assert_eq!((r.received(), r.expected(), r.out_of_window()), (4, 4, 1));
        // Two sequential packets after the jump: a restart, the statistics start again there.
        let (r, accepted) = receive(&[1, 2, 3, 30_000, 30_001, 30_002]);
        assert_eq!(accepted[4], Accepted::Counted);
        assert_eq!((r.received(), r.expected()), (2, 2));
        // A packet MAX_MISORDER (100) or more behind is such a jump, not a late packet.
        let (r, accepted) = receive(&(0..=200).chain([100]).collect::<Vec<_>>());
        assert_eq!(accepted[201], Accepted::OutOfWindow);
        assert_eq!(r.received(), 201);
    }

    #[test]
    fn a_second_source_is_counted_not_measured() {
        let mut r = Reception::default();
        // A stray packet of source 3 first: source 1 takes over while 3 is on probation.
        for (ssrc, sequence) in [(3, 7), (1, 10), (1, 11), (2, 500), (1, 12), (2, 501)] {
            r.accept(Arrival {
                ssrc,
                sequence,
                timestamp: 0,
                at: Duration::ZERO,
            });
        }
        assert_eq!((r.ssrc(), r.received(), r.other_source()), (Some(1), 3, 3));
    }

    #[test]
    fn jitter_of_a_constructed_arrival_pattern() {
        // Packets sent every 160 timestamp units (20 ms); transit delays 0, 10, 0, 10, ... ms.
        // D alternates |±10 ms| = 80 units, so J = 80 (1 - (15/16)^k) after k updates; the
        // first two packets pass probation, the first update comes with the third: k = n - 2.
        let mut r = Reception::default();
        let n = 40;
        for i in 0..n {
            let delay = if i % 2 == 0 { 0 } else { 10 };
            r.accept(Arrival {
                ssrc: SSRC,
                sequence: i as u16,
                timestamp: i * 160,
                at: Duration::from_millis(u64::from(i) * 20 + delay),
            });
        }
        let expected_units = 80.0 * (1.0 - (15.0f64 / 16.0).powi(n as i32 - 2));
        let expected = expected_units / 8000.0;
        assert!(
            (r.jitter().as_secs_f64() - expected).abs() < 1e-9,
            "{:?} vs {expected}",
            r.jitter()
        );
        // A steady stream (constant transit) has no jitter, whatever the delay.
        let (steady, _) = receive(&(0..50).collect::<Vec<_>>());
        assert_eq!(steady.jitter(), Duration::ZERO);
    }

    #[test]
    fn report_blocks_carry_fraction_and_cumulative_loss() {
        let (mut r, _) = receive(&[0, 1, 2, 4, 5, 6, 7, 8]);
        let first = r.report_block(0x1111, 0x2222).expect("a source");
        assert_eq!(first.ssrc, SSRC);
        assert_eq!(first.total_lost, 1);
        // 1 of 9 lost: 256/9 = 28.
        assert_eq!(first.fraction_lost, 28);
        assert_eq!(first.last_sequence_number, 8);
        assert_eq!((first.last_sender_report, first.delay), (0x1111, 0x2222));
        // Nothing new since: the interval's fraction is 0, the total stays.
        let second = r.report_block(0, 0).expect("a source");
        assert_eq!((second.fraction_lost, second.total_lost), (0, 1));
        assert!(Reception::default().report_block(0, 0).is_none());
    }
}
