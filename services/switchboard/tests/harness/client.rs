//! A test client: a real WebSocket that sends [`ClientMessage`]s and reads
//! [`ServerMessage`]s, keeping messages it was not asked for in arrival order so
//! a test can pick out the one it expects.

use std::collections::VecDeque;

use futures_util::{SinkExt, StreamExt};
use switchboard_proto::{
    Candidate, ClientFrame, ClientMessage, ErrorCode, OfferId, PeerId, PendingOffer, Req, RoomId,
    Sdp, ServerMessage,
};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::DEADLINE;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Client {
    ws: Ws,
    pub peer_id: PeerId,
    pub welcome: ServerMessage,
    next_req: u64,
    unread: VecDeque<ServerMessage>,
}

impl Client {
    pub async fn connect(url: &str) -> Self {
        let (mut ws, _) = timeout(
            DEADLINE,
            tokio_tungstenite::connect_async_with_config(url, None, true),
        )
        .await
        .expect("connect in time")
        .expect("connect");
        let welcome = read_message(&mut ws).await.expect("welcome");
        let ServerMessage::Welcome { peer_id, .. } = welcome else {
            panic!("first frame must be welcome, got {welcome:?}");
        };
        Self {
            ws,
            peer_id,
            welcome,
            next_req: 0,
            unread: VecDeque::new(),
        }
    }

    /// Sends a raw frame.
    pub async fn send_raw(&mut self, msg: Message) {
        self.ws.send(msg).await.expect("send");
    }

    /// Sends a message without `req`.
    pub async fn send(&mut self, msg: ClientMessage) {
        let text = serde_json::to_string(&ClientFrame::new(None, msg)).expect("serialize");
        self.send_raw(Message::text(text)).await;
    }

    /// Sends a message with a fresh `req` and returns its reply (events that
    /// arrive first stay unread).
    pub async fn request(&mut self, msg: ClientMessage) -> ServerMessage {
        self.next_req += 1;
        let req = Req::new(self.next_req).expect("small req");
        let text = serde_json::to_string(&ClientFrame::new(Some(req), msg)).expect("serialize");
        self.send_raw(Message::text(text)).await;
        self.reply_to(req).await
    }

    /// Sends `frames` in one write (a browser trickling a burst of candidates,
    /// say): the server reads them together.
    pub async fn send_together(&mut self, frames: &[ClientFrame]) {
        let texts: Vec<String> = frames
            .iter()
            .map(|f| serde_json::to_string(f).expect("serialize"))
            .collect();
        self.send_texts_together(&texts).await;
    }

    /// Sends raw text frames in one write.
    pub async fn send_texts_together(&mut self, texts: &[String]) {
        for text in texts {
            self.ws
                .feed(Message::text(text.as_str()))
                .await
                .expect("buffer");
        }
        self.ws.flush().await.expect("send");
    }

    /// Asserts that the next candidates relayed to this client are `expected`,
    /// for `offer_id` from `from`, in order (other messages stay unread).
    pub async fn expect_candidates(
        &mut self,
        offer_id: OfferId,
        from: PeerId,
        expected: impl IntoIterator<Item = Candidate>,
    ) {
        for candidate in expected {
            let got = self
                .next_where(|m| matches!(m, ServerMessage::Candidate { .. }))
                .await;
            let expected = ServerMessage::Candidate {
                offer_id,
                from,
                candidate,
            };
            assert_eq!(got, expected);
        }
    }

    /// The reply tagged `req`.
    pub async fn reply_to(&mut self, req: Req) -> ServerMessage {
        self.next_where(|m| reply_req(m) == Some(req)).await
    }

    /// The next message, read or unread.
    pub async fn recv(&mut self) -> ServerMessage {
        match self.unread.pop_front() {
            Some(msg) => msg,
            None => read_message(&mut self.ws)
                .await
                .expect("a message before the deadline"),
        }
    }

    /// The first message matching `pred`; the others stay unread, in order.
    pub async fn next_where(&mut self, pred: impl Fn(&ServerMessage) -> bool) -> ServerMessage {
        if let Some(pos) = self.unread.iter().position(&pred) {
            return self.unread.remove(pos).expect("position is valid");
        }
        loop {
            let msg = read_message(&mut self.ws)
                .await
                .expect("the expected message before the deadline");
            if pred(&msg) {
                return msg;
            }
            self.unread.push_back(msg);
        }
    }

    /// Waits for the next message of `expected`'s type and asserts it is
    /// `expected` (other messages stay unread).
    pub async fn expect(&mut self, expected: ServerMessage) {
        let kind = expected.kind();
        let got = self.next_where(|m| m.kind() == kind).await;
        assert_eq!(got, expected);
    }

    /// Everything the server queued for us before it answered a ping sent now.
    /// In one process events are queued synchronously, so after this returns
    /// nothing sent before it is still on its way.
    pub async fn drain(&mut self) -> Vec<ServerMessage> {
        let pong = self.request(ClientMessage::Ping).await;
        assert!(
            matches!(pong, ServerMessage::Pong { req: Some(_) }),
            "{pong:?}"
        );
        self.unread.drain(..).collect()
    }

    /// Asserts that no unread message (up to a ping round trip) matches `pred`.
    pub async fn assert_none(&mut self, what: &str, pred: impl Fn(&ServerMessage) -> bool) {
        let seen = self.drain().await;
        assert!(!seen.iter().any(pred), "unexpected {what}: {seen:?}");
    }

    pub async fn join(&mut self, room: &RoomId) -> Vec<PendingOffer> {
        match self
            .request(ClientMessage::Join { room: room.clone() })
            .await
        {
            ServerMessage::Joined {
                offers, room: r, ..
            } => {
                assert_eq!(&r, room);
                offers
            }
            other => panic!("join failed: {other:?}"),
        }
    }

    pub async fn offer(&mut self, room: &RoomId, sdp: Sdp, to: Option<PeerId>) -> OfferId {
        let msg = ClientMessage::Offer {
            room: room.clone(),
            sdp,
            to,
        };
        match self.request(msg).await {
            ServerMessage::OfferCreated { offer_id, .. } => offer_id,
            other => panic!("offer failed: {other:?}"),
        }
    }

    pub async fn candidate(&mut self, offer_id: OfferId, candidate: Candidate) -> ServerMessage {
        self.request(ClientMessage::Candidate {
            offer_id,
            candidate,
        })
        .await
    }

    pub async fn answer(&mut self, offer_id: OfferId, sdp: Sdp) -> ServerMessage {
        self.request(ClientMessage::Answer { offer_id, sdp }).await
    }

    /// Expects the reply to be an error with `code`.
    pub async fn expect_error(&mut self, msg: ClientMessage, code: ErrorCode) {
        match self.request(msg).await {
            ServerMessage::Error { code: got, .. } => assert_eq!(got, code),
            other => panic!("expected {code} error, got {other:?}"),
        }
    }

    /// The next `error` frame (other messages stay unread): its `req` and code.
    pub async fn next_error(&mut self) -> (Option<Req>, ErrorCode) {
        match self
            .next_where(|m| matches!(m, ServerMessage::Error { .. }))
            .await
        {
            ServerMessage::Error { req, code, .. } => (req, code),
            _ => unreachable!("matched an error"),
        }
    }

    /// Reads until the server closes; returns its close frame, if it sent one.
    pub async fn closed(mut self) -> Option<CloseFrame> {
        loop {
            match timeout(DEADLINE, self.ws.next())
                .await
                .expect("close before the deadline")
            {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Closes the connection from our side.
    pub async fn disconnect(mut self) {
        let _ = self.ws.close(None).await;
    }

    pub fn ws(&mut self) -> &mut Ws {
        &mut self.ws
    }
}

/// The `req` a reply carries.
fn reply_req(msg: &ServerMessage) -> Option<Req> {
    match msg {
        ServerMessage::Joined { req, .. }
        | ServerMessage::OfferCreated { req, .. }
        | ServerMessage::Answered { req, .. }
        | ServerMessage::Pong { req }
        | ServerMessage::Error { req, .. } => *req,
        ServerMessage::Ok { req } => Some(*req),
        _ => None,
    }
}

/// The next protocol message, skipping WebSocket control frames; `None` when the
/// connection ends or the deadline passes.
async fn read_message(ws: &mut Ws) -> Option<ServerMessage> {
    // One deadline for the message, however many pings arrive meanwhile.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await.ok()?? {
            Ok(Message::Text(text)) => {
                return Some(
                    serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("bad frame {text}: {e}")),
                );
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(other) => panic!("unexpected frame {other:?}"),
            Err(err) => panic!("websocket error: {err}"),
        }
    }
}
