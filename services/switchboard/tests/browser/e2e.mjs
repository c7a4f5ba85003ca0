// Real-browser end-to-end test of Switchboard: the demo page in headless Chromium
// making actual WebRTC calls through the real `switchboard` binary.
//
//   1. standalone:  one `switchboard standalone`; caller and callee in two Chromium instances.
//   2. distributed: redis-server, two room replicas, edge A -> replica 1 only and
//                   edge B -> replica 2 only; caller on edge A, callee on edge B.
//   3. answer race (distributed cluster): a page on edge A and one on edge B answer the
//                   same offer at once; the loser must say "already answered".
//   4. edge down (distributed cluster): edge A is SIGKILLed under a page, which must say
//                   "Cannot reach the signaling server"; edge A restarts on the same port
//                   and the page must reconnect by itself.
//   5. edge drain (distributed cluster): edge A is drained (SIGTERM) under the caller of
//                   a live call; the call carries on (media keeps flowing both ways, nobody
//                   hangs up) and the caller reconnects when edge A is back.
//
// Usage (from the repository root):
//   cargo build && npm ci --prefix services/switchboard/tests/browser && \
//     node services/switchboard/tests/browser/e2e.mjs
// Environment: SWITCHBOARD_BIN (default target/debug/switchboard), CHROMIUM (default
// /usr/bin/chromium), REDIS_SERVER (default redis-server), E2E_DEADLINE_MS (bound on the
// whole run, default 180000), E2E_KEEP_ARTIFACTS=1 keeps the artifacts folder (server
// logs, page console logs) also when everything passed.
//
// Output: one PASS/FAIL line per check, then `N passed, N failed`. Exit 0 only when all
// passed. On failure, screenshots of every open page, each page's console log and the
// server logs are in target/browser-artifacts/<timestamp>/ (the path is printed).

import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');
const BIN = path.resolve(REPO, process.env.SWITCHBOARD_BIN || 'target/debug/switchboard');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const REDIS = process.env.REDIS_SERVER || 'redis-server';
const RUN_DEADLINE_MS = Number(process.env.E2E_DEADLINE_MS) || 180_000; // the whole run
const WAIT_MS = 20_000; // any single condition wait
const STAMP = new Date().toISOString().replace(/[:.]/g, '-');
const ARTIFACTS = path.join(REPO, 'target', 'browser-artifacts', STAMP);
const CHROMIUM_ARGS = [
  '--disable-gpu', '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run',
];

const started = Date.now();
const elapsed = () => ((Date.now() - started) / 1000).toFixed(1) + 's';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------- results ----------

const results = [];
let finished = false; // set when the run ends (e.g. at the deadline): nothing more is recorded or started
function record(name, ok, detail) {
  if (finished) return;
  results.push({ name, ok, detail: detail || '' });
  console.log(`${ok ? 'PASS' : 'FAIL'} ${name}${detail ? ' — ' + detail : ''}`);
}

class Skip extends Error {}

// A phase is a list of checks that build on each other: after its first failure the rest
// of the phase is skipped (printed, not counted) and the next phase runs.
async function phase(name, fn) {
  if (finished) return;
  console.log(`\n--- ${name} (${elapsed()})`);
  const ctx = {
    async check(title, body) {
      const label = `[${name}] ${title}`;
      try {
        record(label, true, await body());
      } catch (e) {
        record(label, false, oneLine(e));
        await snapshotAll(`${name}-${title}`);
        throw new Skip();
      }
    },
  };
  try {
    await fn(ctx);
  } catch (e) {
    if (!(e instanceof Skip)) record(`[${name}] error`, false, oneLine(e));
    if (!finished) console.log(`SKIP rest of [${name}] after the failure above`);
  }
}

const oneLine = (e) => String((e && e.message) || e).split('\n').filter(Boolean).slice(0, 3).join(' | ');

// ---------- processes ----------

const children = new Set(); // every process we spawned and have not seen exit

function spawnLogged(name, cmd, args) {
  if (finished) throw new Error('the run is over');
  const out = fs.openSync(path.join(ARTIFACTS, name + '.log'), 'a');
  fs.writeSync(out, `\n# ${new Date().toISOString()} ${cmd} ${args.join(' ')}\n`);
  const child = spawn(cmd, args, { stdio: ['ignore', out, out] });
  fs.closeSync(out);
  child.label = name;
  children.add(child);
  child.on('exit', () => children.delete(child));
  child.on('error', (e) => { console.log(`${name}: spawn failed: ${e.message}`); children.delete(child); });
  return child;
}

const exited = (child) => child.exitCode !== null || child.signalCode !== null;

function stop(child, signal = 'SIGTERM', graceMs = 5000) {
  return new Promise((resolve) => {
    if (!child || exited(child) || !child.pid) return resolve();
    const t = setTimeout(() => { try { child.kill('SIGKILL'); } catch { /* gone */ } }, graceMs);
    child.once('exit', () => { clearTimeout(t); resolve(); });
    try { child.kill(signal); } catch { clearTimeout(t); resolve(); }
  });
}

function killAllNow() {
  for (const c of children) { try { c.kill('SIGKILL'); } catch { /* gone */ } }
}
process.on('exit', killAllNow);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => { console.log(`\n${sig}: stopping`); killAllNow(); process.exit(130); });
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

// Polls `probe` (async, truthy = done) until it succeeds, `child` exits, or the deadline.
async function until(what, probe, { timeout = WAIT_MS, child = null, every = 100 } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    if (await probe().catch(() => false)) return;
    if (child && exited(child)) throw new Error(`${what}: ${child.label} exited (${child.exitCode ?? child.signalCode}); see ${child.label}.log`);
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeout / 1000} s`);
    await sleep(every);
  }
}

function httpGet(addr, urlPath) {
  return new Promise((resolve) => {
    const req = http.get(`http://${addr}${urlPath}`, { timeout: 2000 }, (r) => {
      let body = '';
      r.on('data', (d) => { body += d; });
      r.on('end', () => resolve({ status: r.statusCode, body: body.trim() }));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve({ status: 0, body: '' }));
  });
}

function redisPing(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.setTimeout(1000, () => { s.destroy(); resolve(false); });
    s.on('error', () => resolve(false));
    s.on('connect', () => s.write('PING\r\n'));
    s.on('data', (d) => { s.destroy(); resolve(d.toString().startsWith('+PONG')); });
  });
}

const tcpOpen = (port) => new Promise((resolve) => {
  const s = net.connect(port, '127.0.0.1');
  s.on('connect', () => { s.destroy(); resolve(true); });
  s.on('error', () => resolve(false));
});

// A switchboard role on a fixed loopback port; `ready` waits for its health endpoint.
class Server {
  constructor(name, role, port, extra) { Object.assign(this, { name, role, port, extra, child: null }); }
  get addr() { return `127.0.0.1:${this.port}`; }
  get url() { return `http://${this.addr}`; }
  async start() {
    this.child = spawnLogged(this.name, BIN, [this.role, '--listen', this.addr, '--admin-listen', '127.0.0.1:0', ...this.extra]);
    if (this.role === 'room') {
      await until(`${this.name} listening`, () => tcpOpen(this.port), { child: this.child });
    } else {
      const path_ = this.role === 'edge' ? '/readyz' : '/healthz';
      await until(`${this.name} ${path_} 200`, async () => (await httpGet(this.addr, path_)).status === 200, { child: this.child });
    }
    return this;
  }
  kill() { return stop(this.child, 'SIGKILL'); }
  stop() { return stop(this.child, 'SIGTERM'); }
}

// ---------- browsers and pages ----------

const browsers = new Set();
const pages = new Map(); // label -> page (open ones)
const consoleLogs = new Map(); // label -> lines (kept after the page closed)

async function launch() {
  if (finished) throw new Error('the run is over');
  const b = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: WAIT_MS });
  browsers.add(b);
  return b;
}

async function closeBrowser(b) {
  browsers.delete(b);
  for (const [label, p] of pages) if (p.context().browser() === b) pages.delete(label);
  await b.close().catch(() => {});
}

// Test-only instrumentation, injected before app.js runs:
//  - keeps every RTCPeerConnection the page creates in window.__pcs (for getStats());
//  - records every offer id that ever appeared in window.switchboard.pendingOffers
//    (window.__seenOffers), by turning that property into an accessor when app.js
//    assigns window.switchboard.
const INIT = `(() => {
  const Orig = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = function (...a) { const pc = new Orig(...a); window.__pcs.push(pc); return pc; };
  window.RTCPeerConnection.prototype = Orig.prototype;
  Object.setPrototypeOf(window.RTCPeerConnection, Orig);
  window.__seenOffers = [];
  let sb;
  Object.defineProperty(window, 'switchboard', { configurable: true, enumerable: true,
    get() { return sb; },
    set(v) {
      sb = v;
      let po = v.pendingOffers;
      Object.defineProperty(v, 'pendingOffers', { configurable: true, enumerable: true,
        get() { return po; },
        set(x) { po = x; (x || []).forEach((id) => { if (!window.__seenOffers.includes(id)) window.__seenOffers.push(id); }); } });
    } });
})();`;

async function openPage(browser, label, url) {
  const ctx = await browser.newContext({ viewport: { width: 1000, height: 900 } });
  await ctx.addInitScript(INIT);
  const page = await ctx.newPage();
  const lines = [];
  consoleLogs.set(label, lines);
  const t = () => new Date().toISOString().slice(11, 23);
  page.on('console', (m) => lines.push(`${t()} ${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => lines.push(`${t()} PAGEERROR: ${e.message}`));
  page.on('requestfailed', (r) => lines.push(`${t()} REQUEST FAILED: ${r.url()} ${r.failure()?.errorText}`));
  page.on('response', (r) => { if (r.status() >= 400) lines.push(`${t()} HTTP ${r.status()} ${r.url()}`); });
  page.on('close', () => pages.delete(label));
  pages.set(label, page);
  await page.goto(url, { timeout: WAIT_MS });
  return page;
}

// Runs fn with `n` fresh Chromium instances, closed afterwards. Errors outside a check
// get their screenshots here, while the pages are still open.
async function withBrowsers(n, tag, fn) {
  const list = [];
  try {
    for (let i = 0; i < n; i++) list.push(await launch());
    return await fn(...list);
  } catch (e) {
    if (!(e instanceof Skip)) await snapshotAll(`${tag}-error`);
    throw e;
  } finally {
    for (const b of list) await closeBrowser(b);
  }
}

// The page's window.switchboard state plus what #status / #error show.
const state = (page) => page.evaluate(() => {
  const s = window.switchboard;
  return {
    connected: s.connected, peerId: s.peerId, room: s.room, joined: s.joined, role: s.role, offerId: s.offerId,
    pendingOffers: s.pendingOffers, ice: s.iceConnectionState, conn: s.connectionState, sig: s.signalingState,
    remoteVideo: `${s.remoteVideoWidth}x${s.remoteVideoHeight}`, callEnded: s.callEnded, hangupReason: s.hangupReason,
    lastErrorCode: s.lastErrorCode,
    status: document.getElementById('status').textContent, error: document.getElementById('error').textContent,
  };
});

// Waits for a condition evaluated in the page; on timeout the error carries the page state.
async function waitPage(page, what, fn, arg, timeout = WAIT_MS) {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 100 });
  } catch (e) {
    let s = '(state unavailable)';
    try { s = JSON.stringify(await state(page)); } catch { /* page gone */ }
    throw new Error(`${what}: ${oneLine(e)}; state ${s}`);
  }
}

// Sum of bytesReceived over the inbound-rtp video streams of the page's newest open pc.
const inboundVideoBytes = (page) => page.evaluate(async () => {
  const pc = window.__pcs.filter((p) => p.connectionState !== 'closed').pop();
  if (!pc) return -1;
  let bytes = 0;
  (await pc.getStats()).forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'video') bytes += r.bytesReceived || 0; });
  return bytes;
});

// Screenshots of every open page (on failure).
let snapshots = 0;
async function snapshotAll(tag) {
  const safe = tag.replace(/[^A-Za-z0-9_-]+/g, '_').slice(0, 80);
  for (const [label, page] of pages) {
    const file = path.join(ARTIFACTS, `${String(++snapshots).padStart(2, '0')}-${safe}-${label}.png`);
    await page.screenshot({ path: file, fullPage: true, timeout: 5000 }).catch((e) => console.log(`screenshot ${label}: ${oneLine(e)}`));
  }
}

// ---------- the checks ----------

// One call: caller on `callerUrl`, callee on `calleeUrl`, two separate Chromium instances.
function callChecks(c, name, callerUrl, calleeUrl, room, hangupSide) {
  return withBrowsers(2, name, async (bA, bB) => {
    const caller = await openPage(bA, `${name}-caller`, `${callerUrl}/?room=${room}&autocall=1`);
    let offerId;
    await c.check('caller published an offer', async () => {
      await waitPage(caller, 'caller offerId', () => !!window.switchboard.offerId);
      offerId = (await state(caller)).offerId;
      return `offerId=${offerId} via ${callerUrl}`;
    });

    const callee = await openPage(bB, `${name}-callee`, `${calleeUrl}/?room=${room}&autoanswer=1`);
    await c.check('callee saw the pending offer and answered it', async () => {
      await waitPage(callee, 'callee answered the offer',
        (id) => window.switchboard.role === 'callee' && window.switchboard.offerId === id
          && window.switchboard.log.some((l) => l.includes('Answered offer ' + id)), offerId);
      const seen = await callee.evaluate(() => window.__seenOffers);
      if (!seen.includes(offerId)) throw new Error(`offer ${offerId} never was in the callee's pendingOffers (saw ${JSON.stringify(seen)})`);
      return `pendingOffers had ${offerId}; answered via ${calleeUrl}`;
    });

    const sides = [['caller', caller], ['callee', callee]];
    for (const [who, p] of sides) {
      await c.check(`${who} ICE connected`, async () => {
        await waitPage(p, `${who} ICE`, () => ['connected', 'completed'].includes(window.switchboard.iceConnectionState));
        const s = await state(p);
        return `ice=${s.ice} connection=${s.conn} signaling=${s.sig}`;
      });
    }
    for (const [who, p] of sides) {
      await c.check(`${who} remote video has frames (videoWidth > 0)`, async () => {
        await waitPage(p, `${who} remote video`, () => document.getElementById('remote').videoWidth > 0);
        return await p.evaluate(() => { const v = document.getElementById('remote'); return `${v.videoWidth}x${v.videoHeight}`; });
      });
    }
    for (const [who, p] of sides) {
      await c.check(`${who} inbound video bytesReceived grows`, async () => {
        const b0 = await inboundVideoBytes(p);
        if (b0 < 0) throw new Error('no open RTCPeerConnection captured');
        const t0 = Date.now();
        const deadline = t0 + 10_000;
        let b1 = b0;
        // Poll getStats until at least ~1 s passed and 20 kB more arrived (deadline 10 s).
        while (Date.now() - t0 < 1000 || b1 < b0 + 20_000) {
          if (Date.now() > deadline) throw new Error(`bytesReceived ${b0} -> ${b1} in ${Date.now() - t0} ms`);
          await sleep(250);
          b1 = await inboundVideoBytes(p);
        }
        return `${b0} -> ${b1} bytes in ${Date.now() - t0} ms`;
      });
    }

    const [hanger, other] = hangupSide === 'caller' ? [caller, callee] : [callee, caller];
    const otherName = hangupSide === 'caller' ? 'callee' : 'caller';
    await c.check(`${hangupSide} hangs up, ${otherName} sees the call end (hangupReason=remote)`, async () => {
      await hanger.evaluate(() => window.switchboard.hangup());
      await waitPage(other, `${otherName} call ended`,
        () => window.switchboard.callEnded === true && window.switchboard.hangupReason === 'remote');
      const [h, o] = [await state(hanger), await state(other)];
      if (!h.callEnded || h.hangupReason !== 'local') throw new Error(`${hangupSide} after hangup: ${JSON.stringify(h)}`);
      return `${otherName}: #status="${o.status}" ice=${o.ice}`;
    });
  });
}

async function standalonePhase(c) {
  const server = await new Server('standalone', 'standalone', await freePort(), ['--ice-server', 'none', '--shutdown-grace', '2s']).start();
  try {
    await callChecks(c, 'standalone', server.url, server.url, 'e2e-standalone', 'callee');
  } finally {
    await server.stop();
  }
}

// Redis, room replicas 1 and 2, edge A -> replica 1 only, edge B -> replica 2 only.
async function startCluster() {
  const redisPort = await freePort();
  const redis = spawnLogged('redis', REDIS, ['--save', '', '--appendonly', 'no', '--bind', '127.0.0.1', '--port', String(redisPort)]);
  await until('redis PONG', () => redisPing(redisPort), { child: redis });
  const roomArgs = ['--redis', `redis://127.0.0.1:${redisPort}/`, '--redis-prefix', `e2e-${STAMP}:`];
  const room1 = await new Server('room1', 'room', await freePort(), roomArgs).start();
  const room2 = await new Server('room2', 'room', await freePort(), roomArgs).start();
  const edgeArgs = (room) => ['--room', room.addr, '--ice-server', 'none', '--shutdown-grace', '2s'];
  const [edgeA, edgeB] = await Promise.all([
    new Server('edge-a', 'edge', await freePort(), edgeArgs(room1)).start(),
    new Server('edge-b', 'edge', await freePort(), edgeArgs(room2)).start(),
  ]);
  const ready = await Promise.all([edgeA, edgeB].map((e) => httpGet(e.addr, '/readyz')));
  console.log(`cluster up: redis :${redisPort}, room1 ${room1.addr}, room2 ${room2.addr}, ` +
    `edge A ${edgeA.addr} -> room1 (${ready[0].body}), edge B ${edgeB.addr} -> room2 (${ready[1].body})`);
  return { redis, room1, room2, edgeA, edgeB };
}

async function stopCluster(cl) {
  if (!cl) return;
  await Promise.all([cl.edgeA.stop(), cl.edgeB.stop()]);
  await Promise.all([cl.room1.stop(), cl.room2.stop()]);
  await stop(cl.redis);
}

// Failure path 1: two pages, one per edge, answer the same offer at once.
function racePhase(c, cl) {
  return withBrowsers(3, 'answer-race', async (bA, bB, bC) => {
    const room = 'e2e-race';
    const caller = await openPage(bA, 'race-caller', `${cl.edgeA.url}/?room=${room}&autocall=1`);
    let offerId;
    const racers = [];
    await c.check('an offer made via edge A is listed by a page on edge A and one on edge B', async () => {
      await waitPage(caller, 'caller offerId', () => !!window.switchboard.offerId);
      offerId = (await state(caller)).offerId;
      racers.push(await openPage(bB, 'racer-edge-a', `${cl.edgeA.url}/?room=${room}`));
      racers.push(await openPage(bC, 'racer-edge-b', `${cl.edgeB.url}/?room=${room}`));
      for (const p of racers) await waitPage(p, 'racer lists the offer', (id) => window.switchboard.pendingOffers.includes(id), offerId);
      return `offerId=${offerId}`;
    });

    let winner, loser;
    await c.check('both pages call answer() at once: exactly one wins', async () => {
      const won = await Promise.all(racers.map((p) => p.evaluate((id) => window.switchboard.answer(id), offerId)));
      if (won.filter((w) => w === true).length !== 1) throw new Error(`answer() results ${JSON.stringify(won)}`);
      [winner, loser] = won[0] ? racers : [racers[1], racers[0]];
      return `answer() results ${JSON.stringify(won)} (edge A page, edge B page)`;
    });
    await c.check('the losing page shows "Someone else already answered this offer."', async () => {
      await waitPage(loser, 'loser message', () => /already answered/i.test(
        document.getElementById('error').textContent + ' ' + document.getElementById('status').textContent));
      const s = await state(loser);
      if (s.role !== null) throw new Error(`loser still in a call: ${JSON.stringify(s)}`);
      return `#error="${s.error}" #status="${s.status}" code=${s.lastErrorCode}`;
    });
    await c.check('the winning page and the caller are in the call (ICE connected)', async () => {
      await waitPage(winner, 'winner ICE', () => ['connected', 'completed'].includes(window.switchboard.iceConnectionState));
      await waitPage(caller, 'caller ICE', () => ['connected', 'completed'].includes(window.switchboard.iceConnectionState));
      return `winner ice=${(await state(winner)).ice}, caller ice=${(await state(caller)).ice}`;
    });
  });
}

// Failure path 2: the edge a page is connected to dies (SIGKILL), then comes back on the same port.
function edgeDownPhase(c, cl) {
  return withBrowsers(2, 'edge-down', async (bA, bB) => {
    const room = 'e2e-edge-down';
    const onA = await openPage(bA, 'edge-down-page-a', `${cl.edgeA.url}/?room=${room}`);
    const onB = await openPage(bB, 'edge-down-page-b', `${cl.edgeB.url}/?room=${room}`);
    await c.check('a page on edge A and a page on edge B joined the room', async () => {
      for (const p of [onA, onB]) await waitPage(p, 'joined', () => window.switchboard.connected && window.switchboard.joined);
      return `edge A peer ${(await state(onA)).peerId}, edge B peer ${(await state(onB)).peerId}`;
    });
    await cl.edgeA.kill();
    await c.check('edge A SIGKILLed: its page shows "Cannot reach the signaling server"', async () => {
      await waitPage(onA, 'disconnected message', () => !window.switchboard.connected
        && /Cannot reach the signaling server/.test(document.getElementById('error').textContent));
      const s = await state(onA);
      return `#error="${s.error}" #status="${s.status}"`;
    });
    await c.check('the page on edge B stays connected while edge A is down', async () => {
      const s = await state(onB);
      if (!s.connected || !s.joined || s.error) throw new Error(JSON.stringify(s));
      return `connected=${s.connected} joined=${s.joined}`;
    });
    await cl.edgeA.start();
    await c.check('edge A restarted on the same port: the page reconnects, rejoins, error cleared', async () => {
      await waitPage(onA, 'reconnected', () => window.switchboard.connected && window.switchboard.joined
        && document.getElementById('error').textContent === '' && window.switchboard.error === '');
      const s = await state(onA);
      return `connected=${s.connected} joined=${s.joined} room=${s.room} #status="${s.status}"`;
    });
    await c.check('after the restart, an offer made via edge A reaches the page on edge B', async () => {
      await onA.evaluate(() => window.switchboard.call());
      await waitPage(onA, 'new offer', () => !!window.switchboard.offerId);
      const id = (await state(onA)).offerId;
      await waitPage(onB, 'offer on edge B', (i) => window.switchboard.pendingOffers.includes(i), id);
      await onA.evaluate(() => window.switchboard.hangup());
      return `offerId=${id}`;
    });
  });
}

// Growth of a page's inbound video (at least 20 kB within ~1-10 s), or throws.
async function videoFlows(page) {
  const b0 = await inboundVideoBytes(page);
  if (b0 < 0) throw new Error('no open RTCPeerConnection captured');
  const t0 = Date.now();
  let b1 = b0;
  while (Date.now() - t0 < 1000 || b1 < b0 + 20_000) {
    if (Date.now() > t0 + 10_000) throw new Error(`bytesReceived ${b0} -> ${b1} in ${Date.now() - t0} ms`);
    await sleep(250);
    b1 = await inboundVideoBytes(page);
  }
  return `${b0} -> ${b1} bytes`;
}

// An upgrade: the edge under a call's caller is drained (SIGTERM) and comes
// back. The call must carry on: media flows peer to peer, nobody hangs up.
function edgeDrainPhase(c, cl) {
  return withBrowsers(2, 'edge-drain', async (bA, bB) => {
    const room = 'e2e-edge-drain';
    const caller = await openPage(bA, 'drain-caller', `${cl.edgeA.url}/?room=${room}&autocall=1`);
    await waitPage(caller, 'caller offerId', () => !!window.switchboard.offerId);
    const callee = await openPage(bB, 'drain-callee', `${cl.edgeB.url}/?room=${room}&autoanswer=1`);
    const sides = [['caller', caller], ['callee', callee]];
    await c.check('a call from edge A to edge B is up (ICE connected both sides)', async () => {
      for (const [who, p] of sides) {
        await waitPage(p, `${who} ICE`, () => ['connected', 'completed'].includes(window.switchboard.iceConnectionState));
      }
      return `offerId=${(await state(caller)).offerId}`;
    });
    await cl.edgeA.stop();
    await c.check('edge A drained (SIGTERM, 1001): the caller lost signaling, the call carries on', async () => {
      await waitPage(caller, 'caller disconnected', () => !window.switchboard.connected);
      const flows = [];
      for (const [who, p] of sides) flows.push(`${who} ${await videoFlows(p)}`);
      for (const [who, p] of sides) {
        const s = await state(p);
        if (s.callEnded || !['connected', 'completed'].includes(s.ice)) throw new Error(`${who}: ${JSON.stringify(s)}`);
      }
      return flows.join('; ');
    });
    await cl.edgeA.start();
    await c.check('edge A back: the caller reconnects and the call is still up', async () => {
      await waitPage(caller, 'caller reconnected', () => window.switchboard.connected && window.switchboard.joined);
      const flows = [];
      for (const [who, p] of sides) flows.push(`${who} ${await videoFlows(p)}`);
      const s = await state(callee);
      if (s.callEnded) throw new Error(`callee: ${JSON.stringify(s)}`);
      return flows.join('; ');
    });
  });
}

async function main() {
  for (const [what, file] of [['SWITCHBOARD_BIN', BIN], ['CHROMIUM', CHROMIUM]]) {
    if (!fs.existsSync(file)) throw new Error(`${what} ${file} does not exist (build with cargo build / install chromium)`);
  }
  console.log(`switchboard: ${BIN}\nchromium: ${CHROMIUM}\nartifacts: ${ARTIFACTS}`);
  await phase('standalone', standalonePhase);
  let cluster = null;
  try {
    await phase('distributed', async (c) => {
      cluster = await startCluster();
      await callChecks(c, 'distributed', cluster.edgeA.url, cluster.edgeB.url, 'e2e-distributed', 'caller');
    });
    if (cluster) {
      await phase('answer race', (c) => racePhase(c, cluster));
      await phase('edge down', (c) => edgeDownPhase(c, cluster));
      await phase('edge drain', (c) => edgeDrainPhase(c, cluster));
    }
  } finally {
    await stopCluster(cluster);
  }
}

// ---------- run ----------

fs.mkdirSync(ARTIFACTS, { recursive: true });
let deadlineTimer;
const deadline = new Promise((_, reject) => {
  deadlineTimer = setTimeout(() => reject(new Error(`the whole run exceeded ${RUN_DEADLINE_MS / 1000} s`)), RUN_DEADLINE_MS);
});
// Last resort if even the cleanup hangs.
setTimeout(() => { console.log('cleanup hung; exiting'); process.exit(2); }, RUN_DEADLINE_MS + 60_000).unref();

let exitCode = 1;
try {
  const run = main();
  run.catch(() => {}); // if the deadline wins, main() may still reject later
  await Promise.race([run, deadline]);
} catch (e) {
  record('run', false, oneLine(e));
} finally {
  clearTimeout(deadlineTimer);
  finished = true;
  const failed = results.filter((r) => !r.ok).length;
  if (failed) await snapshotAll('end');
  for (const b of [...browsers]) await closeBrowser(b);
  await Promise.all([...children].map((ch) => stop(ch, 'SIGTERM', 3000)));
  for (const [label, lines] of consoleLogs) fs.writeFileSync(path.join(ARTIFACTS, `${label}.console.log`), lines.join('\n') + '\n');
  fs.writeFileSync(path.join(ARTIFACTS, 'results.json'), JSON.stringify(results, null, 2) + '\n');
  const passed = results.length - failed;
  if (failed === 0 && results.length > 0) {
    exitCode = 0;
    if (process.env.E2E_KEEP_ARTIFACTS === '1') console.log(`\nartifacts (server logs, page console logs): ${ARTIFACTS}`);
    else fs.rmSync(ARTIFACTS, { recursive: true, force: true });
  } else {
    console.log(`\nFAILED — screenshots, page console logs and server logs: ${ARTIFACTS}`);
  }
  console.log(`browser end-to-end took ${elapsed()}`);
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(exitCode);
}
