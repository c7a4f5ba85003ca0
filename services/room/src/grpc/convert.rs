//! Replies, errors and session state to and from their protobuf form.

use switchboard_proto::pb::{self, convert};
use switchboard_proto::{ErrorCode, PendingOffer};

use switchboard_telemetry::Origin;

use crate::api::PartlyHandled;
use crate::error::RoomError;
use crate::event::{origin_from_pb, origin_to_pb};
use crate::session::{Reply, SessionState};

pub(crate) fn failure(err: &RoomError) -> pb::Failure {
    pb::Failure {
        code: pb::ErrorCode::from(err.code()).into(),
        message: err.to_string(),
    }
}

pub(crate) fn error(failure: pb::Failure) -> RoomError {
    match convert::error_code(failure.code) {
        ErrorCode::Unavailable => RoomError::unavailable(failure.message),
        code => RoomError::Remote {
            code,
            message: failure.message,
        },
    }
}

pub(crate) fn reply_to_pb(result: Result<Reply, RoomError>) -> pb::reply::Result {
    use pb::reply::Result as R;
    match result {
        Ok(Reply::Joined {
            room,
            offers,
            traces,
        }) => R::Joined(pb::Joined {
            room: room.to_string(),
            offers: offers.iter().map(Into::into).collect(),
            origins: traces
                .into_iter()
                .map(|trace| {
                    origin_to_pb(&Origin {
                        trace,
                        ..Origin::default()
                    })
                })
                .collect(),
        }),
        Ok(Reply::OfferCreated { offer_id }) => R::OfferCreated(pb::OfferCreated {
            offer_id: offer_id.to_string(),
        }),
        Ok(Reply::Answered {
            offer_id,
            candidates,
        }) => R::Answered(pb::Answered {
            offer_id: offer_id.to_string(),
            candidates: candidates.iter().map(Into::into).collect(),
        }),
        Ok(Reply::Pong | Reply::Done) => R::Done(pb::Done {}),
        Err(err) => R::Error(failure(&err)),
    }
}

pub(crate) fn reply_from_pb(result: Option<pb::reply::Result>) -> Result<Reply, RoomError> {
    use pb::reply::Result as R;
    let invalid = |e: switchboard_proto::error::FieldError| {
        RoomError::unavailable(format!("invalid reply: {e}"))
    };
    match result {
        Some(R::Joined(j)) => Ok(Reply::Joined {
            traces: j
                .origins
                .into_iter()
                .map(|o| origin_from_pb(Some(o)).trace)
                .collect(),
            room: convert::room(&j.room).map_err(invalid)?,
            offers: j
                .offers
                .into_iter()
                .map(PendingOffer::try_from)
                .collect::<Result<_, _>>()
                .map_err(invalid)?,
        }),
        Some(R::OfferCreated(o)) => Ok(Reply::OfferCreated {
            offer_id: convert::offer_id(&o.offer_id).map_err(invalid)?,
        }),
        Some(R::Answered(a)) => Ok(Reply::Answered {
            offer_id: convert::offer_id(&a.offer_id).map_err(invalid)?,
            candidates: convert::candidate_list(a.candidates).map_err(invalid)?,
        }),
        Some(R::Done(_)) => Ok(Reply::Done),
        Some(R::Error(f)) => Err(error(f)),
        Some(R::PartlyHandled(_)) => Err(RoomError::unavailable(
            "invalid reply: a candidate burst's reply to a single request",
        )),
        None => Err(RoomError::unavailable("empty reply")),
    }
}

/// The reply to a candidate burst: `Done`, or the failure of its first
/// candidate when none was handled, else `PartlyHandled`.
pub(crate) fn burst_reply_to_pb(result: Result<(), PartlyHandled>) -> pb::reply::Result {
    use pb::reply::Result as R;
    match result {
        Ok(()) => R::Done(pb::Done {}),
        Err(PartlyHandled { handled: 0, error }) => R::Error(failure(&error)),
        Err(PartlyHandled { handled, error }) => R::PartlyHandled(pb::PartlyHandled {
            handled: u32::try_from(handled).unwrap_or(u32::MAX),
            error: Some(failure(&error)),
        }),
    }
}

pub(crate) fn burst_reply_from_pb(result: Option<pb::reply::Result>) -> Result<(), PartlyHandled> {
    use pb::reply::Result as R;
    let none_handled = |error| PartlyHandled { handled: 0, error };
    match result {
        Some(R::Done(_)) => Ok(()),
        Some(R::Error(f)) => Err(none_handled(error(f))),
        Some(R::PartlyHandled(p)) => Err(PartlyHandled {
            handled: usize::try_from(p.handled).unwrap_or(usize::MAX),
            error: p
                .error
                .map_or_else(|| RoomError::unavailable("invalid reply: no error"), error),
        }),
        _ => Err(none_handled(RoomError::unavailable(
            "invalid reply to a candidate burst",
        ))),
    }
}

pub(crate) fn state_to_pb(state: &SessionState) -> pb::SessionState {
    let refs = |ids: &[switchboard_proto::OfferId]| ids.iter().map(ToString::to_string).collect();
    pb::SessionState {
        rooms: state.rooms.iter().map(ToString::to_string).collect(),
        made: refs(&state.made),
        answered: refs(&state.answered),
    }
}

/// The state an edge sent; entries that do not parse are dropped (they can
/// only name nothing).
pub(crate) fn state_from_pb(state: pb::SessionState) -> SessionState {
    let ids = |ids: Vec<String>| {
        ids.iter()
            .filter_map(|id| convert::offer_id(id).ok())
            .collect()
    };
    SessionState {
        rooms: state
            .rooms
            .iter()
            .filter_map(|r| convert::room(r).ok())
            .collect(),
        made: ids(state.made),
        answered: ids(state.answered),
    }
}

#[cfg(test)]
mod tests {
    use switchboard_proto::{OfferId, RoomId};

    use super::*;

    #[test]
    fn replies_errors_and_state_round_trip() {
        let room: RoomId = "r".parse().expect("room");
        let replies = [
            Reply::Joined {
                room: room.clone(),
                offers: vec![],
                traces: vec![],
            },
            Reply::OfferCreated {
                offer_id: OfferId::random(),
            },
            Reply::Answered {
                offer_id: OfferId::random(),
                candidates: vec![],
            },
            Reply::Done,
        ];
        for reply in replies {
            let back = reply_from_pb(Some(reply_to_pb(Ok(reply.clone())))).expect("ok");
            assert_eq!(back, reply);
        }
        let err = reply_from_pb(Some(reply_to_pb(Err(RoomError::OfferTaken)))).expect_err("error");
        assert_eq!(err.code(), ErrorCode::OfferTaken);
        assert_eq!(err.to_string(), RoomError::OfferTaken.to_string());
        let down =
            reply_from_pb(Some(reply_to_pb(Err(RoomError::unavailable("x"))))).expect_err("error");
        assert!(matches!(down, RoomError::Unavailable(_)));

        let state = SessionState {
            rooms: vec![room],
            made: vec![OfferId::random()],
            answered: vec![OfferId::random()],
        };
        assert_eq!(state_from_pb(state_to_pb(&state)), state);
    }
}
