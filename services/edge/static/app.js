/*
 * Switchboard demo page: a plain-JS client of the signaling protocol v1
 * (see shared/protocol-v1.md). One WebSocket to /ws on this host:
 *
 *   welcome                  -> peer id, ICE servers, heartbeat; we then `join` the room
 *   join/joined              -> list of pending offers (+ `offer` / `offer_closed` events)
 *   Call (caller)            -> getUserMedia, RTCPeerConnection, `offer` -> `offer_created`,
 *                               own candidates sent as `candidate` (queued until offer_id known),
 *                               `answer` event -> setRemoteDescription
 *   Answer (callee)          -> getUserMedia, setRemoteDescription(offer) + its buffered candidates,
 *                               `answer` -> `answered` (+ caller's candidates), then own candidates
 *   candidate / hangup       -> relayed between the two parties of an answered offer
 *   peer_joined / peer_left  -> presence
 *
 * Requests carry an incrementing `req`; request() resolves with the reply that has the
 * same req, or rejects on `error`. State is mirrored on window.switchboard for tests.
 */
(function () {
  'use strict';

  const params = new URLSearchParams(location.search);
  const AUTOCALL = params.get('autocall') === '1';
  const AUTOANSWER = params.get('autoanswer') === '1';
  const $ = (id) => document.getElementById(id);

  const S = window.switchboard = {
    connected: false, peerId: null, room: null, joined: false, role: null, offerId: null,
    pendingOffers: [], peers: [], signalingState: null, iceConnectionState: null,
    connectionState: null, remoteVideoWidth: 0, remoteVideoHeight: 0, localVideoWidth: 0,
    status: '', error: '', lastErrorCode: null, callEnded: false, hangupReason: null, log: [],
  };

  let ws = null;
  let iceServers = [];
  let maxMessageBytes = 65536;
  let heartbeatTimer = null;
  let backoffMs = 500;
  let nextReq = 1;
  const pending = new Map();      // req -> {resolve, reject}
  const offers = new Map();       // offer_id -> {offer_id, from, sdp, candidates}
  const closedOffers = new Map(); // offer id -> close reason (guards against late re-adds)
  const early = new Map();        // offer_id -> events that arrived before our offer_created
  const peers = new Set();
  let targetRoom = params.get('room') || 'lobby';
  let call = null;                // the single current call, see newCall()
  let autocallDone = false;
  const autoTried = new Set();

  // ---------- logging, status, errors ----------

  function log(...args) {
    console.log('[switchboard]', ...args);
    const line = new Date().toISOString().slice(11, 23) + ' ' + args.map(String).join(' ');
    S.log.push(line);
    if (S.log.length > 200) S.log.splice(0, S.log.length - 200);
  }

  function setStatus(text) { S.status = text; log('status:', text); render(); }

  function setError(text, code) {
    S.error = text || '';
    if (code) S.lastErrorCode = code;
    if (text) log('error:', text);
    render();
  }

  // ---------- WebSocket connection ----------

  function connect() {
    const url = (location.protocol === 'https:' ? 'wss:' : 'ws:') + '//' + location.host + '/ws';
    setStatus('Connecting to ' + url + '…');
    try {
      ws = new WebSocket(url);
    } catch (e) {
      log('WebSocket constructor failed:', e);
      onSocketClosed();
      return;
    }
    const sock = ws;
    sock.onmessage = (ev) => { if (sock === ws) onFrame(ev.data); };
    sock.onclose = (ev) => { if (sock === ws) { log('socket closed', ev.code, ev.reason); onSocketClosed(); } };
    sock.onerror = () => log('socket error');
  }

  function onSocketClosed() {
    ws = null;
    S.connected = false;
    S.joined = false;
    clearInterval(heartbeatTimer);
    for (const p of pending.values()) p.reject(Object.assign(new Error('disconnected'), { code: 'disconnected' }));
    pending.clear();
    offers.clear();
    peers.clear();
    // An answered call needs no signaling any more: media flows peer to peer,
    // so it carries on (a draining server closes with 1001 for exactly this).
    // Anything not yet answered cannot complete without the server.
    if (call && !call.answered) endCall('disconnected', 'Call ended: lost the signaling connection.', true);
    else if (call) { call.signalingLost = true; log('signaling lost; the call carries on peer to peer'); }
    setError('Cannot reach the signaling server — retrying…', 'disconnected');
    const delay = backoffMs;
    backoffMs = Math.min(backoffMs * 2, 5000);
    setStatus('Disconnected; retrying in ' + (delay / 1000) + ' s');
    setTimeout(connect, delay);
  }

  function send(msg) {
    const text = JSON.stringify(msg);
    if (!ws || ws.readyState !== WebSocket.OPEN) throw Object.assign(new Error('not connected'), { code: 'disconnected' });
    if (new TextEncoder().encode(text).length > maxMessageBytes) {
      throw Object.assign(new Error('message larger than ' + maxMessageBytes + ' bytes'), { code: 'too_large' });
    }
    ws.send(text);
  }

  // Sends msg with a fresh req; the Promise settles with the reply carrying that req.
  function request(msg) {
    return new Promise((resolve, reject) => {
      const req = nextReq++;
      try {
        send(Object.assign({}, msg, { req }));
        pending.set(req, { resolve, reject });
      } catch (e) { reject(e); }
    });
  }

  function onFrame(data) {
    let msg;
    try { msg = JSON.parse(data); } catch (e) { log('unparsable frame ignored'); return; }
    if (!msg || typeof msg.type !== 'string') { log('frame without type ignored'); return; }
    if (msg.type === 'error') {
      setError('Server error ' + msg.code + ': ' + msg.message, msg.code);
    }
    const waiter = msg.req != null ? pending.get(msg.req) : null;
    if (waiter) {
      pending.delete(msg.req);
      if (msg.type === 'error') waiter.reject(Object.assign(new Error(msg.message), { code: msg.code }));
      else waiter.resolve(msg);
      return;
    }
    try { handleEvent(msg); } catch (e) { log('handler failed for', msg.type, e); }
  }

  function handleEvent(msg) {
    switch (msg.type) {
      case 'welcome': return onWelcome(msg);
      case 'offer': return addOffer(msg);
      case 'offer_closed': return onOfferClosed(msg);
      case 'answer': return onAnswer(msg);
      case 'candidate': return onRemoteCandidate(msg);
      case 'hangup': return onHangup(msg);
      case 'peer_joined':
        if (msg.room === targetRoom && msg.peer_id !== S.peerId) peers.add(msg.peer_id);
        return render();
      case 'peer_left': peers.delete(msg.peer_id); return render();
      case 'pong': case 'error': return;
      default: log('unhandled message type', msg.type);
    }
  }

  function onWelcome(msg) {
    S.connected = true;
    S.peerId = msg.peer_id;
    iceServers = Array.isArray(msg.ice_servers) ? msg.ice_servers.filter((s) => s && s.urls) : [];
    if (msg.max_message_bytes > 0) maxMessageBytes = msg.max_message_bytes;
    backoffMs = 500;
    setError('');
    setStatus('Connected as ' + S.peerId);
    clearInterval(heartbeatTimer);
    const every = Math.max(1000, Math.floor((msg.heartbeat_ms || 30000) / 2));
    heartbeatTimer = setInterval(() => { try { send({ type: 'ping' }); } catch (e) { /* closing */ } }, every);
    joinRoom(targetRoom);
  }

  // ---------- rooms and pending offers ----------

  async function joinRoom(room) {
    if (S.joined && room === S.room) { setStatus('Already in room ' + room); return; }
    if (call && S.joined) { setError('Hang up before switching rooms.'); return; }
    const old = S.joined ? S.room : null;
    targetRoom = room;
    S.joined = false;
    offers.clear();
    peers.clear();
    updateOffers();
    try {
      if (old) await request({ type: 'leave', room: old }).catch((e) => log('leave failed:', e.code));
      setStatus('Joining room ' + room + '…');
      const reply = await request({ type: 'join', room });
      S.room = reply.room || room;
      S.joined = true;
      (reply.offers || []).forEach(addOffer);
      setStatus('Joined room ' + S.room);
      if (AUTOCALL && !autocallDone && !call) { autocallDone = true; startCall(); }
    } catch (e) {
      if (e.code !== 'disconnected') setError('Could not join room "' + room + '": ' + (e.code || '') + ' ' + e.message, e.code);
    }
  }

  function addOffer(o) {
    if (!o || !o.offer_id || closedOffers.has(o.offer_id)) return;
    if (o.room && o.room !== targetRoom) return;
    const prev = offers.get(o.offer_id);
    offers.set(o.offer_id, {
      offer_id: o.offer_id, from: o.from, sdp: o.sdp,
      candidates: (prev && prev.candidates.length > (o.candidates || []).length) ? prev.candidates : (o.candidates || []),
    });
    updateOffers();
  }

  function onOfferClosed(msg) {
    closedOffers.set(msg.offer_id, msg.reason);
    offers.delete(msg.offer_id);
    updateOffers();
    if (call && call.role === 'caller' && call.offerId === msg.offer_id && !call.answered) {
      endCall(msg.reason || 'expired', 'Your offer ' + (msg.reason || 'expired') + ' before anyone answered.', true);
    }
  }

  function updateOffers() {
    S.pendingOffers = Array.from(offers.keys());
    const ul = $('offers');
    ul.textContent = '';
    for (const o of offers.values()) {
      const li = document.createElement('li');
      li.textContent = 'Offer ' + o.offer_id + ' from ' + o.from + ' ';
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'answer';
      b.dataset.offerId = o.offer_id;
      b.textContent = 'Answer';
      b.addEventListener('click', () => answerOffer(o.offer_id));
      li.appendChild(b);
      ul.appendChild(li);
    }
    if (!offers.size) {
      const li = document.createElement('li');
      li.className = 'empty';
      li.textContent = 'No pending offers.';
      ul.appendChild(li);
    }
    render();
    setTimeout(maybeAutoAnswer, 0);
  }

  function maybeAutoAnswer() {
    if (!AUTOANSWER || call || !S.joined) return;
    const next = S.pendingOffers.find((id) => !autoTried.has(id));
    if (next) { autoTried.add(next); answerOffer(next); }
  }

  // ---------- media and peer connection ----------

  async function getMedia() {
    const tries = [{ video: true, audio: true }, { video: true }, { audio: true }];
    let lastErr = null;
    for (const c of tries) {
      try { return await navigator.mediaDevices.getUserMedia(c); } catch (e) { lastErr = e; log('getUserMedia', JSON.stringify(c), 'failed:', e.name); }
    }
    throw Object.assign(new Error('Could not access camera or microphone (' +
      (lastErr ? lastErr.name + ': ' + lastErr.message : 'not supported') + ').'), { code: 'media' });
  }

  // A call: role, peer connection, local stream, offer id and the two candidate queues.
  function newCall(role) {
    call = { role, pc: null, stream: null, offerId: null, answered: false, ended: false,
      canSendLocal: false, localQueue: [], remoteSet: false, remoteQueue: [] };
    S.role = role; S.offerId = null; S.callEnded = false; S.hangupReason = null;
    setError(''); // a new attempt: forget the previous call's error

    return call;
  }

  function isCurrent(c) { return c === call && !c.ended; }

  function setupPeer(c, stream) {
    c.stream = stream;
    $('local').srcObject = stream;
    const pc = c.pc = new RTCPeerConnection({ iceServers });
    stream.getTracks().forEach((t) => pc.addTrack(t, stream));
    const remote = new MediaStream();
    pc.ontrack = (ev) => {
      const src = ev.streams && ev.streams[0] ? ev.streams[0] : (remote.addTrack(ev.track), remote);
      if ($('remote').srcObject !== src) $('remote').srcObject = src;
      log('remote track', ev.track.kind);
    };
    pc.onicecandidate = (ev) => sendLocalCandidate(c, ev.candidate ? ev.candidate.toJSON() : { candidate: '' });
    const sync = () => {
      if (!isCurrent(c)) return;
      S.signalingState = pc.signalingState;
      S.iceConnectionState = pc.iceConnectionState;
      S.connectionState = pc.connectionState;
      if (pc.connectionState === 'connected') setStatus('Call connected.');
      if (pc.connectionState === 'failed') setError('The connection to the other side failed.');
      render();
    };
    pc.onsignalingstatechange = pc.oniceconnectionstatechange = pc.onconnectionstatechange = sync;
    sync();
    return pc;
  }

  function sendLocalCandidate(c, cand) {
    if (!isCurrent(c)) return;
    if (!c.canSendLocal) { c.localQueue.push(cand); return; }
    try { send({ type: 'candidate', offer_id: c.offerId, candidate: cand }); } catch (e) { log('candidate not sent:', e.message); }
  }

  function flushLocalCandidates(c) {
    c.canSendLocal = true;
    const queued = c.localQueue.splice(0);
    queued.forEach((cand) => sendLocalCandidate(c, cand));
  }

  function addRemoteCandidate(c, cand) {
    if (!isCurrent(c) || !cand) return;
    if (!c.remoteSet) { c.remoteQueue.push(cand); return; }
    c.pc.addIceCandidate(cand).catch((e) => log('addIceCandidate ignored:', e.name || e));
  }

  function flushRemoteCandidates(c) {
    c.remoteSet = true;
    c.remoteQueue.splice(0).forEach((cand) => addRemoteCandidate(c, cand));
  }

  // ---------- caller ----------

  async function startCall() {
    if (call) { setError('Only one call at a time — hang up first.'); return false; }
    if (!S.joined) { setError('Join a room before calling.'); return false; }
    const c = newCall('caller');
    try {
      setStatus('Getting camera/microphone…');
      const stream = await getMedia();
      if (!isCurrent(c)) { stream.getTracks().forEach((t) => t.stop()); return false; }
      const pc = setupPeer(c, stream);
      await pc.setLocalDescription(await pc.createOffer());
      if (!isCurrent(c)) return false;
      setStatus('Sending offer to room ' + S.room + '…');
      const reply = await request({ type: 'offer', room: S.room, sdp: pc.localDescription.sdp });
      if (!isCurrent(c)) { // hung up while the offer was in flight: withdraw it
        request({ type: 'hangup', offer_id: reply.offer_id }).catch(() => {});
        return false;
      }
      c.offerId = S.offerId = reply.offer_id;
      flushLocalCandidates(c);
      setStatus('Offer ' + c.offerId + ' sent — waiting for someone to answer…');
      (early.get(c.offerId) || []).forEach(handleEvent);
      early.clear();
      return true;
    } catch (e) {
      log('call failed:', e.code || e.name, e.message);
      if (c === call) endCall('error', null);
      if (e.code === 'disconnected') return false; // the connection error is already shown
      setStatus('Call not started.');
      setError(e.code === 'media' ? e.message : 'Call failed: ' + (e.code || e.name || '') + ' ' + e.message, e.code);
      return false;
    }
  }

  // Events for an offer id we do not know yet may belong to our offer in flight.
  function stashEarly(msg) {
    if (!call || call.role !== 'caller' || call.offerId || call.ended) return false;
    if (!early.has(msg.offer_id)) early.set(msg.offer_id, []);
    early.get(msg.offer_id).push(msg);
    return true;
  }

  async function onAnswer(msg) {
    const c = call;
    if (!c || c.offerId !== msg.offer_id) { stashEarly(msg); return; }
    if (c.role !== 'caller' || c.answered) return;
    c.answered = true;
    setStatus('Answered by ' + msg.from + ' — connecting…');
    try {
      await c.pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
      flushRemoteCandidates(c);
    } catch (e) {
      setError('Could not apply the answer: ' + e.message);
    }
  }

  function onRemoteCandidate(msg) {
    if (!call || call.offerId !== msg.offer_id) { stashEarly(msg); return; }
    addRemoteCandidate(call, msg.candidate);
  }

  // ---------- callee ----------

  async function answerOffer(offerId) {
    if (call) { setError('Only one call at a time — hang up first.'); return false; }
    const offer = offers.get(offerId);
    if (!offer) {
      if (closedOffers.get(offerId) === 'answered') setError('Someone else already answered this offer.', 'offer_taken');
      else setError('That offer is no longer available.', 'offer_not_found');
      return false;
    }
    const c = newCall('callee');
    c.offerId = S.offerId = offerId;
    try {
      setStatus('Getting camera/microphone…');
      const stream = await getMedia();
      if (!isCurrent(c)) { stream.getTracks().forEach((t) => t.stop()); return false; }
      const pc = setupPeer(c, stream);
      await pc.setRemoteDescription({ type: 'offer', sdp: offer.sdp });
      flushRemoteCandidates(c);
      offer.candidates.forEach((cand) => addRemoteCandidate(c, cand));
      await pc.setLocalDescription(await pc.createAnswer());
      if (!isCurrent(c)) return false;
      setStatus('Sending answer…');
      const reply = await request({ type: 'answer', offer_id: offerId, sdp: pc.localDescription.sdp });
      if (!isCurrent(c)) return false;
      c.answered = true;
      offers.delete(offerId); // no longer pending: it is our call now
      updateOffers();
      (reply.candidates || []).forEach((cand) => addRemoteCandidate(c, cand));
      flushLocalCandidates(c); // strictly after the answer went out (and was accepted)
      setStatus('Answered offer ' + offerId + ' — connecting…');
      return true;
    } catch (e) {
      log('answer failed:', e.code || e.name, e.message);
      if (c === call) endCall(e.code === 'offer_taken' ? 'offer_taken' : 'error', null);
      if (e.code === 'offer_taken' || e.code === 'offer_not_found') {
        offers.delete(offerId);
        updateOffers();
      }
      if (e.code === 'disconnected') return false;
      setStatus('Could not answer offer ' + offerId + '.');
      if (e.code === 'offer_taken') setError('Someone else already answered this offer.', 'offer_taken');
      else if (e.code === 'media') setError(e.message, 'media');
      else setError('Answer failed: ' + (e.code || e.name || '') + ' ' + e.message, e.code);
      setTimeout(maybeAutoAnswer, 0);
      return false;
    }
  }

  // ---------- hangup ----------

  function onHangup(msg) {
    if (!call || call.offerId !== msg.offer_id) { stashEarly(msg); return; }
    endCall('remote', 'The other side hung up.');
  }

  function hangup() {
    if (!call) { setStatus('No call to hang up.'); return; }
    const c0 = call;
    const id = call.offerId;
    endCall('local', null);
    setStatus('You hung up.');
    // After a reconnect this page is a new peer: the other side is not told.
    if (id && S.connected && !c0.signalingLost) request({ type: 'hangup', offer_id: id }).catch((e) => log('hangup reply:', e.code));
  }

  // Tears down the current call; message goes to #status (and #error when isError).
  function endCall(reason, message, isError) {
    const c = call;
    call = null;
    if (c) {
      c.ended = true;
      if (c.pc) { try { c.pc.close(); } catch (e) { /* already closed */ } }
      if (c.stream) c.stream.getTracks().forEach((t) => t.stop());
    }
    $('local').srcObject = null;
    $('remote').srcObject = null;
    Object.assign(S, { role: null, offerId: null, callEnded: true, hangupReason: reason,
      signalingState: 'closed', iceConnectionState: 'closed', connectionState: 'closed' });
    log('call ended:', reason);
    if (message) setStatus(message);
    if (message && isError) setError(message);
    render();
    setTimeout(maybeAutoAnswer, 0);
  }

  // ---------- rendering ----------

  function updateVideoSizes() {
    S.remoteVideoWidth = $('remote').videoWidth || 0;
    S.remoteVideoHeight = $('remote').videoHeight || 0;
    S.localVideoWidth = $('local').videoWidth || 0;
  }

  function render() {
    S.peers = Array.from(peers);
    $('peer-id').textContent = S.peerId || '—';
    $('room').textContent = S.joined ? S.room : (targetRoom + ' (not joined)');
    $('presence').textContent = S.peers.length ? S.peers.join(', ') : 'none';
    $('status').textContent = S.status;
    $('error').textContent = S.error;
    $('call').disabled = !!call || !S.joined;
    $('hangup').disabled = !call;
    document.querySelectorAll('button.answer').forEach((b) => { b.disabled = !!call; });
  }

  // ---------- wiring ----------

  function safe(fn) {
    return (...args) => {
      try { return Promise.resolve(fn(...args)).catch((e) => log('unexpected error:', e)); } catch (e) { log('unexpected error:', e); }
    };
  }

  S.call = safe(startCall);
  S.answer = safe(answerOffer);
  S.hangup = safe(hangup);
  S.join = safe((room) => joinRoom(room || $('room-input').value.trim()));

  $('room-input').value = targetRoom;
  $('join').addEventListener('click', () => S.join());
  $('room-input').addEventListener('keydown', (e) => { if (e.key === 'Enter') S.join(); });
  $('call').addEventListener('click', () => S.call());
  $('hangup').addEventListener('click', () => S.hangup());
  for (const id of ['local', 'remote']) {
    $(id).addEventListener('resize', updateVideoSizes);
    $(id).addEventListener('loadedmetadata', updateVideoSizes);
  }
  setInterval(updateVideoSizes, 500);
  window.addEventListener('unhandledrejection', (e) => { log('unhandled rejection:', e.reason); e.preventDefault(); });

  updateOffers();
  connect();
})();
