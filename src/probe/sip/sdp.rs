//! The SDP offer/answer of a test call (RFC 3264, RFC 4566), built and read with webrtc-rs'
//! `sdp` crate: an audio stream with both G.711 codecs at 8 kHz in the configured order and
//! telephone-event (RFC 4733) as phones offer it, and from an answer (or an offer to answer)
//! the peer's RTP address and the codec it chose.
//!
//! Only the static payload types of G.711 (0 and 8) are accepted: the media leg sends them, and
//! a peer that names G.711 with a dynamic payload type is too rare to be worth the mapping.

use super::name_addr::shorten;
use crate::probe::media::Codec;
use sdp::SessionDescription;
use sdp::description::common::{Address, Attribute, ConnectionInformation};
use sdp::description::media::{MediaDescription, MediaName, RangedPort};
use sdp::description::session::{Origin, TimeDescription, Timing};
use std::net::{IpAddr, SocketAddr};

/// The MIME type of an SDP body.
pub(super) const CONTENT_TYPE: &str = "application/sdp";

/// The dynamic payload type we give telephone-event, as most phones do.
const TELEPHONE_EVENT: u8 = 101;

/// What a negotiated audio stream needs: where the peer receives RTP, and in which codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Negotiated {
    pub remote: SocketAddr,
    pub codec: Codec,
}

/// Our offer: RTP to `address` (the advertised one), both G.711 codecs with `first` first.
pub(super) fn offer(address: SocketAddr, first: Codec, session_id: u64) -> Vec<u8> {
    let second = match first {
        Codec::Pcma => Codec::Pcmu,
        Codec::Pcmu => Codec::Pcma,
    };
    describe(address, &[first, second], session_id)
}

/// Our answer to `offer`: the first of the offered codecs we take, RTP to `address`.
/// `Err` says why the offer cannot be answered.
pub(super) fn answer(
    offer: Option<&[u8]>,
    address: SocketAddr,
    session_id: u64,
) -> Result<(Vec<u8>, Negotiated), String> {
    let negotiated = read(offer)?;
    Ok((
        describe(address, &[negotiated.codec], session_id),
        negotiated,
    ))
}

/// Reads the peer's side from an answer (or an offer): the first audio stream's address and
/// the first G.711 codec among its formats. `Err` names what makes it unusable.
pub(super) fn read(body: Option<&[u8]>) -> Result<Negotiated, String> {
    let body = body.ok_or("no SDP in the answer")?;
    let session = SessionDescription::unmarshal(&mut std::io::Cursor::new(body))
        .map_err(|e| format!("unreadable SDP: {e}"))?;
    let audio = session
        .media_descriptions
        .iter()
        .find(|m| m.media_name.media == "audio")
        .ok_or("no audio stream in the SDP")?;
    let port = u16::try_from(audio.media_name.port.value)
        .ok()
        .filter(|p| *p != 0)
        .ok_or("the audio stream was rejected (port 0)")?;
    let connection = audio
        .connection_information
        .as_ref()
        .or(session.connection_information.as_ref())
        .and_then(|c| c.address.as_ref())
        .ok_or("no connection address in the SDP")?;
    let ip: IpAddr = connection.address.parse().map_err(|_| {
        format!(
            "connection address {} is not an IP address",
            shorten(&connection.address)
        )
    })?;
    if ip.is_unspecified() {
        return Err("the connection address is unspecified (call on hold)".into());
    }
    let codec = audio
        .media_name
        .formats
        .iter()
        .find_map(|format| match format.trim() {
            "8" => Some(Codec::Pcma),
            "0" => Some(Codec::Pcmu),
            _ => None,
        })
        .ok_or_else(|| {
            format!(
                "none of the offered codecs (PCMA, PCMU) in the formats {}",
                shorten(&audio.media_name.formats.join(" "))
            )
        })?;
    Ok(Negotiated {
        remote: SocketAddr::new(ip, port),
        codec,
    })
}

/// A session with one sendrecv audio stream in `codecs` plus telephone-event.
fn describe(address: SocketAddr, codecs: &[Codec], session_id: u64) -> Vec<u8> {
    let address_type = match address.ip() {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    };
    let ip = address.ip().to_string();
    let mut audio = MediaDescription {
        media_name: MediaName {
            media: "audio".into(),
            port: RangedPort {
                value: i32::from(address.port()) as isize,
                range: None,
            },
            protos: vec!["RTP".into(), "AVP".into()],
            formats: Vec::new(),
        },
        ..MediaDescription::default()
    };
    for codec in codecs {
        audio = audio.with_codec(
            codec.payload_type(),
            codec.name().into(),
            8000,
            0,
            String::new(),
        );
    }
    audio = audio
        .with_codec(
            TELEPHONE_EVENT,
            "telephone-event".into(),
            8000,
            0,
            "0-16".into(),
        )
        .with_value_attribute("ptime".into(), "20".into())
        .with_property_attribute("sendrecv".into());
    let session = SessionDescription {
        version: 0,
        origin: Origin {
            username: "voipcheck".into(),
            session_id,
            session_version: session_id,
            network_type: "IN".into(),
            address_type: address_type.into(),
            unicast_address: ip.clone(),
        },
        session_name: "voipcheck test call".into(),
        connection_information: Some(ConnectionInformation {
            network_type: "IN".into(),
            address_type: address_type.into(),
            address: Some(Address {
                address: ip,
                ttl: None,
                range: None,
            }),
        }),
        time_descriptions: vec![TimeDescription {
            timing: Timing {
                start_time: 0,
                stop_time: 0,
            },
            repeat_times: Vec::new(),
        }],
        attributes: Vec::<Attribute>::new(),
        media_descriptions: vec![audio],
        ..SessionDescription::default()
    };
    session.marshal().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offer_lists_both_codecs_in_order_and_telephone_event() {
        let ours = offer("192.0.2.7:40000".parse().unwrap(), Codec::Pcmu, 7);
        let text = String::from_utf8(ours.clone()).unwrap();
        assert!(text.contains("c=IN IP4 192.0.2.7\r\n"), "{text}");
        assert!(text.contains("m=audio 40000 RTP/AVP 0 8 101\r\n"), "{text}");
        assert!(text.contains("a=rtpmap:8 PCMA/8000\r\n"), "{text}");
        assert!(
            text.contains("a=rtpmap:101 telephone-event/8000\r\n"),
            "{text}"
        );
        assert!(text.contains("a=sendrecv\r\n"), "{text}");
        let read = read(Some(&ours)).unwrap();
        assert_eq!(read.codec, Codec::Pcmu);
        assert_eq!(read.remote, "192.0.2.7:40000".parse().unwrap());
        let v6 = String::from_utf8(offer(
            "[2001:db8::7]:40002".parse().unwrap(),
            Codec::Pcma,
            1,
        ))
        .unwrap();
        assert!(v6.contains("c=IN IP6 2001:db8::7\r\n"), "{v6}");
        assert!(v6.contains("m=audio 40002 RTP/AVP 8 0 101\r\n"), "{v6}");
    }

    #[test]
    fn an_answer_takes_the_first_offered_codec_it_knows() {
        let peer = b"v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=audio 30000 RTP/AVP 18 0 8\r\na=rtpmap:18 G729/8000\r\n";
        let (ours, negotiated) = answer(Some(peer), "192.0.2.1:50000".parse().unwrap(), 3).unwrap();
        assert_eq!(negotiated.codec, Codec::Pcmu);
        assert_eq!(negotiated.remote, "192.0.2.9:30000".parse().unwrap());
        let ours = String::from_utf8(ours).unwrap();
        assert!(ours.contains("m=audio 50000 RTP/AVP 0 101\r\n"), "{ours}");
    }

    #[test]
    fn unusable_answers_say_why() {
        let cases: [(&[u8], &str); 5] = [
            (b"v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=audio 30000 RTP/AVP 18\r\n", "none of the offered codecs"),
            (b"v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=audio 0 RTP/AVP 8\r\n", "port 0"),
            (b"v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nt=0 0\r\nm=audio 30000 RTP/AVP 8\r\n", "no connection address"),
            (b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 30000 RTP/AVP 8\r\n", "on hold"),
            (b"\x00\xffnot sdp at all", "unreadable SDP"),
        ];
        for (body, expected) in cases {
            let err = read(Some(body)).unwrap_err();
            assert!(
                err.contains(expected),
                "{err} for {:?}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(read(None).unwrap_err(), "no SDP in the answer");
    }
}
