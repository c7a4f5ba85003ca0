//! `switchboard probe`: proves a deployment carries calls by making one. Two
//! WebSocket clients connect to an edge; the caller joins a room and sends an
//! offer and a candidate; the callee joins, is shown the offer, answers it and
//! gets the buffered candidate; the caller receives the answer. Anything else
//! (a refused connection, an `error` frame, a missing message within the
//! deadline) fails the probe with the step it stopped at.
//!
//! The Helm chart's test hook runs it; so can an operator, from anywhere that
//! reaches an edge.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use switchboard_proto::{
    Candidate, ClientFrame, ClientMessage, OfferId, Req, RoomId, Sdp, ServerMessage,
};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        source: tokio_tungstenite::tungstenite::Error,
    },
    #[error("{step}: the connection failed: {source}")]
    Socket {
        step: &'static str,
        source: tokio_tungstenite::tungstenite::Error,
    },
    #[error("{step}: the server closed the connection")]
    Closed { step: &'static str },
    #[error("{step}: the server answered with an error: {code}: {message}")]
    Refused {
        step: &'static str,
        code: String,
        message: String,
    },
    #[error("{step}: unexpected frame {frame}")]
    Unexpected { step: &'static str, frame: String },
    #[error("{step}: nothing within the deadline")]
    TimedOut { step: &'static str },
    #[error("invalid room name: {0}")]
    Room(String),
}

/// What a successful probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    pub room: RoomId,
    pub offer_id: OfferId,
    pub took: Duration,
}

const SDP_OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=switchboard-probe\r\nt=0 0\r\n";
const SDP_ANSWER: &str = "v=0\r\no=- 2 1 IN IP4 127.0.0.1\r\ns=switchboard-probe\r\nt=0 0\r\n";
const CANDIDATE: &str = "candidate:1 1 udp 2122260223 192.0.2.1 54400 typ host";

/// Runs one probe call through the edge at `url`, within `timeout`.
pub async fn run(
    url: &str,
    room: Option<&str>,
    timeout: Duration,
) -> Result<ProbeReport, ProbeError> {
    let room: RoomId = match room {
        Some(name) => name.parse().map_err(|e| ProbeError::Room(format!("{e}")))?,
        None => format!("probe-{:016x}", rand::random::<u64>())
            .parse()
            .map_err(|e| ProbeError::Room(format!("{e}")))?,
    };
    let started = tokio::time::Instant::now();
    let deadline = started + timeout;
    let mut caller = Peer::connect(url, deadline).await?;
    let mut callee = Peer::connect(url, deadline).await?;

    caller
        .request("caller join", join(&room), |m| {
            matches!(m, ServerMessage::Joined { .. })
        })
        .await?;
    let created = caller
        .request("caller offer", offer(&room), |m| {
            matches!(m, ServerMessage::OfferCreated { .. })
        })
        .await?;
    let ServerMessage::OfferCreated { offer_id, .. } = created else {
        unreachable!("matched above")
    };
    let candidate = ClientMessage::Candidate {
        offer_id,
        candidate: Candidate::new(CANDIDATE.into(), Some("0".into()), Some(0), None)
            .map_err(|e| ProbeError::Room(e.to_string()))?,
    };
    caller
        .request("caller candidate", candidate, |m| {
            matches!(m, ServerMessage::Ok { .. })
        })
        .await?;

    let joined = callee
        .request("callee join", join(&room), |m| {
            matches!(m, ServerMessage::Joined { .. })
        })
        .await?;
    let listed = matches!(&joined, ServerMessage::Joined { offers, .. }
        if offers.iter().any(|o| o.offer_id == offer_id));
    if !listed {
        return Err(ProbeError::Unexpected {
            step: "callee join",
            frame: "joined without the caller's pending offer".into(),
        });
    }
    let answer = ClientMessage::Answer {
        offer_id,
        sdp: sdp(SDP_ANSWER),
    };
    let answered = callee
        .request("callee answer", answer, |m| {
            matches!(m, ServerMessage::Answered { .. })
        })
        .await?;
    if !matches!(&answered, ServerMessage::Answered { candidates, .. } if candidates.len() == 1) {
        return Err(ProbeError::Unexpected {
            step: "callee answer",
            frame: "answered without the caller's buffered candidate".into(),
        });
    }
    caller
        .expect(
            "caller receives the answer",
            |m| matches!(m, ServerMessage::Answer { offer_id: id, .. } if *id == offer_id),
        )
        .await?;
    caller
        .request("caller hangup", ClientMessage::Hangup { offer_id }, |m| {
            matches!(m, ServerMessage::Ok { .. })
        })
        .await?;
    caller.close().await;
    callee.close().await;
    Ok(ProbeReport {
        room,
        offer_id,
        took: started.elapsed(),
    })
}

fn sdp(text: &str) -> Sdp {
    // Both constants are valid SDPs.
    Sdp::parse(text).unwrap_or_else(|_| unreachable!("constant SDP"))
}

fn join(room: &RoomId) -> ClientMessage {
    ClientMessage::Join { room: room.clone() }
}

fn offer(room: &RoomId) -> ClientMessage {
    ClientMessage::Offer {
        room: room.clone(),
        sdp: sdp(SDP_OFFER),
        to: None,
    }
}

/// One probe client.
struct Peer {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    deadline: tokio::time::Instant,
    next_req: u64,
}

impl Peer {
    async fn connect(url: &str, deadline: tokio::time::Instant) -> Result<Self, ProbeError> {
        let connecting = tokio::time::timeout_at(deadline, connect_async(url));
        let (socket, _) = connecting
            .await
            .map_err(|_| ProbeError::TimedOut { step: "connect" })?
            .map_err(|source| ProbeError::Connect {
                url: url.to_owned(),
                source,
            })?;
        let mut peer = Self {
            socket,
            deadline,
            next_req: 1,
        };
        peer.expect("welcome", |m| matches!(m, ServerMessage::Welcome { .. }))
            .await?;
        Ok(peer)
    }

    /// Sends `msg` and waits for the frame `want` accepts, failing on an
    /// `error` frame.
    async fn request(
        &mut self,
        step: &'static str,
        msg: ClientMessage,
        want: impl Fn(&ServerMessage) -> bool,
    ) -> Result<ServerMessage, ProbeError> {
        let req = Req::new(self.next_req).unwrap_or_else(|| unreachable!("small request number"));
        self.next_req += 1;
        let text = serde_json::to_string(&ClientFrame::new(Some(req), msg))
            .unwrap_or_else(|_| unreachable!("client frames always serialize"));
        self.socket
            .send(Message::Text(text.into()))
            .await
            .map_err(|source| ProbeError::Socket { step, source })?;
        self.expect(step, want).await
    }

    /// Waits for the frame `want` accepts, skipping presence and other events.
    async fn expect(
        &mut self,
        step: &'static str,
        want: impl Fn(&ServerMessage) -> bool,
    ) -> Result<ServerMessage, ProbeError> {
        loop {
            let frame = tokio::time::timeout_at(self.deadline, self.socket.next())
                .await
                .map_err(|_| ProbeError::TimedOut { step })?;
            let text = match frame {
                None | Some(Ok(Message::Close(_))) => return Err(ProbeError::Closed { step }),
                Some(Err(source)) => return Err(ProbeError::Socket { step, source }),
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(_)) => continue,
            };
            let msg: ServerMessage =
                serde_json::from_str(&text).map_err(|_| ProbeError::Unexpected {
                    step,
                    frame: text.to_string(),
                })?;
            if let ServerMessage::Error { code, message, .. } = &msg {
                return Err(ProbeError::Refused {
                    step,
                    code: code.to_string(),
                    message: message.clone(),
                });
            }
            if want(&msg) {
                return Ok(msg);
            }
        }
    }

    async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}
