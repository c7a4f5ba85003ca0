//! Identifier newtypes: `PeerId`, `OfferId`, `RoomId`, and the request tag `Req`.
//!
//! Peer and offer ids are opaque to clients and chosen by the server: a one-letter
//! prefix, `_`, then 22 random base62 characters (~131 bits, unguessable). They are
//! stored inline, so they are `Copy` and never allocate. Room names are chosen by
//! clients and validated on parse. Every type here rejects bad input at the
//! boundary, so the rest of the code only ever sees valid values.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{ErrorCode, FieldError};

/// Random characters after the `x_` prefix.
const RANDOM_LEN: usize = 22;
/// Total length of a peer or offer id.
const ID_LEN: usize = RANDOM_LEN + 2;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    #[error("ids are {ID_LEN} characters: `{0}_` then {RANDOM_LEN} letters or digits")]
    Peer(char),
    #[error("room names are 1 to 128 characters from A-Z a-z 0-9 _ . ~ -")]
    Room,
}

/// A server-chosen random id with a fixed one-letter prefix.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct RandomId<const PREFIX: char>([u8; ID_LEN]);

impl<const PREFIX: char> RandomId<PREFIX> {
    fn random() -> Self {
        let mut rng = rand::rng();
        let mut bytes = [0u8; ID_LEN];
        bytes[0] = PREFIX as u8;
        bytes[1] = b'_';
        for b in &mut bytes[2..] {
            *b = BASE62[rng.random_range(0..BASE62.len())];
        }
        Self(bytes)
    }

    fn parse(s: &str) -> Result<Self, InvalidId> {
        let bytes = s.as_bytes();
        let well_formed = bytes.len() == ID_LEN
            && bytes[0] == PREFIX as u8
            && bytes[1] == b'_'
            && bytes[2..].iter().all(u8::is_ascii_alphanumeric);
        if !well_formed {
            return Err(InvalidId::Peer(PREFIX));
        }
        let mut out = [0u8; ID_LEN];
        out.copy_from_slice(bytes);
        Ok(Self(out))
    }

    fn as_str(&self) -> &str {
        // Only ASCII letters, digits and `_` ever get in (see `random` and `parse`).
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// Defines a public id type over `RandomId`, with the error code a bad one maps to.
macro_rules! random_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $code:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(RandomId<$prefix>);

        impl $name {
            /// A fresh random id.
            pub fn random() -> Self {
                Self(RandomId::random())
            }

            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                RandomId::parse(s).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                parse_str(d, |s| {
                    s.parse()
                        .map_err(|e: InvalidId| FieldError::new($code, e.to_string()))
                })
            }
        }
    };
}

random_id!(
    /// A connected peer (one WebSocket session).
    PeerId,
    'p',
    ErrorCode::BadMessage
);

random_id!(
    /// A pending offer, and after it is answered, the call it became.
    /// A malformed one cannot name any offer, hence `offer_not_found`.
    OfferId,
    'o',
    ErrorCode::OfferNotFound
);

/// A room name: 1 to 128 characters from `A-Z a-z 0-9 _ . ~ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RoomId(String);

impl RoomId {
    pub const MAX_LEN: usize = 128;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RoomId {
    type Err = InvalidId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '~' | '-');
        if (1..=Self::MAX_LEN).contains(&s.len()) && s.chars().all(allowed) {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidId::Room)
        }
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RoomId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, |s| {
            s.parse()
                .map_err(|e: InvalidId| FieldError::new(ErrorCode::InvalidRoom, e.to_string()))
        })
    }
}

/// A client's request tag: an unsigned integer up to 2^53-1 (exact in JavaScript).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Req(u64);

impl Req {
    pub const MAX: u64 = (1 << 53) - 1;

    /// `None` when `n` is above [`Req::MAX`].
    pub const fn new(n: u64) -> Option<Self> {
        if n <= Self::MAX { Some(Self(n)) } else { None }
    }

    pub const fn get(self) -> u64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Req {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u64::deserialize(d)?;
        Req::new(n).ok_or_else(|| {
            serde::de::Error::custom(FieldError::new(
                ErrorCode::BadMessage,
                "req must be an integer from 0 to 2^53-1",
            ))
        })
    }
}

/// Deserializes a string (borrowed or owned) and converts it with `parse`,
/// reporting a rejection as a [`FieldError`] so its code survives serde.
pub(crate) fn parse_str<'de, D, T, F>(d: D, parse: F) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    F: FnOnce(&str) -> Result<T, FieldError>,
{
    struct Visitor<F>(F);

    impl<T, F: FnOnce(&str) -> Result<T, FieldError>> serde::de::Visitor<'_> for Visitor<F> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }

        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<T, E> {
            (self.0)(s).map_err(E::custom)
        }
    }

    d.deserialize_str(Visitor(parse))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_parse_back_and_differ() {
        let a = PeerId::random();
        let b = PeerId::random();
        assert_ne!(a, b);
        assert_eq!(a.as_str().parse::<PeerId>(), Ok(a));
        assert!(a.as_str().starts_with("p_"));
        let o = OfferId::random();
        assert!(o.as_str().starts_with("o_"));
        assert_eq!(o.to_string().len(), ID_LEN);
    }

    #[test]
    fn ids_reject_wrong_prefix_length_and_characters() {
        let offer = OfferId::random().to_string();
        assert!(
            offer.parse::<PeerId>().is_err(),
            "offer id is not a peer id"
        );
        assert!("p_short".parse::<PeerId>().is_err());
        assert!("p_0123456789012345678901!".parse::<PeerId>().is_err());
        assert!("p_012345678901234567890!".parse::<PeerId>().is_err());
        assert!("".parse::<OfferId>().is_err());
    }

    #[test]
    fn room_names_follow_the_contract() {
        for ok in ["lobby", "a", "A-Z_0.9~x", &"r".repeat(128)] {
            assert!(ok.parse::<RoomId>().is_ok(), "{ok}");
        }
        for bad in ["", "has space", "émoji", "a/b", &"r".repeat(129)] {
            assert_eq!(bad.parse::<RoomId>(), Err(InvalidId::Room), "{bad}");
        }
    }

    #[test]
    fn req_is_bounded_to_javascript_safe_integers() {
        assert!(Req::new(Req::MAX).is_some());
        assert!(Req::new(Req::MAX + 1).is_none());
        assert!(serde_json::from_str::<Req>("9007199254740992").is_err());
        assert_eq!(serde_json::from_str::<Req>("7").ok(), Req::new(7));
    }
}
