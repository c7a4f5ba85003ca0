//! The Redis [`Store`]: the same operations as the in-memory twin, each one
//! atomic in Redis (a Lua script or a single command), under the key schema of
//! [`crate::keys`]. Time for deadlines comes from Redis (`TIME`), so replicas
//! with skewed clocks still agree on what has expired.
//!
//! Every command has a response timeout: a Redis that does not answer turns
//! into [`BackendError`] (clients see `unavailable`), never a hang.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script, Value};
use switchboard_proto::{Candidate, OfferId, PeerId, RoomId, Sdp};

use switchboard_telemetry::TraceContext;
use switchboard_telemetry::metrics::{RedisCommand, time_redis};

use super::{AddCandidates, Answerer, Claim, OfferRecord, Parties, Store, no_sdp};
use crate::error::BackendError;
use crate::keys::{Key, Keys};

/// How long a pending offer's keys outlive its deadline, so the sweeper can
/// still read an expired offer to announce it.
const GRACE: Duration = Duration::from_secs(60);

/// Bounds every Redis round trip.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// The fields of an offer hash, in the order every reader uses (`created` is
/// in microseconds: offers made in the same millisecond still list in order).
const FIELDS: [&str; 8] = [
    "room", "caller", "to", "sdp", "answerer", "deadline", "created", "trace",
];

/// Current Redis time in milliseconds (`now`) and microseconds (`now_us`).
const NOW: &str = "local t = redis.call('TIME'); local now = t[1] * 1000 + math.floor(t[2] / 1000); local now_us = t[1] * 1000000 + t[2]";

/// Offers and calls in Redis.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    keys: Keys,
    scripts: std::sync::Arc<Scripts>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

struct Scripts {
    insert: Script,
    get: Script,
    add_candidates: Script,
    claim: Script,
    remove: Script,
    take_expired: Script,
    pending: Script,
}

impl Scripts {
    fn new() -> Self {
        // Fields read by every script, in this order. Never the SDP: a script
        // that reads a 4.5 KB string into Lua costs several times one that
        // does not, and no script needs it.
        // `f[6]` is when the offer was created (the claim reports the wait).
        const READ: &str = "local f = redis.call('HMGET', KEYS[1], 'room', 'caller', 'to', 'answerer', 'deadline', 'created')";
        // Whether the record in `f` is missing, or a pending offer past its deadline.
        const GONE: &str = "local gone = (not f[2]) or ((not f[4]) and tonumber(f[5]) <= now)";
        // The record in `f`, in the order of `FIELDS` (without its SDP).
        const RECORD: &str = "{f[1], f[2], f[3], false, f[4], f[5]}";
        Self {
            // KEYS: offer, room index, expiries. ARGV: id, room, caller, to, ttl ms, keep ms (how long the keys live), traceparent.
            // Everything but the SDP, which the same transaction writes (with
            // the offer's expiry) outside the script: see `insert_offer`.
            insert: Script::new(&format!(
                "{NOW}
                local deadline = now + tonumber(ARGV[5])
                local keep = tonumber(ARGV[6])
                local h = {{'room', ARGV[2], 'caller', ARGV[3], 'deadline', deadline, 'created', now_us}}
                if ARGV[4] ~= '' then table.insert(h, 'to'); table.insert(h, ARGV[4]) end
                if ARGV[7] ~= '' then table.insert(h, 'trace'); table.insert(h, ARGV[7]) end
                redis.call('HSET', KEYS[1], unpack(h))
                redis.call('SADD', KEYS[2], ARGV[1])
                redis.call('PEXPIRE', KEYS[2], keep)
                redis.call('ZADD', KEYS[3], deadline, ARGV[1])
                return 1"
            )),
            // KEYS: offer. Returns the fields, or nil when gone.
            get: Script::new(&format!(
                "{NOW}
                {READ}
                {GONE}
                if gone then return nil end
                return {RECORD}"
            )),
            // KEYS: offer, candidates. ARGV: from, max, grace ms, then each
            // candidate's JSON. Each `redis.call` costs several µs: the common
            // case makes three however many candidates come at once. Those
            // past `max` are pushed and trimmed off again (rare: a full
            // buffer); candidates buffered before are never trimmed, even past
            // a `max` lowered since. The buffer expires with its offer (at
            // deadline + grace), set when the first candidates create it.
            add_candidates: Script::new(&format!(
                "{NOW}
                {READ}
                {GONE}
                if gone then return {{'gone'}} end
                if f[4] or f[2] ~= ARGV[1] then return {{'parties', f[2], f[4] or ''}} end
                local count = #ARGV - 3
                local max = tonumber(ARGV[2])
                if max <= 0 then return {{'buffered', '0'}} end
                local n = redis.call('RPUSH', KEYS[2], unpack(ARGV, 4))
                local before = n - count
                local keep = math.max(max, before)
                local taken = math.max(math.min(count, max - before), 0)
                if n > keep then redis.call('LTRIM', KEYS[2], 0, keep - 1) end
                if n == count then redis.call('PEXPIREAT', KEYS[2], tonumber(f[5]) + tonumber(ARGV[3])) end
                return {{'buffered', tostring(taken)}}"
            )),
            // KEYS: offer, candidates, expiries, then the room index of each
            // room the answerer is in. ARGV: answerer, call TTL ms, id, then
            // those rooms (ARGV[i] is the room of KEYS[i] from 4 on). Checks
            // in the order of `Claim`; claims only when all pass.
            claim: Script::new(&format!(
                "{NOW}
                {READ}
                {GONE}
                if gone then return {{'gone'}} end
                if f[2] == ARGV[1] then return {{'own'}} end
                if f[3] and f[3] ~= ARGV[1] then return {{'elsewhere'}} end
                local index = nil
                for i = 4, #ARGV do
                    if ARGV[i] == f[1] then index = KEYS[i] end
                end
                if not index then return {{'not_in_room'}} end
                if f[4] then return {{'taken'}} end
                local created = tonumber(f[6] or now_us)
                redis.call('HSET', KEYS[1], 'answerer', ARGV[1])
                redis.call('HDEL', KEYS[1], 'sdp')
                redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
                local candidates = redis.call('LRANGE', KEYS[2], 0, -1)
                redis.call('DEL', KEYS[2])
                redis.call('ZREM', KEYS[3], ARGV[3])
                redis.call('SREM', index, ARGV[3])
                local head = {{'won', tostring(math.floor((now_us - created) / 1000)), f[1], f[2], f[3] or ''}}
                for _, c in ipairs(candidates) do table.insert(head, c) end
                return head"
            )),
            // KEYS: offer, candidates, expiries, room index. ARGV: id. Returns the
            // fields of what it removed, or nil (an expired offer is left to the
            // sweeper).
            remove: Script::new(&format!(
                "{NOW}
                {READ}
                {GONE}
                if gone then return nil end
                redis.call('DEL', KEYS[1], KEYS[2])
                redis.call('ZREM', KEYS[3], ARGV[1])
                redis.call('SREM', KEYS[4], ARGV[1])
                return {RECORD}"
            )),
            // KEYS: expiries. ARGV: max. Takes the ids of expired offers: each is
            // returned to exactly one caller.
            take_expired: Script::new(&format!(
                "{NOW}
                local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
                if #ids > 0 then redis.call('ZREM', KEYS[1], unpack(ids)) end
                return ids"
            )),
            // KEYS: expiries. Returns the number of pending offers and the
            // time left until the soonest deadline (ms, -1 when none).
            pending: Script::new(&format!(
                "{NOW}
                local count = redis.call('ZCARD', KEYS[1])
                local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
                local left = -1
                if first[2] then left = math.max(0, tonumber(first[2]) - now) end
                return {{count, left}}"
            )),
        }
    }
}

impl RedisStore {
    /// Connects to `url`; commands reconnect by themselves after failures.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, BackendError> {
        let conn = connection_manager(&client(url)?).await?;
        Ok(Self {
            conn,
            keys: Keys::new(prefix),
            scripts: std::sync::Arc::new(Scripts::new()),
        })
    }

    /// The store's connection, to share with the bus's publisher.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    fn key(&self, key: Key<'_>) -> String {
        self.keys.key(key)
    }

    /// Reads an offer's record from the fields a script returned.
    fn record(
        &self,
        id: OfferId,
        fields: Vec<Option<String>>,
    ) -> Result<OfferRecord, BackendError> {
        let field = |i: usize| fields.get(i).cloned().flatten();
        let corrupt = || BackendError(format!("corrupt offer record {id}"));
        let peer = |s: Option<String>| {
            s.map(|s| s.parse::<PeerId>().map_err(|_| corrupt()))
                .transpose()
        };
        Ok(OfferRecord {
            id,
            room: field(0)
                .ok_or_else(corrupt)?
                .parse::<RoomId>()
                .map_err(|_| corrupt())?,
            caller: peer(field(1))?.ok_or_else(corrupt)?,
            to: peer(field(2))?,
            // Summaries and claimed calls carry no SDP.
            sdp: match field(3) {
                Some(sdp) => Sdp::parse(&sdp).map_err(|_| corrupt())?,
                None => no_sdp(),
            },
            answerer: peer(field(4))?,
            trace: TraceContext::from_pairs(field(7).map(|t| ("traceparent".to_owned(), t))),
        })
    }
}

/// A client for `url` whose connections have `TCP_NODELAY` set (redis-rs leaves
/// Nagle on by default, which stalls pipelined small writes by tens of ms).
pub(crate) fn client(url: &str) -> Result<redis::Client, BackendError> {
    use redis::IntoConnectionInfo;
    let info = url
        .into_connection_info()
        .map_err(backend)?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    redis::Client::open(info).map_err(backend)
}

/// A reconnecting connection with bounded command and connect times.
pub(crate) async fn connection_manager(
    client: &redis::Client,
) -> Result<ConnectionManager, BackendError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(COMMAND_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_secs(1));
    tokio::time::timeout(
        COMMAND_TIMEOUT * 2,
        client.get_connection_manager_with_config(config),
    )
    .await
    .map_err(|_| BackendError("timed out connecting to redis".into()))?
    .map_err(backend)
}

pub(crate) fn backend(err: redis::RedisError) -> BackendError {
    BackendError(format!("redis: {err}"))
}

/// Converts one reply value.
fn value<T: redis::FromRedisValue>(v: &Value) -> Result<T, BackendError> {
    redis::from_redis_value_ref(v).map_err(|e| BackendError(format!("unexpected redis reply: {e}")))
}

/// The `traceparent` of a context, or empty.
fn traceparent(trace: &TraceContext) -> &str {
    trace
        .pairs()
        .find_map(|(k, v)| (k == "traceparent").then_some(v))
        .unwrap_or_default()
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn decode_candidates(items: &[Value]) -> Result<Vec<Candidate>, BackendError> {
    items
        .iter()
        .map(|v| {
            let text: String = value(v)?;
            serde_json::from_str(&text).map_err(|e| BackendError(format!("corrupt candidate: {e}")))
        })
        .collect()
}

impl Store for RedisStore {
    async fn ping(&self) -> Result<(), BackendError> {
        time_redis(RedisCommand::Ping, async {
            let mut conn = self.conn.clone();
            let _: String = redis::cmd("PING")
                .query_async(&mut conn)
                .await
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn insert_offer(&self, offer: &OfferRecord, ttl: Duration) -> Result<(), BackendError> {
        time_redis(RedisCommand::InsertOffer, async {
            let mut conn = self.conn.clone();
            let key = self.key(Key::Offer(&offer.id));
            let keep = ms(ttl).saturating_add(ms(GRACE));
            let mut insert = self.scripts.insert.key(&key);
            insert
                .key(self.key(Key::RoomOffers(&offer.room)))
                .key(self.key(Key::Expiries))
                .arg(offer.id.as_str())
                .arg(offer.room.as_str())
                .arg(offer.caller.as_str())
                .arg(offer.to.map(|p| p.to_string()).unwrap_or_default())
                .arg(ms(ttl))
                .arg(keep)
                .arg(traceparent(&offer.trace));
            // The SDP goes in by a plain HSET: handed to the script, Lua would
            // hash all 4.5 KB of it (several times the rest of the script).
            // One transaction, so no reader sees the offer without its SDP;
            // the SDP and the expiry come first, so a transaction whose script
            // fails leaves at most a field that expires (readers take a hash
            // without `caller` for gone).
            let mut pipe = redis::pipe();
            pipe.atomic()
                .hset(&key, "sdp", offer.sdp.as_str())
                .ignore()
                .pexpire(&key, i64::try_from(keep).unwrap_or(i64::MAX))
                .ignore()
                .invoke_script(&insert)
                .ignore();
            let inserted: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
            match inserted {
                // Redis lost its script cache (a restart, SCRIPT FLUSH).
                Err(err)
                    if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    let _: String = insert.load_async(&mut conn).await.map_err(backend)?;
                    let () = pipe.query_async(&mut conn).await.map_err(backend)?;
                }
                inserted => inserted.map_err(backend)?,
            }
            Ok(())
        })
        .await
    }

    async fn offer(&self, id: &OfferId) -> Result<Option<OfferRecord>, BackendError> {
        time_redis(RedisCommand::GetOffer, async {
            let mut conn = self.conn.clone();
            let fields: Option<Vec<Option<String>>> = self
                .scripts
                .get
                .key(self.key(Key::Offer(id)))
                .invoke_async(&mut conn)
                .await
                .map_err(backend)?;
            fields.map(|f| self.record(*id, f)).transpose()
        })
        .await
    }

    async fn room_offers(
        &self,
        room: &RoomId,
    ) -> Result<Vec<(OfferRecord, Vec<Candidate>)>, BackendError> {
        time_redis(RedisCommand::RoomOffers, async {
            let mut conn = self.conn.clone();
            let index = self.key(Key::RoomOffers(room));
            let ids: Vec<String> = conn.smembers(&index).await.map_err(backend)?;
            let ids: Vec<OfferId> = ids.iter().filter_map(|id| id.parse().ok()).collect();
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            // One round trip: Redis's clock, then each offer's fields and candidates.
            let mut pipe = redis::pipe();
            pipe.cmd("TIME");
            for id in &ids {
                pipe.cmd("HMGET").arg(self.key(Key::Offer(id))).arg(&FIELDS);
                pipe.lrange(self.key(Key::Candidates(id)), 0, -1);
            }
            let replies: Vec<Value> = pipe.query_async(&mut conn).await.map_err(backend)?;
            let (seconds, micros): (u64, u64) = value(&replies[0])?;
            let now = seconds * 1000 + micros / 1000;
            let mut offers = Vec::new();
            let mut stale = Vec::new();
            for (id, pair) in ids.iter().zip(replies[1..].chunks(2)) {
                let fields: Vec<Option<String>> = value(&pair[0])?;
                let deadline: Option<u64> = fields
                    .get(5)
                    .cloned()
                    .flatten()
                    .and_then(|d| d.parse().ok());
                let created: u64 = fields
                    .get(6)
                    .cloned()
                    .flatten()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                let live =
                    fields.get(1).is_some_and(Option::is_some) && deadline.is_some_and(|d| d > now);
                let record = if live {
                    Some(self.record(*id, fields)?)
                } else {
                    None
                };
                match record {
                    Some(record) if record.is_pending() => {
                        let items: Vec<Value> = value(&pair[1])?;
                        offers.push((created, record, decode_candidates(&items)?));
                    }
                    _ => stale.push(id.to_string()),
                }
            }
            if !stale.is_empty() {
                let _: i64 = conn.srem(&index, &stale).await.map_err(backend)?;
            }
            // Oldest first.
            offers.sort_by_key(|(created, ..)| *created);
            Ok(offers
                .into_iter()
                .map(|(_, record, candidates)| (record, candidates))
                .collect())
        })
        .await
    }

    async fn add_candidates(
        &self,
        id: &OfferId,
        from: &PeerId,
        candidates: &[Candidate],
        max: usize,
    ) -> Result<AddCandidates, BackendError> {
        if candidates.is_empty() {
            return Ok(AddCandidates::Buffered(0));
        }
        time_redis(RedisCommand::AddCandidate, async {
            let mut conn = self.conn.clone();
            let mut invocation = self.scripts.add_candidates.key(self.key(Key::Offer(id)));
            invocation
                .key(self.key(Key::Candidates(id)))
                .arg(from.as_str())
                .arg(max)
                .arg(ms(GRACE));
            for candidate in candidates {
                let json =
                    serde_json::to_string(candidate).map_err(|e| BackendError(e.to_string()))?;
                invocation.arg(json);
            }
            let reply: Vec<String> = invocation.invoke_async(&mut conn).await.map_err(backend)?;
            let corrupt = || BackendError(format!("corrupt offer record {id}"));
            Ok(match reply.first().map(String::as_str) {
                Some("buffered") => AddCandidates::Buffered(
                    reply
                        .get(1)
                        .and_then(|n| n.parse().ok())
                        .ok_or_else(corrupt)?,
                ),
                Some("parties") => {
                    let caller = reply
                        .get(1)
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(corrupt)?;
                    let answerer = reply
                        .get(2)
                        .filter(|s| !s.is_empty())
                        .map(|s| s.parse().map_err(|_| corrupt()));
                    AddCandidates::NotBuffered(Parties {
                        caller,
                        answerer: answerer.transpose()?,
                    })
                }
                _ => AddCandidates::NotFound,
            })
        })
        .await
    }

    async fn claim(
        &self,
        id: &OfferId,
        answerer: Answerer<'_>,
        call_ttl: Duration,
    ) -> Result<Claim, BackendError> {
        time_redis(RedisCommand::Claim, async {
            let mut conn = self.conn.clone();
            let mut invocation = self.scripts.claim.prepare_invoke();
            invocation
                .key(self.key(Key::Offer(id)))
                .key(self.key(Key::Candidates(id)))
                .key(self.key(Key::Expiries))
                .arg(answerer.peer.as_str())
                .arg(ms(call_ttl))
                .arg(id.as_str());
            for room in answerer.rooms {
                invocation
                    .key(self.key(Key::RoomOffers(room)))
                    .arg(room.as_str());
            }
            let reply: Vec<Value> = invocation.invoke_async(&mut conn).await.map_err(backend)?;
            let status: Option<String> = reply.first().map(value).transpose()?;
            Ok(match status.as_deref() {
                Some("won") => {
                    let text = |i: usize| -> Result<String, BackendError> {
                        reply
                            .get(i)
                            .map(value)
                            .transpose()
                            .map(Option::unwrap_or_default)
                    };
                    let fields = vec![
                        Some(text(2)?),
                        Some(text(3)?),
                        Some(text(4)?).filter(|to| !to.is_empty()),
                        None,
                        Some(answerer.peer.to_string()),
                    ];
                    let record = self.record(*id, fields)?;
                    Claim::Won {
                        record,
                        waited: Duration::from_millis(text(1)?.parse().unwrap_or(0)),
                        candidates: decode_candidates(reply.get(5..).unwrap_or_default())?,
                    }
                }
                Some("own") => Claim::OwnOffer,
                Some("elsewhere") => Claim::AddressedElsewhere,
                Some("not_in_room") => Claim::NotInRoom,
                Some("taken") => Claim::Taken,
                _ => Claim::NotFound,
            })
        })
        .await
    }

    async fn remove_offer(
        &self,
        id: &OfferId,
        room: &RoomId,
    ) -> Result<Option<OfferRecord>, BackendError> {
        time_redis(RedisCommand::RemoveOffer, async {
            let mut conn = self.conn.clone();
            let fields: Option<Vec<Option<String>>> = self
                .scripts
                .remove
                .key(self.key(Key::Offer(id)))
                .key(self.key(Key::Candidates(id)))
                .key(self.key(Key::Expiries))
                .key(self.key(Key::RoomOffers(room)))
                .arg(id.as_str())
                .invoke_async(&mut conn)
                .await
                .map_err(backend)?;
            fields.map(|f| self.record(*id, f)).transpose()
        })
        .await
    }

    async fn pending(&self) -> Result<(usize, Option<Duration>), BackendError> {
        time_redis(RedisCommand::PendingStats, async {
            let mut conn = self.conn.clone();
            let invocation = self.scripts.pending.key(self.key(Key::Expiries));
            let (count, left): (usize, i64) =
                invocation.invoke_async(&mut conn).await.map_err(backend)?;
            let left = u64::try_from(left).ok().map(Duration::from_millis);
            Ok((count, left))
        })
        .await
    }

    async fn take_expired(&self, max: usize) -> Result<Vec<OfferRecord>, BackendError> {
        time_redis(RedisCommand::TakeExpired, async {
            let mut conn = self.conn.clone();
            let ids: Vec<String> = self
                .scripts
                .take_expired
                .key(self.key(Key::Expiries))
                .arg(max)
                .invoke_async(&mut conn)
                .await
                .map_err(backend)?;
            let ids: Vec<OfferId> = ids.iter().filter_map(|id| id.parse().ok()).collect();
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            // These ids are ours alone now: read and delete them.
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("HMGET").arg(self.key(Key::Offer(id))).arg(&FIELDS);
                pipe.del(&[self.key(Key::Offer(id)), self.key(Key::Candidates(id))])
                    .ignore();
            }
            let rows: Vec<Vec<Option<String>>> =
                pipe.query_async(&mut conn).await.map_err(backend)?;
            let mut expired = Vec::new();
            let mut unindex = redis::pipe();
            for (id, fields) in ids.into_iter().zip(rows) {
                if !fields.get(1).is_some_and(Option::is_some) {
                    continue;
                }
                match self.record(id, fields) {
                    Ok(record) if record.is_pending() => {
                        unindex
                            .srem(self.key(Key::RoomOffers(&record.room)), id.as_str())
                            .ignore();
                        expired.push(record);
                    }
                    Ok(_) => {}
                    Err(err) => {
                        tracing::warn!(error = %err, "dropping an unreadable expired offer")
                    }
                }
            }
            if !expired.is_empty() {
                // Best effort: a stale index entry is pruned by the next listing anyway.
                let _: Result<(), _> = unindex.query_async(&mut conn).await;
            }
            Ok(expired)
        })
        .await
    }
}
