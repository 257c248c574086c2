//! What arrives at a leg's RTP port, classified before anything in it is trusted: the far end
//! may be hostile or broken (garbage, truncated packets, RTCP multiplexed onto the RTP port,
//! oversized datagrams).

use rtp::header::Header;
use rtp::packet::Packet;
use webrtc_util::marshal::Unmarshal;

/// The largest datagram read: G.711 at 20 ms is 172 bytes; anything near this is not audio.
pub const MAX_DATAGRAM: usize = 2048;

const FIXED_HEADER: usize = 12;
/// RFC 8285 header extension profiles.
const ONE_BYTE_PROFILE: u16 = 0xBEDE;
const TWO_BYTE_PROFILE_MASK: u16 = 0xFFF0;
const TWO_BYTE_PROFILE: u16 = 0x1000;

/// One datagram from the RTP port.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    Rtp(Header),
    /// RTCP on the RTP port (RFC 5761 §4: packet types 200–204 read as RTP payload types
    /// 72–76 with the marker bit); this leg does not multiplex RTCP.
    Rtcp,
    /// Not RTP version 2, or shorter than its own header says.
    Malformed,
}

pub fn classify(datagram: &[u8]) -> Inbound {
    if datagram.len() < 2 || datagram[0] >> 6 != 2 {
        return Inbound::Malformed;
    }
    if (72..=76).contains(&(datagram[1] & 0x7F)) {
        return Inbound::Rtcp;
    }
    if datagram.len() < FIXED_HEADER {
        return Inbound::Malformed;
    }
    if !extension_fits(datagram) {
        return Inbound::Malformed;
    }
    match Packet::unmarshal(&mut &datagram[..]) {
        Ok(packet) => Inbound::Rtp(packet.header),
        Err(_) => Inbound::Malformed,
    }
}

/// Whether the RFC 8285 extension elements stay inside their extension block. The `rtp`
/// crate (0.17) reads each element's length without checking it against the datagram and
/// panics on one that runs past the end (see the test below), so this is checked first.
fn extension_fits(datagram: &[u8]) -> bool {
    if datagram[0] & 0x10 == 0 {
        return true;
    }
    let start = FIXED_HEADER + 4 * usize::from(datagram[0] & 0x0F);
    let Some(head) = datagram.get(start..start + 4) else {
        return false;
    };
    let profile = u16::from_be_bytes([head[0], head[1]]);
    let end = start + 4 + 4 * usize::from(u16::from_be_bytes([head[2], head[3]]));
    let Some(block) = datagram.get(start + 4..end) else {
        return false;
    };
    let two_byte = profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE;
    if profile != ONE_BYTE_PROFILE && !two_byte {
        return true;
    }
    let mut at = 0;
    while at < block.len() {
        let id = block[at];
        at += 1;
        if id == 0 {
            continue;
        }
        let length = if two_byte {
            let Some(&length) = block.get(at) else {
                return false;
            };
            at += 1;
            usize::from(length)
        } else if id >> 4 == 0x0F {
            return true;
        } else {
            usize::from(id & 0x0F) + 1
        };
        at += length;
        if at > block.len() {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rtp(first: u8, extension: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut packet = vec![first, 8, 0, 1, 0, 0, 0, 160, 1, 2, 3, 4];
        packet.extend_from_slice(extension);
        packet.extend_from_slice(payload);
        packet
    }

    #[test]
    fn datagrams_are_classified() {
        let element_past_end = [0xBE, 0xDE, 0, 1, 0x1F, 0, 0, 0];
        let two_byte_past_end = [0x10, 0x00, 0, 1, 1, 9, 0, 0];
        let fitting = [0xBE, 0xDE, 0, 1, 0x11, 0xAA, 0xBB, 0];
        let table: [(&str, Vec<u8>, bool); 9] = [
            ("G.711 packet", rtp(0x80, &[], &[0xD5; 160]), true),
            ("empty payload", rtp(0x80, &[], &[]), true),
            (
                "truncated header",
                rtp(0x80, &[], &[])[..11].to_vec(),
                false,
            ),
            ("version 1", rtp(0x40, &[], &[0xD5; 160]), false),
            ("CSRC count beyond the datagram", rtp(0x8F, &[], &[]), false),
            (
                "padding longer than the payload",
                rtp(0xA0, &[], &[9]),
                false,
            ),
            (
                "extension element past the end",
                rtp(0x90, &element_past_end, &[]),
                false,
            ),
            (
                "two-byte element past the end",
                rtp(0x90, &two_byte_past_end, &[]),
                false,
            ),
            ("fitting extension", rtp(0x90, &fitting, &[0xD5; 160]), true),
        ];
        for (case, datagram, is_rtp) in table {
            let inbound = classify(&datagram);
            assert_eq!(
                matches!(inbound, Inbound::Rtp(_)),
                is_rtp,
                "{case}: {inbound:?}"
            );
            if !is_rtp {
                assert_eq!(inbound, Inbound::Malformed, "{case}");
            }
        }
        let Inbound::Rtp(header) = classify(&rtp(0x80, &[], &[0xD5; 160])) else {
            panic!("RTP expected");
        };
        assert_eq!(
            (
                header.payload_type,
                header.sequence_number,
                header.timestamp,
                header.ssrc
            ),
            (8, 1, 160, 0x0102_0304)
        );
        // An RTCP receiver report without blocks (V=2, PT=201, 8 bytes) on the RTP port.
        assert_eq!(classify(&[0x80, 201, 0, 1, 1, 2, 3, 4]), Inbound::Rtcp);
    }

    #[test]
    fn the_rtp_crate_panics_on_an_extension_element_past_the_end() {
        // Why `extension_fits` exists: remove it once this stops panicking.
        let datagram = rtp(0x90, &[0xBE, 0xDE, 0, 1, 0x1F, 0, 0, 0], &[]);
        let parsed = std::panic::catch_unwind(|| Packet::unmarshal(&mut &datagram[..]));
        assert!(parsed.is_err());
    }

    proptest! {
        #[test]
        fn any_datagram_is_classified_without_panic(
            first in any::<u8>(),
            rest in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut datagram = vec![0x80 | (first & 0x3F)];
            datagram.extend(rest);
            classify(&datagram);
        }
    }
}
