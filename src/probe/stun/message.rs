//! The messages of a Binding transaction, encoded and decoded with stun-rs, and the rules for
//! what a received message means for the transaction that waits for it (RFC 8489 §6.3).

use serde::Serialize;
use std::net::SocketAddr;
use stun_rs::attributes::discovery::{
    ChangeRequest, ChangeRequestFlags, OtherAddress, ResponseOrigin, ResponsePort,
};
use stun_rs::attributes::stun::{
    ErrorCode, MappedAddress, Software, UnknownAttributes, XorMappedAddress,
};
use stun_rs::methods::BINDING;
use stun_rs::{
    MESSAGE_HEADER_SIZE, MessageClass, MessageDecoderBuilder, MessageEncoderBuilder, MessageHeader,
    StunAttribute, StunAttributeType, StunMessage, StunMessageBuilder, TransactionId,
};

/// The largest message accepted, over UDP and TCP. A Binding response carries a handful of
/// address attributes and perhaps SOFTWARE; 2 KiB is generous and bounds every read.
pub(super) const MAX_MESSAGE: usize = 2048;

/// Which attribute carried the mapped address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MappedVia {
    /// XOR-MAPPED-ADDRESS (RFC 5389 and later).
    XorMappedAddress,
    /// MAPPED-ADDRESS only: an old RFC 3489 server (or one behind an address-rewriting ALG).
    MappedAddress,
}

/// A Binding request, encoded, with its random transaction ID.
pub(super) struct Request {
    pub txid: TransactionId,
    pub bytes: Vec<u8>,
}

impl Request {
    /// A plain Binding request.
    pub fn binding() -> Self {
        Self::encode(None)
    }

    /// A Binding request asking the server to answer to `port` (RFC 5780 §7.5) instead of the
    /// source port of the request.
    pub fn response_port(port: u16) -> Self {
        Self::encode(Some(ResponsePort::new(port).into()))
    }

    /// A Binding request asking the server to answer from its other IP and/or port (RFC 5780
    /// §7.2).
    pub fn change_request(ip: bool, port: bool) -> Self {
        use ChangeRequestFlags::{ChangeIp, ChangePort};
        let flags = match (ip, port) {
            (true, true) => Some(ChangeIp | ChangePort),
            (true, false) => Some(ChangeIp.into()),
            (false, true) => Some(ChangePort.into()),
            (false, false) => None,
        };
        Self::encode(Some(ChangeRequest::new(flags).into()))
    }

    fn encode(attribute: Option<StunAttribute>) -> Self {
        // TransactionId::default() is 96 cryptographically random bits (RFC 8489 §6).
        let txid = TransactionId::default();
        let mut builder =
            StunMessageBuilder::new(BINDING, MessageClass::Request).with_transaction_id(txid);
        if let Some(attribute) = attribute {
            builder = builder.with_attribute(attribute);
        }
        let mut buffer = [0u8; 64];
        let size = MessageEncoderBuilder::default()
            .build()
            .encode(&mut buffer, &builder.build())
            .expect("a Binding request with at most one small attribute fits 64 bytes");
        Self {
            txid,
            bytes: buffer[..size].to_vec(),
        }
    }
}

/// A success response to a Binding request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Mapping {
    pub mapped: SocketAddr,
    pub via: MappedVia,
    pub software: Option<String>,
    /// RFC 5780 OTHER-ADDRESS: the server's alternate IP and port, when it offers them.
    pub other_address: Option<SocketAddr>,
    /// RFC 5780 RESPONSE-ORIGIN: where the server says it sent the response from.
    pub response_origin: Option<SocketAddr>,
    /// RFC 3489 §11.2.5 SOURCE-ADDRESS (RESPONSE-ORIGIN's predecessor), from an RFC 3489 server.
    pub source_address: Option<SocketAddr>,
    /// RFC 3489 §11.2.3 CHANGED-ADDRESS (OTHER-ADDRESS's predecessor), from an RFC 3489 server.
    pub changed_address: Option<SocketAddr>,
}

/// A response that belongs to the transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Response {
    Success(Mapping),
    /// An error response (RFC 8489 §6.3.4) with its code and, for 420, the attributes the
    /// server did not understand.
    Error {
        code: u16,
        unknown: Vec<u16>,
    },
}

impl Response {
    /// A 420 Unknown Attribute naming RESPONSE-PORT: the server lacks RFC 5780 §7.5.
    pub fn lacks_response_port(&self) -> bool {
        let response_port = ResponsePort::get_type().as_u16();
        matches!(self, Response::Error { code: 420, unknown } if unknown.contains(&response_port))
    }
}

/// What a received message means for the transaction waiting on `txid`.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Judged {
    /// A STUN message for another transaction (e.g. the answer to a retransmission of an
    /// earlier one): RFC 8489 §6.3 says discard it and keep waiting.
    Ignore,
    Answer(Response),
    /// Not STUN, or our transaction's answer but malformed: the peer is not a working STUN
    /// server, and waiting longer will not change that.
    Broken(String),
}

/// The length of the message whose 20-byte header this is (header included), for reading a
/// frame off a TCP stream (RFC 8489 §7.2.2: STUN over TCP is self-delimiting).
pub(super) fn frame_length(header: &[u8; MESSAGE_HEADER_SIZE]) -> Result<usize, String> {
    let header = MessageHeader::try_from(header).map_err(|_| not_stun())?;
    let length = MESSAGE_HEADER_SIZE + usize::from(header.msg_length);
    if header.msg_length % 4 != 0 {
        return Err(format!(
            "STUN message length {} is not a multiple of 4",
            header.msg_length
        ));
    }
    if length > MAX_MESSAGE {
        return Err(format!(
            "STUN message of {length} bytes exceeds the {MAX_MESSAGE}-byte bound"
        ));
    }
    Ok(length)
}

/// Judges one received message (a whole UDP datagram or one TCP frame).
pub(super) fn judge(message: &[u8], txid: &TransactionId) -> Judged {
    let Some(header) = message.first_chunk::<MESSAGE_HEADER_SIZE>() else {
        return Judged::Broken(format!("{} bytes: {}", message.len(), not_stun()));
    };
    let Ok(parsed) = MessageHeader::try_from(header) else {
        return Judged::Broken(not_stun());
    };
    if parsed.transaction_id != txid.as_bytes() {
        return Judged::Ignore;
    }
    match decode(message) {
        Ok(response) => Judged::Answer(response),
        Err(detail) => Judged::Broken(detail),
    }
}

fn not_stun() -> String {
    "not a STUN message (RFC 8489 §5 header: leading zero bits and magic cookie)".to_owned()
}

fn decode(message: &[u8]) -> Result<Response, String> {
    let (msg, size) = MessageDecoderBuilder::default()
        .build()
        .decode(message)
        .map_err(|e| format!("malformed STUN message: {e}"))?;
    if size != message.len() {
        return Err(format!(
            "STUN header announces {size} bytes, {} arrived",
            message.len()
        ));
    }
    if msg.method() != BINDING {
        return Err(format!(
            "answer has method {:#05x}, not Binding",
            msg.method().as_u16()
        ));
    }
    // RFC 8489 §6.3.3/§6.3.4: a response with unknown comprehension-required attributes fails
    // the transaction. RFC 3489's own attributes are known, though stun-rs no longer decodes them.
    let unknown: Vec<String> = msg
        .attributes()
        .iter()
        .filter(|a| a.is_unknown())
        .map(|a| a.attribute_type())
        .filter(|t| t.is_comprehension_required() && !RFC3489_ATTRIBUTES.contains(&t.as_u16()))
        .map(|t| format!("{:#06x}", t.as_u16()))
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "response carries unknown comprehension-required attributes {}",
            unknown.join(", ")
        ));
    }
    match msg.class() {
        MessageClass::SuccessResponse => success(&msg, message).map(Response::Success),
        MessageClass::ErrorResponse => error(&msg),
        MessageClass::Request | MessageClass::Indication => Err(
            "peer sent a Binding request or indication back instead of a response (an echo?)"
                .to_owned(),
        ),
    }
}

fn success(msg: &StunMessage, raw: &[u8]) -> Result<Mapping, String> {
    let (mapped, via) = if let Some(attr) = msg.get::<XorMappedAddress>() {
        let xor = attr.expect_xor_mapped_address();
        (*xor.socket_address(), MappedVia::XorMappedAddress)
    } else if let Some(attr) = msg.get::<MappedAddress>() {
        let plain = attr.expect_mapped_address();
        (*plain.socket_address(), MappedVia::MappedAddress)
    } else {
        return Err(
            "success response carries neither XOR-MAPPED-ADDRESS nor MAPPED-ADDRESS".to_owned(),
        );
    };
    Ok(Mapping {
        mapped,
        via,
        software: msg
            .get::<Software>()
            .map(|a| a.expect_software().as_str().to_owned()),
        other_address: msg
            .get::<OtherAddress>()
            .map(|a| *a.expect_other_address().socket_address()),
        response_origin: msg
            .get::<ResponseOrigin>()
            .map(|a| *a.expect_response_origin().socket_address()),
        source_address: rfc3489_address(raw, SOURCE_ADDRESS)?,
        changed_address: rfc3489_address(raw, CHANGED_ADDRESS)?,
    })
}

/// RFC 3489 §11.2 attributes that RFC 5389 dropped from the comprehension-required range and
/// stun-rs (an RFC 8489 implementation) does not decode: RESPONSE-ADDRESS, SOURCE-ADDRESS,
/// CHANGED-ADDRESS, PASSWORD and REFLECTED-FROM. An RFC 3489 server (e.g. the reference
/// `stund`) sends SOURCE-ADDRESS and CHANGED-ADDRESS in every Binding response.
const RFC3489_ATTRIBUTES: [u16; 5] = [0x0002, SOURCE_ADDRESS, CHANGED_ADDRESS, 0x0007, 0x000b];
const SOURCE_ADDRESS: u16 = 0x0004;
const CHANGED_ADDRESS: u16 = 0x0005;

/// The value of the RFC 3489 address attribute `wanted` (MAPPED-ADDRESS's layout, §11.2.1:
/// zero, family, port, address), read from the raw message since stun-rs keeps no value of an
/// attribute it does not know. The message was already decoded by stun-rs, so the attribute
/// headers and lengths are consistent; the value itself is checked here.
fn rfc3489_address(message: &[u8], wanted: u16) -> Result<Option<SocketAddr>, String> {
    let mut rest = message.get(MESSAGE_HEADER_SIZE..).unwrap_or_default();
    while let Some((header, after)) = rest.split_first_chunk::<4>() {
        let kind = u16::from_be_bytes([header[0], header[1]]);
        let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let value = after.get(..length).unwrap_or(after);
        if kind == wanted {
            return address_value(value)
                .map(Some)
                .ok_or_else(|| format!("malformed RFC 3489 attribute {wanted:#06x}"));
        }
        rest = after.get(length.next_multiple_of(4)..).unwrap_or_default();
    }
    Ok(None)
}

fn address_value(value: &[u8]) -> Option<SocketAddr> {
    let port = u16::from_be_bytes([*value.get(2)?, *value.get(3)?]);
    let ip: std::net::IpAddr = match (value.get(1)?, value.get(4..)?) {
        (1, ip) => <[u8; 4]>::try_from(ip).ok()?.into(),
        (2, ip) => <[u8; 16]>::try_from(ip).ok()?.into(),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

fn error(msg: &StunMessage) -> Result<Response, String> {
    let code = msg
        .get::<ErrorCode>()
        .ok_or("error response without ERROR-CODE")?
        .expect_error_code()
        .error_code()
        .error_code();
    let unknown = msg
        .get::<UnknownAttributes>()
        .map(|a| a.expect_unknown_attributes().attributes().to_vec())
        .unwrap_or_default();
    Ok(Response::Error { code, unknown })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn encode(msg: &StunMessage) -> Vec<u8> {
        let mut buffer = [0u8; 512];
        let size = MessageEncoderBuilder::default()
            .build()
            .encode(&mut buffer, msg)
            .unwrap();
        buffer[..size].to_vec()
    }

    fn response(txid: TransactionId, class: MessageClass) -> StunMessageBuilder {
        StunMessageBuilder::new(BINDING, class).with_transaction_id(txid)
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)), port)
    }

    #[test]
    fn requests_are_binding_requests_with_fresh_ids() {
        let a = Request::binding();
        let b = Request::binding();
        assert_ne!(a.txid, b.txid);
        let (msg, _) = MessageDecoderBuilder::default()
            .build()
            .decode(&a.bytes)
            .unwrap();
        assert_eq!(msg.method(), BINDING);
        assert_eq!(msg.class(), MessageClass::Request);
        assert_eq!(msg.transaction_id(), &a.txid);
        assert!(msg.attributes().is_empty());

        let rp = Request::response_port(4242);
        let (msg, _) = MessageDecoderBuilder::default()
            .build()
            .decode(&rp.bytes)
            .unwrap();
        let port = msg.get::<ResponsePort>().unwrap().expect_response_port();
        assert_eq!(port.as_u16(), 4242);

        let cr = Request::change_request(true, false);
        let (msg, _) = MessageDecoderBuilder::default()
            .build()
            .decode(&cr.bytes)
            .unwrap();
        let flags = msg
            .get::<ChangeRequest>()
            .unwrap()
            .expect_change_request()
            .flags();
        assert!(flags.contains(ChangeRequestFlags::ChangeIp));
        assert!(!flags.contains(ChangeRequestFlags::ChangePort));
    }

    #[test]
    fn prefers_xor_mapped_address_and_reads_rfc5780_attributes() {
        let txid = TransactionId::default();
        let msg = response(txid, MessageClass::SuccessResponse)
            .with_attribute(MappedAddress::from(addr(1)))
            .with_attribute(XorMappedAddress::from(addr(2)))
            .with_attribute(OtherAddress::from(addr(3)))
            .with_attribute(ResponseOrigin::from(addr(4)))
            .with_attribute(Software::new("coturn").unwrap())
            .build();
        let Judged::Answer(Response::Success(m)) = judge(&encode(&msg), &txid) else {
            panic!("not a success");
        };
        assert_eq!(
            m,
            Mapping {
                mapped: addr(2),
                via: MappedVia::XorMappedAddress,
                software: Some("coturn".into()),
                other_address: Some(addr(3)),
                response_origin: Some(addr(4)),
                source_address: None,
                changed_address: None,
            }
        );
    }

    /// What the RFC 3489 reference server (stund 0.97) answers: MAPPED-ADDRESS,
    /// SOURCE-ADDRESS, CHANGED-ADDRESS, XOR-MAPPED-ADDRESS and SERVER (now SOFTWARE).
    #[test]
    fn rfc3489_source_and_changed_address_are_known() {
        let txid = TransactionId::from([7u8; 12]);
        let mut message = hex::decode("010100442112a442").unwrap();
        message.extend_from_slice(txid.as_bytes());
        for attribute in [
            "00010008",
            "0001ec7e7f000001",
            "00040008",
            "000134a67f000001",
            "00050008",
            "000134a77f000002",
            "00200008",
            "0001cd6c5e12a443",
            "80220010",
            "566f766964612e6f726720302e393700",
        ] {
            message.extend(hex::decode(attribute).unwrap());
        }
        let Judged::Answer(Response::Success(m)) = judge(&message, &txid) else {
            panic!("not a success: {:?}", judge(&message, &txid));
        };
        let loopback = |last: u8, port: u16| SocketAddr::from(([127, 0, 0, last], port));
        assert_eq!(m.mapped, loopback(1, 0xec7e));
        assert_eq!(m.source_address, Some(loopback(1, 13478)));
        assert_eq!(m.changed_address, Some(loopback(2, 13479)));
        assert!(m.software.is_some_and(|s| s.starts_with("Vovida.org 0.97")));

        // A CHANGED-ADDRESS of an unknown family is malformed.
        let mut bad = message.clone();
        bad[20 + 12 + 12 + 5] = 9;
        assert!(matches!(judge(&bad, &txid), Judged::Broken(_)));
    }

    #[test]
    fn falls_back_to_mapped_address() {
        let txid = TransactionId::default();
        let msg = response(txid, MessageClass::SuccessResponse)
            .with_attribute(MappedAddress::from(addr(5)))
            .build();
        let Judged::Answer(Response::Success(m)) = judge(&encode(&msg), &txid) else {
            panic!("not a success");
        };
        assert_eq!((m.mapped, m.via), (addr(5), MappedVia::MappedAddress));
    }

    #[test]
    fn other_transactions_are_ignored() {
        let msg = response(TransactionId::default(), MessageClass::SuccessResponse)
            .with_attribute(XorMappedAddress::from(addr(2)))
            .build();
        assert_eq!(
            judge(&encode(&msg), &TransactionId::default()),
            Judged::Ignore
        );
    }

    #[test]
    fn error_responses_carry_code_and_unknown_attributes() {
        let txid = TransactionId::default();
        let msg = response(txid, MessageClass::ErrorResponse)
            .with_attribute(ErrorCode::new(
                stun_rs::ErrorCode::new(420, "Unknown Attribute").unwrap(),
            ))
            .with_attribute(UnknownAttributes::from(&[0x0027][..]))
            .build();
        let Judged::Answer(answer) = judge(&encode(&msg), &txid) else {
            panic!("not an answer");
        };
        assert!(answer.lacks_response_port());
        assert_eq!(
            answer,
            Response::Error {
                code: 420,
                unknown: vec![0x0027]
            }
        );
    }

    #[test]
    fn broken_messages() {
        let txid = TransactionId::default();
        let ok = encode(
            &response(txid, MessageClass::SuccessResponse)
                .with_attribute(XorMappedAddress::from(addr(2)))
                .build(),
        );
        let broken = |bytes: &[u8]| matches!(judge(bytes, &txid), Judged::Broken(_));

        assert!(broken(b"SIP/2.0 400 Bad Request\r\n\r\n"));
        assert!(broken(&ok[..12]), "shorter than a header");
        assert!(broken(&ok[..ok.len() - 4]), "truncated body");
        let mut trailing = ok.clone();
        trailing.extend_from_slice(&[0; 4]);
        assert!(broken(&trailing), "bytes after the message");
        // The request echoed back.
        assert!(broken(&encode(
            &response(txid, MessageClass::Request).build()
        )));
        // Success without any mapped address.
        assert!(broken(&encode(
            &response(txid, MessageClass::SuccessResponse).build()
        )));
        // Error response without ERROR-CODE.
        assert!(broken(&encode(
            &response(txid, MessageClass::ErrorResponse).build()
        )));
        // XOR-MAPPED-ADDRESS of IPv6 family but only 8 bytes long.
        let mut short = ok.clone();
        short[20 + 4 + 1] = 2;
        assert!(broken(&short));
        // An unknown comprehension-required attribute (type 0x7fff) appended.
        let mut unknown = ok.clone();
        unknown.extend_from_slice(&[0x7f, 0xff, 0, 0]);
        unknown[3] += 4;
        assert!(broken(&unknown));
    }

    #[test]
    fn tcp_frames_are_bounded() {
        let txid = TransactionId::default();
        let ok = encode(
            &response(txid, MessageClass::SuccessResponse)
                .with_attribute(XorMappedAddress::from(addr(2)))
                .build(),
        );
        let header = |bytes: &[u8]| *bytes.first_chunk::<MESSAGE_HEADER_SIZE>().unwrap();
        assert_eq!(frame_length(&header(&ok)), Ok(ok.len()));
        let mut huge = header(&ok);
        huge[2..4].copy_from_slice(&0xfffcu16.to_be_bytes());
        assert!(frame_length(&huge).unwrap_err().contains("exceeds"));
        let mut odd = header(&ok);
        odd[3] = 5;
        assert!(frame_length(&odd).is_err());
        assert!(frame_length(&[0xff; MESSAGE_HEADER_SIZE]).is_err());
    }
}
