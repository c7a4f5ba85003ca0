//! Browser → server messages, and [`parse`], the one function that turns a text
//! frame into a typed [`ClientFrame`] or a typed [`ParseError`].
//!
//! Errors are classified as the contract asks: not a JSON object or no string
//! `type` is `bad_message`; an unknown `type` is `unknown_type`; a field rejected by
//! its newtype carries that newtype's code (`invalid_room`, `invalid_sdp`…); any
//! other shape problem is `bad_message`. The error keeps the message's `req` when
//! it had a valid one, so the client can match the error to its request.

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::ids::{OfferId, PeerId, Req, RoomId};
use crate::payload::{Candidate, Sdp};

/// One client message with its optional request tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientFrame {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<Req>,
    #[serde(flatten)]
    pub message: ClientMessage,
}

impl ClientFrame {
    pub fn new(req: Option<Req>, message: ClientMessage) -> Self {
        Self { req, message }
    }
}

/// Everything a client can ask of the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Enter a room; the reply lists its pending offers (not your own).
    Join { room: RoomId },
    /// Leave a room; your pending offers there are withdrawn, your calls there end.
    Leave { room: RoomId },
    /// Publish a pending offer to the room, or only to peer `to`.
    Offer {
        room: RoomId,
        sdp: Sdp,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<PeerId>,
    },
    /// Caller before the answer: buffered. After it: relayed to the other party.
    Candidate {
        offer_id: OfferId,
        candidate: Candidate,
    },
    /// Claim a pending offer; exactly one answer wins.
    Answer { offer_id: OfferId, sdp: Sdp },
    /// Withdraw your pending offer, or end an answered call.
    Hangup { offer_id: OfferId },
    /// Application-level liveness.
    Ping,
}

impl ClientMessage {
    /// Every `type` a client may send.
    pub const KINDS: [&'static str; 7] = [
        "join",
        "leave",
        "offer",
        "candidate",
        "answer",
        "hangup",
        "ping",
    ];

    /// This message's `type` (bounded: fit for a metric label).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Join { .. } => "join",
            Self::Leave { .. } => "leave",
            Self::Offer { .. } => "offer",
            Self::Candidate { .. } => "candidate",
            Self::Answer { .. } => "answer",
            Self::Hangup { .. } => "hangup",
            Self::Ping => "ping",
        }
    }
}

/// A frame that is not a valid client message, as an `error` reply would carry it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ParseError {
    pub req: Option<Req>,
    pub code: ErrorCode,
    pub message: String,
}

/// Parses one text frame.
pub fn parse(text: &str) -> Result<ClientFrame, ParseError> {
    match parse_flat(text) {
        Some(frame) => Ok(frame),
        None => parse_tagged(text),
    }
}

/// The derived parser: the reference for what is valid, and the one whose
/// errors clients see.
fn parse_tagged(text: &str) -> Result<ClientFrame, ParseError> {
    serde_json::from_str(text).map_err(|err| classify(text, &err))
}

/// Every field any client message has, and no other (a frame with another
/// field takes the derived parser, which validates what it ignores).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Flat<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default)]
    req: Option<Req>,
    #[serde(default)]
    room: Option<RoomId>,
    #[serde(default)]
    sdp: Option<Sdp>,
    #[serde(default)]
    to: Option<PeerId>,
    #[serde(default)]
    offer_id: Option<OfferId>,
    /// Read as a JSON value first, as the derived parser buffers it: so that
    /// unknown keys inside are validated (strings, numbers, depth) alike.
    #[serde(default)]
    candidate: Option<serde_json::Value>,
}

/// The fast path of [`parse`]: one pass into [`Flat`]. The derived parser
/// buffers the frame into an intermediate tree twice (for the flattened field,
/// then for the tag), SDP included, before building the message; parsing was
/// a fifth of the standalone server's instructions (callgrind), most of it
/// reading the SDP's escapes, which both paths do. `None` whenever this
/// path cannot build the message the derived parser would (a field it
/// rejects, even one the message's type does not use, a missing one, an
/// unknown or escaped `type`, a field it does not know, a frame that is not
/// an object); [`parse_tagged`] then decides. So it only ever accepts what the
/// derived parser accepts, with the same result.
fn parse_flat(text: &str) -> Option<ClientFrame> {
    // serde would also read a struct from a JSON array; a frame is an object.
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let flat: Flat<'_> = serde_json::from_str(text).ok()?;
    let message = match flat.kind {
        "join" => ClientMessage::Join { room: flat.room? },
        "leave" => ClientMessage::Leave { room: flat.room? },
        "offer" => ClientMessage::Offer {
            room: flat.room?,
            sdp: flat.sdp?,
            to: flat.to,
        },
        "candidate" => ClientMessage::Candidate {
            offer_id: flat.offer_id?,
            candidate: Candidate::deserialize(flat.candidate?).ok()?,
        },
        "answer" => ClientMessage::Answer {
            offer_id: flat.offer_id?,
            sdp: flat.sdp?,
        },
        "hangup" => ClientMessage::Hangup {
            offer_id: flat.offer_id?,
        },
        "ping" => ClientMessage::Ping,
        _ => return None,
    };
    Some(ClientFrame::new(flat.req, message))
}

/// A value kept when it has the expected type, and skipped (not an error) otherwise.
#[derive(Deserialize)]
#[serde(untagged)]
enum Lenient<T> {
    Valid(T),
    Invalid(IgnoredAny),
}

impl<T> Lenient<T> {
    fn valid(self) -> Option<T> {
        match self {
            Self::Valid(t) => Some(t),
            Self::Invalid(_) => None,
        }
    }
}

/// The fields every message has, read leniently to explain why a frame failed.
#[derive(Deserialize)]
struct Head {
    #[serde(rename = "type", default)]
    kind: Option<Lenient<String>>,
    #[serde(default)]
    req: Option<Lenient<Req>>,
}

fn classify(text: &str, err: &serde_json::Error) -> ParseError {
    let head = match text.trim_start().starts_with('{') {
        true => serde_json::from_str::<Head>(text).ok(),
        false => None,
    };
    let Some(head) = head else {
        return ParseError {
            req: None,
            code: ErrorCode::BadMessage,
            message: "a message must be one JSON object".into(),
        };
    };
    let req = head.req.and_then(Lenient::valid);
    let error = |code, message: String| ParseError { req, code, message };
    match head.kind.and_then(Lenient::valid) {
        None => error(
            ErrorCode::BadMessage,
            "a message needs a string field \"type\"".into(),
        ),
        Some(kind) if !ClientMessage::KINDS.contains(&kind.as_str()) => error(
            ErrorCode::UnknownType,
            format!("unknown message type {kind:?}"),
        ),
        Some(_) => {
            let (code, message) = field_error(err);
            error(code, message)
        }
    }
}

/// Recovers the code a field newtype attached to its rejection (see
/// [`crate::error::FieldError`]); any other data error is `bad_message`.
fn field_error(err: &serde_json::Error) -> (ErrorCode, String) {
    let full = err.to_string();
    let position = format!(" at line {} column {}", err.line(), err.column());
    let text = full.strip_suffix(&position).unwrap_or(&full);
    text.split_once(": ")
        .and_then(|(code, message)| Some((code.parse().ok()?, message.to_owned())))
        .unwrap_or_else(|| (ErrorCode::BadMessage, text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(text: &str) -> (ErrorCode, Option<u64>) {
        let err = parse(text).expect_err("must fail");
        (err.code, err.req.map(Req::get))
    }

    #[test]
    fn parses_every_kind() {
        let room = r#""room":"lobby""#;
        let offer = format!(r#""offer_id":"{}""#, OfferId::random());
        let cases = [
            format!(r#"{{"type":"join",{room},"req":1}}"#),
            format!(r#"{{"type":"leave",{room}}}"#),
            format!(r#"{{"type":"offer",{room},"sdp":"v=0\r\n"}}"#),
            format!(r#"{{"type":"candidate",{offer},"candidate":{{"candidate":""}}}}"#),
            format!(r#"{{"type":"answer",{offer},"sdp":"v=0"}}"#),
            format!(r#"{{"type":"hangup",{offer}}}"#),
            r#"{"type":"ping","req":9007199254740991}"#.to_string(),
        ];
        let kinds: Vec<_> = cases
            .iter()
            .map(|c| {
                parse(c)
                    .unwrap_or_else(|e| panic!("{c}: {e}"))
                    .message
                    .kind()
            })
            .collect();
        assert_eq!(kinds, ClientMessage::KINDS);
    }

    #[test]
    fn classifies_bad_frames() {
        assert_eq!(code_of("not json"), (ErrorCode::BadMessage, None));
        assert_eq!(code_of("[1,2]"), (ErrorCode::BadMessage, None));
        assert_eq!(code_of("42"), (ErrorCode::BadMessage, None));
        assert_eq!(code_of(r#"{"req":3}"#), (ErrorCode::BadMessage, Some(3)));
        assert_eq!(
            code_of(r#"{"type":7,"req":3}"#),
            (ErrorCode::BadMessage, Some(3))
        );
        assert_eq!(
            code_of(r#"{"type":"dance","req":4}"#),
            (ErrorCode::UnknownType, Some(4))
        );
        assert_eq!(
            code_of(r#"{"type":"join","room":5,"req":5}"#),
            (ErrorCode::BadMessage, Some(5))
        );
        assert_eq!(
            code_of(r#"{"type":"join","req":6}"#),
            (ErrorCode::BadMessage, Some(6))
        );
        assert_eq!(
            code_of(r#"{"type":"join","room":"a b","req":7}"#),
            (ErrorCode::InvalidRoom, Some(7))
        );
        assert_eq!(
            code_of(r#"{"type":"offer","room":"a","sdp":"hello","req":8}"#),
            (ErrorCode::InvalidSdp, Some(8))
        );
        assert_eq!(
            code_of(r#"{"type":"hangup","offer_id":"o_x","req":9}"#),
            (ErrorCode::OfferNotFound, Some(9))
        );
        assert_eq!(
            code_of(r#"{"type":"ping","req":-1}"#),
            (ErrorCode::BadMessage, None)
        );
        assert_eq!(
            code_of(r#"{"type":"ping","req":"1"}"#),
            (ErrorCode::BadMessage, None)
        );
    }

    #[test]
    fn error_messages_carry_no_position_or_code_prefix() {
        let err = parse(r#"{"type":"join","room":"a b"}"#).expect_err("invalid room");
        assert!(err.message.starts_with("room names are"), "{}", err.message);
        assert!(!err.message.contains("line 1"), "{}", err.message);
    }

    /// Frames of every kind, valid and not, in shapes the fast path must
    /// either parse exactly as the derived parser does or leave to it.
    fn tricky_frames() -> Vec<String> {
        let offer = OfferId::random();
        let peer = PeerId::random();
        let sdp = r#""v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\n""#;
        let candidate = r#"{"candidate":"candidate:1 1 udp 1 10.0.0.1 9 typ host","sdpMid":"0","sdpMLineIndex":0}"#;
        vec![
            r#"{"type":"join","room":"lobby"}"#.into(),
            r#"{"room":"lobby","req":2,"type":"join"}"#.into(),
            r#"{"type":"leave","room":"lobby","req":null}"#.into(),
            format!(r#"{{"type":"offer","room":"r","sdp":{sdp}}}"#),
            format!(r#"{{"type":"offer","room":"r","sdp":{sdp},"to":null,"req":4}}"#),
            format!(r#"{{"type":"offer","room":"r","sdp":{sdp},"to":"{peer}"}}"#),
            format!(r#"{{"type":"offer","room":"r","sdp":{sdp},"to":"p_x"}}"#),
            format!(r#"{{"type":"offer","room":"r","sdp":{sdp},"offer_id":"{offer}"}}"#),
            format!(r#"{{"type":"candidate","offer_id":"{offer}","candidate":{candidate}}}"#),
            format!(r#"{{"type":"candidate","offer_id":"{offer}","candidate":{{"x":1}}}}"#),
            format!(r#"{{"type":"answer","offer_id":"{offer}","sdp":{sdp},"req":5}}"#),
            format!(r#"{{"type":"answer","offer_id":"{offer}"}}"#),
            format!(r#"{{"type":"hangup","offer_id":"{offer}","room":"not valid"}}"#),
            format!(r#"{{"type":"hangup","offer_id":"{offer}","extra":[1,{{"a":null}}]}}"#),
            r#"{"type":"ping"}"#.into(),
            r#"{"type":"ping","room":5}"#.into(),
            r#"{"type":"ping","req":-1}"#.into(),
            r#"{"type":"p\u0069ng"}"#.into(),
            r#"{"type":"join","type":"leave","room":"lobby"}"#.into(),
            r#"{"type":"join","room":"lobby","room":"other"}"#.into(),
            r#"{"type":"dance","room":"lobby"}"#.into(),
            r#"{"type":"join"}"#.into(),
            r#"{"room":"lobby"}"#.into(),
            r#"{"type":"join","room":"lobby"} trailing"#.into(),
            "not json".into(),
            r#"["ping"]"#.into(),
            r#"["join",null,"lobby"]"#.into(),
            r#"{"type":"ping","x":"\ud800"}"#.into(),
            r#"{"type":"ping","x":1e400}"#.into(),
            format!(
                r#"{{"type":"ping","x":{}1{}}}"#,
                "[".repeat(130),
                "]".repeat(130)
            ),
            format!(
                r#"{{"type":"candidate","offer_id":"{offer}","candidate":{{"candidate":"","x":"\ud800"}}}}"#
            ),
            format!(
                r#"{{"type":"candidate","offer_id":"{offer}","candidate":{{"candidate":"","x":1e400}}}}"#
            ),
            format!(
                r#"{{"type":"candidate","offer_id":"{offer}","candidate":{{"candidate":"","x":{}1{}}}}}"#,
                "[".repeat(130),
                "]".repeat(130)
            ),
            format!(
                r#"{{"type":"candidate","offer_id":"{offer}","candidate":{{"candidate":"","sdpMLineIndex":1.0}}}}"#
            ),
            format!(
                r#"{{"type":"candidate","offer_id":"{offer}","candidate":{{"candidate":"","sdpMLineIndex":70000}}}}"#
            ),
            format!(
                r#"{{"type":"candidate","offer_id":"{offer}","candidate":{{"candidate":"","sdpMid":null,"usernameFragment":"u"}}}}"#
            ),
        ]
    }

    #[test]
    fn the_fast_path_agrees_with_the_derived_parser() {
        let mut fast = 0;
        for text in tricky_frames() {
            let reference = parse_tagged(&text);
            if let Some(frame) = parse_flat(&text) {
                fast += 1;
                assert_eq!(Ok(frame), reference, "{text}");
            }
            assert_eq!(parse(&text), reference, "{text}");
        }
        // The common shapes do take the fast path.
        assert_eq!(fast, 12);
    }

    #[test]
    fn frames_as_serialized_take_the_fast_path() {
        let offer_id = OfferId::random();
        let room: RoomId = "lobby".parse().expect("room");
        let sdp = Sdp::parse("v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\n").expect("sdp");
        let candidate = Candidate::new("candidate:1".into(), Some("0".into()), Some(0), None)
            .expect("candidate");
        let messages = [
            ClientMessage::Join { room: room.clone() },
            ClientMessage::Leave { room: room.clone() },
            ClientMessage::Offer {
                room,
                sdp: sdp.clone(),
                to: Some(PeerId::random()),
            },
            ClientMessage::Candidate {
                offer_id,
                candidate,
            },
            ClientMessage::Answer { offer_id, sdp },
            ClientMessage::Hangup { offer_id },
            ClientMessage::Ping,
        ];
        for (n, message) in messages.into_iter().enumerate() {
            let frame = ClientFrame::new(Req::new(n as u64), message);
            let text = serde_json::to_string(&frame).expect("serialize");
            assert_eq!(parse_flat(&text), Some(frame), "{text}");
        }
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let frame = parse(r#"{"type":"ping","extra":{"x":1}}"#).expect("parse");
        assert_eq!(frame.message, ClientMessage::Ping);
    }
}
