// connvo.js: the browser client of connvo-rtc (websocket protocol v1). An ES module, no build
// step. See docs/browser.md for the API; the protocol is in README "Websocket protocol (v1)".
//
//   import { Api, Room } from '/static/connvo.js';
//   const room = new Room({ wsUrl, token });
//   room.on('peer-joined', ({ peer }) => ...);
//   await room.join();
//
// Negotiation: the newcomer offers to every peer in `joined.peers`; after that every peer
// connection follows the perfect-negotiation pattern (the peer that joined earlier is polite),
// with trickled ICE. Media lines per remote peer, in this order: audio (microphone), video
// (camera), and a second video line (screen) added when somebody first shares. A `tap` peer gets
// one send-only audio line (and send-only video when `features.recordVideo`: the room records
// video) and is never reported as a participant.

import { ConnvoError, DEFAULT_VIDEO, Emitter, mediaError, parseCandidate } from './connvo-base.js';
import { PeerLink, RemotePeer, SENDING_ROLES } from './connvo-peer.js';

export { Api, ConnvoError, DEFAULT_VIDEO, Emitter, captureLocalMedia, mediaError, parseCandidate } from './connvo-base.js';
export { RemotePeer } from './connvo-peer.js';

/** Close codes after which reconnecting cannot help (signaling/codes.py FATAL_CLOSES; a test
 * keeps the two the same). */
const FATAL_CLOSE = {
  4400: 'bad-join', 4401: 'token-expired', 4403: 'forbidden', 4404: 'no-room',
  4408: 'join-timeout', 4409: 'room-full', 4410: 'room-ended', 4411: 'taken-over',
  4429: 'rate-limited', 1009: 'frame-too-large',
};

/** Seconds until a JWT's `exp` (Infinity when it has none or cannot be read). */
function tokenSecondsLeft(token) {
  try {
    const payload = JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
    return typeof payload.exp === 'number' ? payload.exp - Date.now() / 1000 : Infinity;
  } catch {
    return Infinity;
  }
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** What a close means: the `error` frame that preceded it names fatal ones precisely. */
const errorFromClose = (code, reason, lastError) => {
  const known = FATAL_CLOSE[code];
  if (!known) {
    return new ConnvoError('disconnected', reason || `connection closed (${code})`,
      { closeCode: code, retryable: true });
  }
  return new ConnvoError(lastError?.code || known, lastError?.message || reason || known,
    { fatal: true, closeCode: code });
};

// --------------------------------------------------------------------------------- the room

/**
 * One membership of one room. Events (`room.on(type, fn)`):
 *
 * `state` {state, previous} · `joined` {peerId, roomId, role, features, resumed} ·
 * `peer-joined` {peer} · `peer-updated` {peer} · `peer-left` {peer, reason} ·
 * `track` {peer, track, source: 'microphone'|'camera'|'screen', stream} ·
 * `connection-state` {peer, state} · `local-media` {audio, video, screen, stream, screenStream} ·
 * `chat` {from, name, text, ts, self} · `transcript` {peerId, name, segmentId, text, final,
 * startMs, endMs} · `transcription` {active} · `transcript-status` {state: 'live' | 'delayed'
 * | 'dropping', peerId, name, dropped, behindMs} (how transcription keeps up: 'delayed', the
 * recogniser is behind; 'dropping', `dropped` segments of `peerId`'s speech were not
 * transcribed) · `recording` {state: 'recording' | 'stopped'} (the room's server peer records
 * it: show a REC badge) · `reconnecting` {attempt, delayMs} ·
 * `reconnected` {resumed} · `error` ConnvoError (`fatal` ends the room) · `ended` {reason} ·
 * `left` {reason} · `waiting` {} (the room has a waiting room: `join()` resolves once a host
 * lets us in; rejects with `denied`, `waiting-timeout`, `room-full`) · hosts only: `knock`
 * {peer} (someone waits: `admit(peerId)` / `deny(peerId)`) and `knock-ended` {peerId, reason} ·
 * `room-ending` {endsAt} (the meeting's maximum duration runs out at `endsAt`, unix ms).
 */
export class Room extends Emitter {
  #ws = null;
  #links = new Map();
  #peers = new Map();
  #taps = new Set();
  #pingTimer = null;
  #pongDeadline = null;
  #reconnecting = false;
  #ownsLocalStream = false;
  #lastError = null;
  #networkChanged = false;
  #onNetworkChange = () => this.restartIce();

  constructor(options) {
    super();
    if (!options?.wsUrl || !options?.token) throw new TypeError('Room needs wsUrl and token');
    // An option given as `undefined` (an app passing its own config through) means "the
    // default", not "nothing": `videoConstraints: undefined` once made turning the camera back
    // on ask getUserMedia for no video at all.
    const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
    this.options = {
      iceTransportPolicy: 'all', audio: true, video: true, videoConstraints: DEFAULT_VIDEO,
      reconnectAttempts: 8, reconnectBackoffMs: 250, pingIntervalMs: 10_000,
      iceCandidateFilter: null, ...given,
    };
    this.wsUrl = options.wsUrl;
    this.token = options.token;
    this.state = 'idle';
    this.peerId = null;
    this.roomId = null;
    this.role = null;
    this.features = {};
    this.endsAt = null;
    this.resumeToken = null;
    this.iceServers = options.iceServers ?? [];
    this.localStream = options.localStream ?? null;
    this.screenStream = null;
    this.micEnabled = options.audio !== false;
    this.cameraEnabled = options.video !== false;
  }

  // ---------------------------------------------------------------- read-only views

  /** Remote participants (never the tap), by peerId. */
  get peers() { return new Map(this.#peers); }
  get micTrack() { return this.localStream?.getAudioTracks()[0] ?? null; }
  get cameraTrack() { return this.cameraEnabled ? this.localStream?.getVideoTracks()[0] ?? null : null; }
  get screenTrack() { return this.screenStream?.getVideoTracks()[0] ?? null; }
  get sendsMedia() { return SENDING_ROLES.has(this.role); }
  get socketOpen() { return this.#ws?.readyState === WebSocket.OPEN && this.state === 'joined'; }
  get transcriptionActive() { return this.#taps.size > 0; }

  /** What we tell the room we send. */
  get media() {
    const live = (t) => Boolean(t && t.readyState === 'live');
    return {
      audio: this.maySend('audio') && this.micEnabled && live(this.micTrack),
      video: this.maySend('video') && this.cameraEnabled && live(this.cameraTrack),
      screen: this.maySend('screen') && live(this.screenTrack),
    };
  }

  // ---------------------------------------------------------------- joining and leaving

  /** Connect, join and start negotiating. Resolves with the `joined` frame; rejects with a
   * ConnvoError (`room-full`, `token-expired`, `room-ended`, ...). `resume`: the
   * `resumeToken` of this tab's previous page (a reload): the seat and peerId come back when
   * the hub still keeps them (`joined.resumed`), and the connections are made afresh. */
  async join({ resume = null } = {}) {
    if (this.state !== 'idle') throw new ConnvoError('already-joined', 'join() was already called');
    this.#setState('connecting');
    try {
      await this.#prepareMedia();
      const joined = await this.#connect(resume);
      this.#startPing();
      // A new network (wifi to cellular, VPN up): the old ICE path is likely dead.
      window.addEventListener('online', this.#onNetworkChange);
      navigator.connection?.addEventListener?.('change', this.#onNetworkChange);
      return joined;
    } catch (err) {
      this.#setState('failed');
      this.#teardown();
      throw err;
    }
  }

  /** Leave for good: the others see `peer-left` at once. */
  leave(reason = 'left') {
    if (this.state === 'left' || this.state === 'ended' || this.state === 'failed') return;
    const ws = this.#ws;
    if (ws?.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify({ type: 'leave' }));
      ws.close(1000, 'left');
    }
    this.#setState('left');
    this.#teardown();
    this.emit('left', { reason });
  }

  /** The page is going away (`pagehide`): closed or reloaded, it cannot tell. The hub keeps
   * the seat a few seconds (`rooms.closing_grace_s`) for a reload to resume it with
   * `join({resume: room.resumeToken})`; a closed tab's seat is freed. */
  closing() {
    if (this.state !== 'joined') return;
    this.#send({ type: 'leave', closing: true });
  }

  /** Host only: remove a peer (`kick`), end the meeting for everyone (`end`), or ask a peer to
   * mute (`askMute`: it gets `mute-requested`, mutes itself and can unmute). */
  kick(peerId) { this.#send({ type: 'kick', peerId }); }
  end() { this.#send({ type: 'end' }); }
  askMute(peerId) { return this.#send({ type: 'ask-mute', peerId }); }

  /** Host only: let a knocking peer (`knock` event) in, or turn it away. */
  admit(peerId) { return this.#send({ type: 'admit', peerId }); }
  deny(peerId) { return this.#send({ type: 'deny', peerId }); }

  /** Whether the room's controls let us send `kind` ('audio' | 'video' | 'screen'): a host
   * always may; a participant as `features` say; observers never. */
  maySend(kind) {
    if (!this.sendsMedia) return false;
    if (this.role === 'host') return true;
    const key = { audio: 'participantAudio', video: 'participantVideo', screen: 'screenSharing' }[kind];
    if (this.features[key] === false) return false;
    return kind !== 'screen' || this.features.participantVideo !== false;
  }

  sendChat(text) {
    const body = String(text ?? '').trim();
    if (!body) return false;
    if (this.features.chat === false) throw new ConnvoError('feature-disabled', 'chat is off in this room');
    return this.#send({ type: 'chat', text: body });
  }

  // ---------------------------------------------------------------- local media

  /** Mute (false) or unmute (true) the microphone; the others see it in `peer.media.audio`. */
  async setMicEnabled(enabled) {
    if (enabled && !this.micTrack) {
      const track = await this.#capture('audio'); // throws `microphone-blocked` and the like
      for (const link of this.#links.values()) await link.setMicTrack(track);
    }
    this.micEnabled = Boolean(enabled);
    if (this.micTrack) this.micTrack.enabled = this.micEnabled;
    this.#mediaChanged();
  }

  /** Camera on/off. Off releases the camera (its light goes out); on captures it again. */
  async setCameraEnabled(enabled) {
    const wanted = Boolean(enabled);
    if (!wanted) {
      this.cameraEnabled = false;
      for (const track of this.localStream?.getVideoTracks() ?? []) {
        track.stop();
        this.localStream.removeTrack(track);
      }
      for (const link of this.#links.values()) await link.setCameraTrack(null);
    } else if (!this.cameraTrack) {
      const track = this.localStream?.getVideoTracks()[0] ?? await this.#capture('video');
      this.cameraEnabled = true;
      for (const link of this.#links.values()) await link.setCameraTrack(track);
    }
    this.cameraEnabled = wanted;
    this.#mediaChanged();
  }

  /** Use another microphone (`kind: 'audio'`) or camera (`'video'`), by `deviceId` from
   * `navigator.mediaDevices.enumerateDevices()`. The new track replaces the old one on every
   * connection (`replaceTrack`: no renegotiation); mute and camera-off states are kept, and
   * later captures (the camera turned back on) use the same device. */
  async switchDevice(kind, deviceId) {
    if (kind !== 'audio' && kind !== 'video') throw new TypeError(`no device kind ${kind}`);
    this.options.devices = { ...this.options.devices, [kind]: deviceId };
    if (kind === 'video' && !this.cameraEnabled) return null; // used when the camera goes on
    const old = kind === 'audio' ? this.micTrack : this.localStream?.getVideoTracks()[0];
    const track = await this.#capture(kind, { replacing: old }); // throws e.g. camera-busy
    if (kind === 'audio') {
      track.enabled = this.micEnabled;
      for (const link of this.#links.values()) await link.setMicTrack(track);
    } else {
      for (const link of this.#links.values()) await link.setCameraTrack(track);
    }
    this.#mediaChanged();
    return track;
  }

  /** The deviceId each of our tracks comes from: `{audio, video}` (null: none). */
  get deviceIds() {
    const of = (track) => track?.getSettings?.().deviceId ?? null;
    return { audio: of(this.micTrack), video: of(this.localStream?.getVideoTracks()[0]) };
  }

  /** Share a screen, window or tab (when the room allows it). */
  async startScreenShare(constraints = { video: { frameRate: 15 }, audio: false }) {
    if (!this.sendsMedia) throw new ConnvoError('forbidden', 'Only participants can share.');
    if (!this.maySend('screen')) {
      throw new ConnvoError('feature-disabled', 'Screen sharing is turned off in this meeting.');
    }
    if (this.screenTrack) return this.screenStream;
    let stream;
    try {
      stream = await navigator.mediaDevices.getDisplayMedia(constraints);
    } catch (err) {
      throw mediaError(err, 'screen');
    }
    this.screenStream = stream;
    const track = stream.getVideoTracks()[0];
    track.addEventListener('ended', () => this.stopScreenShare());
    for (const link of this.#links.values()) await link.setScreenTrack(track);
    this.#mediaChanged();
    return stream;
  }

  async stopScreenShare() {
    const stream = this.screenStream;
    if (!stream) return;
    this.screenStream = null;
    for (const track of stream.getTracks()) track.stop();
    for (const link of this.#links.values()) await link.setScreenTrack(null);
    this.#mediaChanged();
  }

  /** Restart ICE towards every peer (a new network path). Called by the client itself when the
   * browser reports a network change; apps may call it too. */
  restartIce() {
    if (!this.socketOpen) {
      this.#networkChanged = true; // done once the socket is back (see #reconcile)
      return;
    }
    this.#networkChanged = false;
    for (const link of this.#links.values()) link.restartIce();
  }

  /** Per remote peer: connection state, inbound/outbound RTP counts by kind, selected pair. */
  async getStats() {
    const entries = await Promise.all([...this.#links.values()].map((link) => link.stats()));
    return Object.fromEntries(entries.map((s) => [s.peerId, s]));
  }

  // ---------------------------------------------------------------- internals: hooks

  acceptCandidate(text) {
    const filter = this.options.iceCandidateFilter;
    if (!filter) return true;
    const parsed = parseCandidate(text);
    return Boolean(parsed && filter(parsed));
  }

  filterSdp(sdp) {
    if (!this.options.iceCandidateFilter) return sdp;
    return sdp.split('\r\n').filter((line) => !line.startsWith('a=candidate:')
      || this.acceptCandidate(line)).join('\r\n');
  }

  sendSignal(frame) { this.#send(frame); }

  reportError(code, err, peer) {
    const error = err instanceof ConnvoError ? err
      : new ConnvoError(code, `${peer ? `${peer.name || peer.peerId}: ` : ''}${err?.message ?? err}`,
        { cause: err });
    this.emit('error', error);
  }

  // ---------------------------------------------------------------- internals: socket

  #setState(state) {
    if (state === this.state) return;
    const previous = this.state;
    this.state = state;
    this.emit('state', { state, previous });
  }

  #send(frame) {
    const ws = this.#ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || this.state !== 'joined') return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  /** Open a socket and join (or resume); resolves on `joined`. Frames after `joined` are
   * handled in order by #onMessage. */
  #connect(resume) {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocket(this.wsUrl);
      } catch (err) {
        reject(new ConnvoError('network', `cannot open ${this.wsUrl}`, { retryable: true, cause: err }));
        return;
      }
      this.#ws = ws;
      let settled = false;
      let lastError = null;
      ws.onopen = () => {
        const frame = { type: 'join', token: this.token };
        if (resume) frame.resume = resume;
        ws.send(JSON.stringify(frame));
      };
      ws.onmessage = (event) => {
        if (ws !== this.#ws) return;
        let msg;
        try {
          msg = JSON.parse(event.data);
        } catch {
          return;
        }
        if (!settled) {
          if (msg.type === 'joined') {
            settled = true;
            this.#onJoined(msg, Boolean(resume));
            resolve(msg);
          } else if (msg.type === 'waiting') {
            this.#setState('waiting');
            this.emit('waiting', {});
          } else if (msg.type === 'room-ending') {
            this.endsAt = msg.endsAt;
          } else if (msg.type === 'error') {
            lastError = msg;
          }
          return;
        }
        this.#onMessage(msg);
      };
      ws.onclose = (event) => {
        if (!settled) {
          settled = true;
          if (ws === this.#ws) this.#ws = null;
          reject(errorFromClose(event.code, event.reason, lastError));
          return;
        }
        if (ws === this.#ws) this.#onSocketClosed(event);
      };
    });
  }

  #startPing() {
    clearInterval(this.#pingTimer);
    this.#pingTimer = setInterval(() => {
      if (this.state !== 'joined') return;
      if (this.#pongDeadline && Date.now() > this.#pongDeadline) {
        // A silent socket (half-open TCP after a network change): drop it and resume.
        this.#pongDeadline = null;
        this.#ws?.close(4000, 'no pong');
        this.#onSocketClosed({ code: 1006, reason: 'no pong' });
        return;
      }
      if (this.#send({ type: 'ping', ts: Date.now() }) && !this.#pongDeadline) {
        this.#pongDeadline = Date.now() + this.options.pingIntervalMs * 2;
      }
    }, this.options.pingIntervalMs);
  }

  #onSocketClosed(event) {
    const ws = this.#ws;
    this.#ws = null;
    if (ws) ws.onmessage = ws.onclose = null;
    if (['left', 'ended', 'failed'].includes(this.state)) return;
    const error = errorFromClose(event.code, event.reason, this.#lastError);
    this.#lastError = null;
    if (error.fatal) {
      this.#fail(error);
      return;
    }
    this.#reconnect();
  }

  async #reconnect() {
    if (this.#reconnecting) return;
    this.#reconnecting = true;
    this.#setState('reconnecting');
    let delay = this.options.reconnectBackoffMs;
    try {
      for (let attempt = 1; attempt <= this.options.reconnectAttempts; attempt++) {
        if (this.state !== 'reconnecting') return;
        this.emit('reconnecting', { attempt, delayMs: attempt === 1 ? 0 : delay });
        if (attempt > 1) {
          await sleep(delay);
          delay = Math.min(delay * 2, 4000);
        }
        if (this.state !== 'reconnecting') return;
        try {
          await this.#freshToken();
          const joined = await this.#connect(this.resumeToken);
          this.emit('reconnected', { resumed: Boolean(joined.resumed) });
          return;
        } catch (err) {
          if (err.fatal) {
            this.#fail(err);
            return;
          }
        }
      }
      this.#fail(new ConnvoError('disconnected', 'Lost the connection to the server.', { fatal: true }));
    } finally {
      this.#reconnecting = false;
    }
  }

  /** The hub checks the join token on a resume too: one that expires within a minute is
   * replaced through `options.refreshToken` (when given) before the socket is reopened. */
  async #freshToken() {
    if (!this.options.refreshToken || tokenSecondsLeft(this.token) > 60) return;
    try {
      this.token = await this.options.refreshToken();
    } catch {
      // keep the old one: the hub's verdict (token-expired) then reaches the app as usual
    }
  }

  #fail(error) {
    if (error.code === 'room-ended') {
      this.#setState('ended');
      this.#teardown();
      this.emit('ended', { reason: error.message });
      return;
    }
    this.#setState('failed');
    this.#teardown();
    this.emit('error', error);
  }

  #teardown() {
    clearInterval(this.#pingTimer);
    window.removeEventListener('online', this.#onNetworkChange);
    navigator.connection?.removeEventListener?.('change', this.#onNetworkChange);
    for (const link of this.#links.values()) link.close();
    this.#links.clear();
    this.#peers.clear();
    this.#taps.clear();
    const ws = this.#ws;
    this.#ws = null;
    if (ws) {
      ws.onmessage = ws.onclose = null;
      if (ws.readyState <= WebSocket.OPEN) ws.close(1000);
    }
    for (const track of this.screenStream?.getTracks() ?? []) track.stop();
    this.screenStream = null;
    if (this.#ownsLocalStream) {
      for (const track of this.localStream?.getTracks() ?? []) track.stop();
    }
  }

  // ---------------------------------------------------------------- internals: media

  async #capture(kind, { replacing = null } = {}) {
    if (!navigator.mediaDevices?.getUserMedia) {
      throw new ConnvoError('media-unavailable', 'This browser cannot capture media (is the page served over https?)');
    }
    const device = this.options.devices?.[kind];
    const pick = device ? { deviceId: { exact: device } } : {};
    const constraints = kind === 'audio' ? { audio: device ? pick : true }
      : { video: { ...this.options.videoConstraints, ...pick } };
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia(constraints);
    } catch (err) {
      throw mediaError(err, kind === 'audio' ? 'microphone' : 'camera');
    }
    if (!this.localStream) {
      this.localStream = new MediaStream();
      this.#ownsLocalStream = true;
    }
    const track = stream.getTracks()[0];
    if (replacing) {
      this.localStream.removeTrack(replacing);
      replacing.stop();
    }
    this.localStream.addTrack(track);
    return track;
  }

  /** Before joining: capture what the options ask for, unless a stream was handed in. A
   * blocked camera or microphone is reported (`error`, not fatal) and the room is joined
   * without it. (Observers should pass `audio: false, video: false`.) */
  async #prepareMedia() {
    if (!this.localStream) {
      this.localStream = new MediaStream();
      this.#ownsLocalStream = true;
      for (const kind of ['audio', 'video']) {
        if (kind === 'audio' ? !this.micEnabled : !this.cameraEnabled) continue;
        try {
          await this.#capture(kind);
        } catch (err) {
          if (kind === 'video') this.cameraEnabled = false;
          else this.micEnabled = false;
          this.emit('error', err);
        }
      }
    }
    if (this.micTrack) this.micTrack.enabled = this.micEnabled;
  }

  #mediaChanged() {
    const media = this.media;
    this.emit('local-media', { ...media, stream: this.localStream, screenStream: this.screenStream });
    if (this.sendsMedia) this.#send({ type: 'media', ...media });
  }

  // ---------------------------------------------------------------- internals: messages

  #onJoined(msg, resuming) {
    const previousPeerId = this.peerId;
    this.peerId = msg.peerId;
    this.roomId = msg.roomId;
    this.role = msg.role;
    this.features = msg.features ?? {};
    this.endsAt = msg.endsAt ?? null;
    this.resumeToken = msg.resumeToken;
    /** Whether the hub gave back the seat we asked to resume (after a drop or a reload). */
    this.seatResumed = Boolean(msg.resumed);
    this.#pongDeadline = null;
    if (!this.options.iceServers) this.iceServers = msg.iceServers ?? [];
    this.#setState('joined');
    const resumed = resuming && msg.resumed && previousPeerId === msg.peerId;
    this.emit('joined', { peerId: msg.peerId, roomId: msg.roomId, role: msg.role,
      features: this.features, resumed });
    if (resumed) {
      this.#reconcile(msg.peers);
    } else {
      // A first join, or a resume after the grace period: a new peerId, so start afresh.
      for (const link of this.#links.values()) {
        link.close();
        if (!link.peer.isTap) this.emit('peer-left', { peer: link.peer, reason: 'reconnected' });
      }
      this.#links.clear();
      this.#peers.clear();
      this.#taps.clear();
      this.#mediaChanged();
      for (const info of msg.peers) this.#addPeer(info, { offer: true });
    }
  }

  /** After a resume: peers that left while we were away are gone; peers that joined will
   * re-send their offer; links whose ICE broke restart it; our media state is re-announced. */
  #reconcile(peers) {
    const listed = new Map(peers.map((p) => [p.peerId, p]));
    for (const [peerId, link] of this.#links) {
      if (!listed.has(peerId)) this.#removePeer(peerId, 'left');
    }
    for (const info of peers) {
      const link = this.#links.get(info.peerId);
      if (!link) {
        this.#addPeer(info, { offer: false });
      } else {
        const before = JSON.stringify(link.peer.media);
        link.peer.update(info);
        if (before !== JSON.stringify(link.peer.media) && !link.peer.isTap) {
          this.emit('peer-updated', { peer: link.peer });
        }
      }
    }
    this.#mediaChanged();
    const networkChanged = this.#networkChanged;
    this.#networkChanged = false;
    for (const link of this.#links.values()) {
      const ice = link.pc.iceConnectionState;
      if (networkChanged || link.needsRestart || ice === 'failed' || ice === 'disconnected') {
        link.restartIce();
      }
      // An offer of ours may have been lost with the socket: send it again.
      if (link.pc.signalingState === 'have-local-offer') link.sendOffer();
    }
  }

  #addPeer(info, { offer }) {
    if (info.peerId === this.peerId || this.#links.has(info.peerId)) return this.#links.get(info.peerId);
    const peer = new RemotePeer(info);
    // The peer that joined earlier is polite: when we offer (we are the newcomer) we are not.
    const link = new PeerLink(this, peer, { polite: !offer });
    this.#links.set(peer.peerId, link);
    if (peer.isTap) {
      const was = this.#taps.size > 0;
      this.#taps.add(peer.peerId);
      // The server peer also joins rooms that only record: that is not transcription.
      if (!was && this.features.transcription) this.emit('transcription', { active: true });
    } else {
      this.#peers.set(peer.peerId, peer);
      this.emit('peer-joined', { peer });
    }
    if (offer) link.start();
    return link;
  }

  /** A new connection to a peer whose page restarted (same seat, new RTCPeerConnection); the
   * tile stays, its streams are new. We are the polite side: the restarted page offers. */
  #renewLink(old) {
    old.close();
    const peer = new RemotePeer({ peerId: old.peer.peerId, userId: old.peer.userId,
      name: old.peer.name, role: old.peer.role, media: old.peer.media, joinedAt: old.peer.joinedAt });
    const link = new PeerLink(this, peer, { polite: true });
    this.#links.set(peer.peerId, link);
    if (!peer.isTap) {
      this.#peers.set(peer.peerId, peer);
      this.emit('peer-updated', { peer });
    }
    return link;
  }

  #removePeer(peerId, reason) {
    const link = this.#links.get(peerId);
    if (!link) return;
    this.#links.delete(peerId);
    this.#peers.delete(peerId);
    link.close();
    if (link.peer.isTap) {
      this.#taps.delete(peerId);
      if (this.#taps.size === 0 && this.features.transcription) {
        this.emit('transcription', { active: false });
      }
      if (this.#taps.size === 0 && this.features.recording) this.emit('recording', { state: 'stopped' });
    } else {
      this.emit('peer-left', { peer: link.peer, reason });
    }
  }

  #nameOf(peerId) {
    if (peerId === this.peerId) return this.options.name ?? 'You';
    return this.#links.get(peerId)?.peer.name ?? '';
  }

  #onMessage(msg) {
    switch (msg.type) {
      case 'offer':
      case 'answer': {
        let link = this.#links.get(msg.from);
        // An offer with new DTLS credentials from a peer we are connected to: its page was
        // reloaded and resumed its seat; its old connection is gone, so make a new one.
        if (link && msg.type === 'offer' && link.isNewSession(msg.sdp)) link = this.#renewLink(link);
        if (!link && msg.type === 'offer') {
          link = this.#addPeer({ peerId: msg.from, role: 'participant' }, { offer: false });
        }
        link?.onDescription(msg.type, msg.sdp);
        break;
      }
      case 'candidate':
        this.#links.get(msg.from)?.onRemoteCandidate(msg.candidate);
        break;
      case 'peer-joined':
        this.#addPeer(msg.peer, { offer: false });
        break;
      case 'peer-updated': {
        const link = this.#links.get(msg.peer.peerId);
        if (!link) {
          this.#addPeer(msg.peer, { offer: false });
        } else {
          link.peer.update(msg.peer);
          if (!link.peer.isTap) this.emit('peer-updated', { peer: link.peer });
        }
        break;
      }
      case 'peer-left':
        this.#removePeer(msg.peerId, msg.reason ?? 'left');
        break;
      case 'chat':
        this.emit('chat', { from: msg.from, name: msg.name || this.#nameOf(msg.from),
          text: msg.text, ts: msg.ts, self: msg.from === this.peerId });
        break;
      case 'transcript':
        this.emit('transcript', { ...msg, name: this.#nameOf(msg.peerId) });
        break;
      case 'transcript-status':
        this.emit('transcript-status', {
          state: msg.state, peerId: msg.peerId ?? null, name: msg.peerId ? this.#nameOf(msg.peerId) : '',
          dropped: msg.dropped ?? 0, behindMs: msg.behindMs ?? 0,
        });
        break;
      case 'recording':
        this.emit('recording', { state: msg.state === 'recording' ? 'recording' : 'stopped' });
        break;
      case 'pong':
        this.#pongDeadline = null;
        break;
      case 'mute-requested':
        // A request from the host, not a switch: we mute ourselves and the person can unmute.
        if (this.micEnabled) this.setMicEnabled(false).catch(() => {});
        this.emit('mute-requested', { from: msg.from, name: msg.name || this.#nameOf(msg.from) });
        break;
      case 'knock':
        this.emit('knock', { peer: msg.peer });
        break;
      case 'knock-ended':
        this.emit('knock-ended', { peerId: msg.peerId, reason: msg.reason ?? '' });
        break;
      case 'room-ending':
        this.endsAt = msg.endsAt;
        this.emit('room-ending', { endsAt: msg.endsAt });
        break;
      case 'kicked':
        this.#lastError = { code: 'kicked', message: msg.reason || 'You were removed from the meeting.' };
        break;
      case 'room-ended':
        this.#lastError = { code: 'room-ended', message: msg.reason || 'The meeting has ended.' };
        break;
      case 'error':
        if (msg.code === 'peer-unavailable') break; // a peer is reconnecting: offers are re-sent
        this.#lastError = msg;
        this.emit('error', new ConnvoError(msg.code, msg.message, { retryable: msg.retryable }));
        break;
      default:
        break; // newer hubs may add messages
    }
  }
}
