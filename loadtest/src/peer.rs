//! One simulated browser: a WebSocket (Nagle off) that sends
//! [`ClientMessage`]s and reads [`ServerMessage`]s, with a deadline on every
//! wait. Failures are typed so the report can count them by kind.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use switchboard_proto::{ClientFrame, ClientMessage, ErrorCode, PeerId, Req, ServerMessage};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Why a session (or connection) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("connect: {0}")]
    Connect(String),
    #[error("connection closed")]
    Closed,
    #[error("timed out")]
    Timeout,
    #[error("server error {0}")]
    Server(ErrorCode),
    #[error("invalid payload: {0}")]
    Invalid(&'static str),
}

impl Failure {
    /// The bucket this failure is counted in.
    pub fn label(&self) -> String {
        match self {
            Failure::Connect(_) => "connect".into(),
            Failure::Closed => "closed".into(),
            Failure::Timeout => "timeout".into(),
            Failure::Server(code) => code.as_str().into(),
            Failure::Invalid(what) => format!("invalid:{what}"),
        }
    }
}

/// Bytes read per `read` call: a whole `joined` frame with its offer and
/// candidates (~5.3 KB) or an answer (~3.7 KB). tungstenite zeroes this much
/// on every read, so no larger (16 KiB cost the loader ~2 % more CPU).
const READ_BUFFER: usize = 8 * 1024;

/// Source addresses a loopback target is reached from, in turn. One source
/// address reaches one server port through ~28,000 ephemeral ports; these
/// allow ~450,000 connections (the idle scenario's 100,000, say).
const LOOPBACK_SOURCES: u32 = 16;

/// For a `ws://127.x.y.z:port/…` URL, a TCP stream (Nagle off) from the next of
/// [`LOOPBACK_SOURCES`] source addresses; `None` for any other URL.
async fn loopback_stream(
    url: &str,
) -> Result<Option<MaybeTlsStream<TcpStream>>, tokio_tungstenite::tungstenite::Error> {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio_tungstenite::tungstenite::http::Uri;
    static NEXT: AtomicU32 = AtomicU32::new(0);

    let Ok(uri) = url.parse::<Uri>() else {
        return Ok(None);
    };
    let ip = uri.host().and_then(|host| host.parse::<IpAddr>().ok());
    let (Some("ws"), Some(IpAddr::V4(ip))) = (uri.scheme_str(), ip) else {
        return Ok(None);
    };
    if !ip.is_loopback() {
        return Ok(None);
    }
    let target = SocketAddr::from((ip, uri.port_u16().unwrap_or(80)));
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % LOOPBACK_SOURCES;
    let source = Ipv4Addr::new(127, 0, 0, 1 + u8::try_from(n).unwrap_or(0));
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    Ok(Some(MaybeTlsStream::Plain(stream)))
}

pub struct Peer {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub id: PeerId,
    next_req: u64,
    deadline: Duration,
}

impl Peer {
    /// Connects and reads `welcome`.
    pub async fn connect(url: &str, deadline: Duration) -> Result<Self, Failure> {
        // tungstenite zeroes up to its read buffer size on every read: the
        // 128 KiB default made that memset the loader's biggest cost.
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
        let connecting = async {
            match loopback_stream(url).await? {
                Some(stream) => {
                    tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await
                }
                None => tokio_tungstenite::connect_async_with_config(url, Some(config), true).await,
            }
        };
        let (ws, _) = timeout(deadline, connecting)
            .await
            .map_err(|_| Failure::Timeout)?
            .map_err(|e| Failure::Connect(e.to_string()))?;
        let mut peer = Self {
            ws,
            id: PeerId::random(),
            next_req: 0,
            deadline,
        };
        match peer.recv().await? {
            ServerMessage::Welcome { peer_id, .. } => peer.id = peer_id,
            _ => return Err(Failure::Invalid("first frame is not welcome")),
        }
        Ok(peer)
    }

    /// Sends a message, with a fresh `req` when `tagged`.
    pub async fn send(
        &mut self,
        message: ClientMessage,
        tagged: bool,
    ) -> Result<Option<Req>, Failure> {
        let req = tagged.then(|| {
            self.next_req += 1;
            Req::new(self.next_req).unwrap_or(Req::new(0).expect("0 is a valid req"))
        });
        let text = serde_json::to_string(&ClientFrame::new(req, message))
            .map_err(|_| Failure::Invalid("encode"))?;
        self.ws
            .send(Message::text(text))
            .await
            .map_err(|_| Failure::Closed)?;
        Ok(req)
    }

    /// Sends a request and returns its reply; an `error` reply is a failure.
    pub async fn request(&mut self, message: ClientMessage) -> Result<ServerMessage, Failure> {
        self.send(message, true).await?;
        self.recv().await
    }

    /// The next protocol message; an `error` frame is a failure.
    pub async fn recv(&mut self) -> Result<ServerMessage, Failure> {
        loop {
            let frame = timeout(self.deadline, self.ws.next())
                .await
                .map_err(|_| Failure::Timeout)?;
            match frame {
                Some(Ok(Message::Text(text))) => {
                    let msg: ServerMessage = serde_json::from_str(text.as_str())
                        .map_err(|_| Failure::Invalid("undecodable frame"))?;
                    return match msg {
                        ServerMessage::Error { code, .. } => Err(Failure::Server(code)),
                        msg => Ok(msg),
                    };
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(_)) | Some(Err(_)) | None => return Err(Failure::Closed),
            }
        }
    }

    /// Keeps reading (answering pings) until the connection ends.
    pub async fn idle(mut self) {
        while let Some(Ok(_)) = self.ws.next().await {}
    }

    pub async fn close(mut self) {
        let _ = timeout(Duration::from_secs(1), self.ws.close(None)).await;
    }
}
