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
// one send-only audio line and is never reported as a participant.

const SENDING_ROLES = new Set(['host', 'participant']);

/** Close codes after which reconnecting cannot help. */
const FATAL_CLOSE = {
  4400: 'bad-join', 4401: 'token-expired', 4403: 'forbidden', 4404: 'no-room',
  4408: 'join-timeout', 4409: 'room-full', 4410: 'room-ended', 4429: 'rate-limited',
  1009: 'frame-too-large',
};

const DEFAULT_VIDEO = { width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { ideal: 24 } };

/** An error with a stable machine `code` (the hub's codes, plus the client's own). */
export class ConnvoError extends Error {
  constructor(code, message, { fatal = false, retryable = false, status = 0, closeCode = 0,
    cause = undefined } = {}) {
    super(message || code);
    this.name = 'ConnvoError';
    this.code = code;
    this.fatal = fatal;
    this.retryable = retryable;
    this.status = status;
    this.closeCode = closeCode;
    if (cause !== undefined) this.cause = cause;
  }
}

/** A tiny event emitter: `on(type, fn)` returns a function that unsubscribes. */
export class Emitter {
  #handlers = new Map();

  on(type, fn) {
    if (!this.#handlers.has(type)) this.#handlers.set(type, new Set());
    this.#handlers.get(type).add(fn);
    return () => this.off(type, fn);
  }

  once(type, fn) {
    const off = this.on(type, (event) => { off(); fn(event); });
    return off;
  }

  off(type, fn) {
    this.#handlers.get(type)?.delete(fn);
  }

  emit(type, event = {}) {
    for (const fn of [...(this.#handlers.get(type) ?? []), ...(this.#handlers.get('*') ?? [])]) {
      try {
        fn(event, type);
      } catch (err) {
        // A broken listener must not break the client.
        console.error(`connvo: '${type}' listener failed`, err);
      }
    }
  }
}

// --------------------------------------------------------------------------------- HTTP API

/** The hub's HTTP API (`POST {"args": {...}}`, Bearer user token). Methods return `value`. */
export class Api {
  constructor({ baseUrl = '', token = null } = {}) {
    this.baseUrl = baseUrl.replace(/\/$/, '');
    this.token = token;
  }

  async call(path, args = {}) {
    const headers = { 'Content-Type': 'application/json' };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    let response;
    try {
      response = await fetch(`${this.baseUrl}${path}`, {
        method: 'POST', headers, body: JSON.stringify({ args }),
      });
    } catch (err) {
      throw new ConnvoError('network', 'The server cannot be reached.', { retryable: true, cause: err });
    }
    let body = null;
    try {
      body = await response.json();
    } catch {
      // a proxy's HTML error page, or an endpoint that does not exist
    }
    if (!response.ok || body?.status !== 'success') {
      const code = body?.errorData?.code || (response.status === 404 ? 'not-found' : 'http-error');
      throw new ConnvoError(code, body?.errorMessage || `HTTP ${response.status}`, {
        status: response.status, retryable: Boolean(body?.errorData?.retryable),
      });
    }
    return body.value;
  }

  /** Dev mode only: a user token for anyone who asks; remembered for later calls. */
  async devLogin({ email, name = '' }) {
    const value = await this.call('/api/dev/login', { email, name });
    this.token = value.token;
    return value;
  }

  createMeeting(args) { return this.call('/api/run/meetings/lifecycle/createMeeting', args); }
  startMeeting(meetingId) { return this.call('/api/run/meetings/lifecycle/startMeeting', { meetingId }); }
  endMeeting(meetingId) { return this.call('/api/run/meetings/lifecycle/endMeeting', { meetingId }); }
  getMeeting(meetingId) { return this.call('/api/run/meetings/queries/getMeeting', { meetingId }); }
  getIceServers() { return this.call('/api/run/meetings/webrtc/index/getIceServers', {}); }

  /** `{token, roomId, wsUrl, role, expiresAt, iceServers}` for joining the meeting's room. */
  createJoinToken(meetingId, { role, ttlSeconds } = {}) {
    const args = { meetingId };
    if (role) args.role = role;
    if (ttlSeconds) args.ttlSeconds = ttlSeconds;
    return this.call('/api/run/meetings/webrtc/index/createJoinToken', args);
  }

  /** Dev mode only: an invite link secret for a meeting (host). */
  createInvite(meetingId, { ttlSeconds } = {}) {
    const args = { meetingId };
    if (ttlSeconds) args.ttlSeconds = ttlSeconds;
    return this.call('/api/dev/createInvite', args);
  }

  /** Dev mode only: a join token (plus `meetingId`, `title`) for an invite link's meeting. */
  joinByInvite(invite) { return this.call('/api/dev/joinByInvite', { invite }); }
}

// --------------------------------------------------------------------------------- helpers

function direction(send, recv) {
  if (send && recv) return 'sendrecv';
  if (send) return 'sendonly';
  if (recv) return 'recvonly';
  return 'inactive';
}

const sends = (dir) => dir === 'sendrecv' || dir === 'sendonly';

/** Who sends what between two roles (the same rules as media/plan.py). */
function planMedia(localRole, remoteRole) {
  const localSends = SENDING_ROLES.has(localRole);
  const remoteSends = SENDING_ROLES.has(remoteRole);
  const videoSend = localSends && remoteRole !== 'tap';
  const videoRecv = remoteSends && localRole !== 'tap';
  return {
    audio: direction(localSends, remoteSends),
    video: videoSend || videoRecv ? direction(videoSend, videoRecv) : null,
  };
}

/** `{address, port, protocol, type}` of an ICE candidate string, or null. */
export function parseCandidate(text) {
  const bits = String(text || '').replace(/^a=/, '').replace(/^candidate:/, '').trim().split(/\s+/);
  if (bits.length < 8) return null;
  return { protocol: bits[2].toLowerCase(), address: bits[4], port: Number(bits[5]), type: bits[7] };
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

// --------------------------------------------------------------------------------- one peer

/** One remote peer as the app sees it. `stream` carries its microphone and camera,
 * `screenStream` its screen share; `state` is the RTCPeerConnection's `connectionState`. */
export class RemotePeer {
  constructor(info) {
    this.peerId = info.peerId;
    this.update(info);
    this.state = 'new';
    this.stream = new MediaStream();
    this.screenStream = new MediaStream();
  }

  update(info) {
    this.userId = info.userId ?? this.userId ?? '';
    this.name = info.name ?? this.name ?? '';
    this.role = info.role ?? this.role ?? 'participant';
    this.media = { audio: false, video: false, screen: false, ...(info.media ?? this.media ?? {}) };
    this.joinedAt = info.joinedAt ?? this.joinedAt ?? 0;
  }

  get isTap() { return this.role === 'tap'; }
}

/** The RTCPeerConnection to one remote peer, with perfect negotiation. Internal. */
class PeerLink {
  constructor(room, peer, { polite }) {
    this.room = room;
    this.peer = peer;
    this.polite = polite;
    this.plan = planMedia(room.role, peer.role);
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.settingRemoteAnswer = false;
    this.audioTx = null;
    this.cameraTx = null;
    this.screenTx = null;
    this.offerRetries = 0;
    this.offerTimer = null;
    this.restartTimer = null;
    this.queue = Promise.resolve();
    this.closed = false;
    const config = { iceServers: room.iceServers, iceTransportPolicy: room.options.iceTransportPolicy };
    this.pc = new RTCPeerConnection(config);
    this.pc.onnegotiationneeded = () => this.negotiate();
    this.pc.onicecandidate = ({ candidate }) => this.onLocalCandidate(candidate);
    this.pc.ontrack = (event) => this.onTrack(event);
    this.pc.onconnectionstatechange = () => this.onConnectionState();
    this.pc.oniceconnectionstatechange = () => this.onIceState();
  }

  get peerId() { return this.peer.peerId; }

  /** The newcomer's side: add our lines; `negotiationneeded` then makes the offer. */
  start() {
    const { room, plan } = this;
    const mic = room.micTrack;
    const camera = room.cameraTrack;
    this.audioTx = this.pc.addTransceiver(mic ?? 'audio',
      { direction: plan.audio, streams: [room.localStream] });
    if (plan.video) {
      this.cameraTx = this.pc.addTransceiver(camera ?? 'video',
        { direction: plan.video, streams: [room.localStream] });
      if (room.screenTrack && sends(plan.video)) this.setScreenTrack(room.screenTrack);
    }
  }

  /** Serialise signalling work for this peer (candidates must follow their description). */
  post(work) {
    this.queue = this.queue.then(work).catch((err) => {
      if (!this.closed) this.room.reportError('negotiation-failed', err, this.peer);
    });
    return this.queue;
  }

  async negotiate() {
    if (this.closed) return;
    try {
      this.makingOffer = true;
      await this.pc.setLocalDescription();
      this.sendOffer();
    } catch (err) {
      if (!this.closed) this.room.reportError('negotiation-failed', err, this.peer);
    } finally {
      this.makingOffer = false;
    }
  }

  sendOffer() {
    const description = this.pc.localDescription;
    if (!description || description.type !== 'offer') return;
    this.room.sendSignal({ type: 'offer', to: this.peerId, sdp: this.room.filterSdp(description.sdp) });
    this.armOfferRetry();
  }

  /** Offers can be lost while the other side's socket is down (the hub answers us with
   * `peer-unavailable`): re-send ours until it is answered. */
  armOfferRetry() {
    clearTimeout(this.offerTimer);
    this.offerTimer = setTimeout(() => {
      if (this.closed || this.pc.signalingState !== 'have-local-offer') return;
      if (this.offerRetries++ >= 10) return;
      if (this.room.socketOpen) this.sendOffer();
      else this.armOfferRetry();
    }, 3000);
  }

  onDescription(type, sdp) {
    return this.post(async () => {
      const pc = this.pc;
      if (type === 'answer' && pc.signalingState !== 'have-local-offer') return; // stale or repeated
      const readyForOffer = !this.makingOffer
        && (pc.signalingState === 'stable' || this.settingRemoteAnswer);
      const collision = type === 'offer' && !readyForOffer;
      this.ignoreOffer = !this.polite && collision;
      if (this.ignoreOffer) return;
      this.settingRemoteAnswer = type === 'answer';
      try {
        await pc.setRemoteDescription({ type, sdp }); // a polite peer rolls back implicitly
      } finally {
        this.settingRemoteAnswer = false;
      }
      if (type === 'offer') {
        await this.adoptTransceivers();
        await pc.setLocalDescription();
        this.room.sendSignal({ type: 'answer', to: this.peerId,
          sdp: this.room.filterSdp(pc.localDescription.sdp) });
      } else {
        clearTimeout(this.offerTimer);
        this.offerRetries = 0;
      }
    });
  }

  onRemoteCandidate(candidate) {
    return this.post(async () => {
      if (!candidate || !candidate.candidate) return; // end-of-candidates: nothing to do
      try {
        await this.pc.addIceCandidate(candidate);
      } catch (err) {
        if (!this.ignoreOffer) console.warn('connvo: candidate refused', err);
      }
    });
  }

  /** After a remote offer: find our audio / camera / screen lines among the transceivers it
   * created and put our tracks on them. Lines are identified by their order, by kind. */
  async adoptTransceivers() {
    const { room, plan } = this;
    let audio = null;
    const videos = [];
    for (const tx of this.pc.getTransceivers()) {
      if (tx.stopped || tx.currentDirection === 'stopped') continue;
      const kind = tx.receiver.track.kind;
      if (kind === 'audio' && !audio) audio = tx;
      else if (kind === 'video') videos.push(tx);
    }
    if (audio && audio !== this.audioTx) {
      this.audioTx = audio;
      audio.direction = plan.audio;
      if (sends(plan.audio)) await audio.sender.replaceTrack(room.micTrack ?? null);
    }
    if (videos[0] && videos[0] !== this.cameraTx && plan.video) {
      this.cameraTx = videos[0];
      this.cameraTx.direction = plan.video;
      if (sends(plan.video)) await this.cameraTx.sender.replaceTrack(room.cameraTrack ?? null);
    }
    if (videos[1] && videos[1] !== this.screenTx && plan.video) {
      this.screenTx = videos[1];
      const sharing = Boolean(room.screenTrack) && sends(plan.video);
      this.screenTx.direction = direction(sharing, SENDING_ROLES.has(this.peer.role));
      if (sharing) await this.screenTx.sender.replaceTrack(room.screenTrack);
    }
  }

  async setMicTrack(track) {
    if (this.audioTx && sends(this.plan.audio)) await this.audioTx.sender.replaceTrack(track);
  }

  async setCameraTrack(track) {
    if (this.cameraTx && sends(this.plan.video)) await this.cameraTx.sender.replaceTrack(track);
  }

  /** Start (track) or stop (null) sending our screen. The first share adds a line, which
   * renegotiates; later shares reuse it. */
  async setScreenTrack(track) {
    if (!this.plan.video || !sends(this.plan.video)) return;
    const recv = SENDING_ROLES.has(this.peer.role);
    if (!this.screenTx) {
      if (!track) return;
      this.screenTx = this.pc.addTransceiver(track,
        { direction: direction(true, recv), streams: [this.room.screenStream] });
      return;
    }
    await this.screenTx.sender.replaceTrack(track);
    if (track && !sends(this.screenTx.direction)) this.screenTx.direction = direction(true, recv);
  }

  onLocalCandidate(candidate) {
    if (candidate && candidate.candidate && !this.room.acceptCandidate(candidate.candidate)) return;
    this.room.sendSignal({ type: 'candidate', to: this.peerId,
      candidate: candidate && candidate.candidate ? candidate.toJSON() : null });
  }

  onTrack({ track, transceiver }) {
    const videos = this.pc.getTransceivers().filter((tx) => tx.receiver.track.kind === 'video');
    const source = track.kind === 'audio' ? 'microphone'
      : videos.indexOf(transceiver) > 0 ? 'screen' : 'camera';
    const stream = source === 'screen' ? this.peer.screenStream : this.peer.stream;
    for (const old of stream.getTracks()) {
      if (old.kind === track.kind && old !== track) stream.removeTrack(old);
    }
    if (!stream.getTracks().includes(track)) stream.addTrack(track);
    if (!this.peer.isTap) this.room.emit('track', { peer: this.peer, track, source, stream });
  }

  onConnectionState() {
    const state = this.pc.connectionState;
    if (state === this.peer.state) return;
    this.peer.state = state;
    if (!this.peer.isTap) this.room.emit('connection-state', { peer: this.peer, state });
    if (state === 'failed') this.restartIce();
  }

  onIceState() {
    const state = this.pc.iceConnectionState;
    clearTimeout(this.restartTimer);
    if (state === 'disconnected') {
      // The path may have changed (new network): give ICE a moment, then restart it.
      this.restartTimer = setTimeout(() => {
        if (this.pc.iceConnectionState === 'disconnected') this.restartIce();
      }, 2500);
    } else if (state === 'failed') {
      this.restartIce();
    }
  }

  /** ICE restart; the offer goes out once the socket is up (see Room.#resumed). */
  restartIce() {
    if (this.closed) return;
    if (!this.room.socketOpen) {
      this.needsRestart = true;
      return;
    }
    this.needsRestart = false;
    this.pc.restartIce();
  }

  async stats() {
    const out = {
      peerId: this.peerId, name: this.peer.name, role: this.peer.role,
      connectionState: this.pc.connectionState, iceConnectionState: this.pc.iceConnectionState,
      signalingState: this.pc.signalingState,
      inbound: { audio: { packets: 0, bytes: 0 }, video: { packets: 0, bytes: 0, frames: 0 } },
      outbound: { audio: { packets: 0, bytes: 0 }, video: { packets: 0, bytes: 0 } },
      candidatePair: null,
    };
    let report;
    try {
      report = await this.pc.getStats();
    } catch {
      return out;
    }
    let pairId = null;
    for (const s of report.values()) {
      if (s.type === 'inbound-rtp' && out.inbound[s.kind]) {
        out.inbound[s.kind].packets += s.packetsReceived ?? 0;
        out.inbound[s.kind].bytes += s.bytesReceived ?? 0;
        if (s.kind === 'video') out.inbound.video.frames += s.framesDecoded ?? 0;
      } else if (s.type === 'outbound-rtp' && out.outbound[s.kind]) {
        out.outbound[s.kind].packets += s.packetsSent ?? 0;
        out.outbound[s.kind].bytes += s.bytesSent ?? 0;
      } else if (s.type === 'transport' && s.selectedCandidatePairId) {
        pairId = s.selectedCandidatePairId;
      }
    }
    const pair = pairId && report.get(pairId);
    if (pair) {
      const local = report.get(pair.localCandidateId) ?? {};
      const remote = report.get(pair.remoteCandidateId) ?? {};
      out.candidatePair = {
        localType: local.candidateType, localAddress: local.address ?? local.ip,
        localProtocol: local.protocol, relayProtocol: local.relayProtocol,
        remoteType: remote.candidateType, remoteAddress: remote.address ?? remote.ip,
      };
    }
    return out;
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.offerTimer);
    clearTimeout(this.restartTimer);
    this.pc.onnegotiationneeded = this.pc.onicecandidate = this.pc.ontrack = null;
    this.pc.onconnectionstatechange = this.pc.oniceconnectionstatechange = null;
    this.pc.close();
    this.peer.state = 'closed';
    for (const track of [...this.peer.stream.getTracks(), ...this.peer.screenStream.getTracks()]) {
      track.stop();
    }
  }
}

// --------------------------------------------------------------------------------- the room

/**
 * One membership of one room. Events (`room.on(type, fn)`):
 *
 * `state` {state, previous} · `joined` {peerId, roomId, role, features, resumed} ·
 * `peer-joined` {peer} · `peer-updated` {peer} · `peer-left` {peer, reason} ·
 * `track` {peer, track, source: 'microphone'|'camera'|'screen', stream} ·
 * `connection-state` {peer, state} · `local-media` {audio, video, screen, stream, screenStream} ·
 * `chat` {from, name, text, ts, self} · `transcript` {peerId, name, segmentId, text, final,
 * startMs, endMs} · `transcription` {active} · `reconnecting` {attempt, delayMs} ·
 * `reconnected` {resumed} · `error` ConnvoError (`fatal` ends the room) · `ended` {reason} ·
 * `left` {reason}.
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

  constructor(options) {
    super();
    if (!options?.wsUrl || !options?.token) throw new TypeError('Room needs wsUrl and token');
    this.options = {
      iceTransportPolicy: 'all', audio: true, video: true, videoConstraints: DEFAULT_VIDEO,
      reconnectAttempts: 8, reconnectBackoffMs: 250, pingIntervalMs: 10_000,
      iceCandidateFilter: null, ...options,
    };
    this.wsUrl = options.wsUrl;
    this.token = options.token;
    this.state = 'idle';
    this.peerId = null;
    this.roomId = null;
    this.role = null;
    this.features = {};
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
      audio: this.sendsMedia && this.micEnabled && live(this.micTrack),
      video: this.sendsMedia && this.cameraEnabled && live(this.cameraTrack),
      screen: this.sendsMedia && live(this.screenTrack),
    };
  }

  // ---------------------------------------------------------------- joining and leaving

  /** Connect, join and start negotiating. Resolves with the `joined` frame; rejects with a
   * ConnvoError (`room-full`, `token-expired`, `room-ended`, ...). */
  async join() {
    if (this.state !== 'idle') throw new ConnvoError('already-joined', 'join() was already called');
    this.#setState('connecting');
    try {
      await this.#prepareMedia();
      const joined = await this.#connect(null);
      this.#startPing();
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

  /** Host only: remove a peer (`kick`) or end the meeting for everyone (`end`). */
  kick(peerId) { this.#send({ type: 'kick', peerId }); }
  end() { this.#send({ type: 'end' }); }

  sendChat(text) {
    const body = String(text ?? '').trim();
    if (!body) return false;
    if (this.features.chat === false) throw new ConnvoError('feature-disabled', 'chat is off in this room');
    return this.#send({ type: 'chat', text: body });
  }

  // ---------------------------------------------------------------- local media

  /** Mute (false) or unmute (true) the microphone; the others see it in `peer.media.audio`. */
  async setMicEnabled(enabled) {
    this.micEnabled = Boolean(enabled);
    if (this.micEnabled && !this.micTrack) {
      const track = await this.#capture('audio');
      for (const link of this.#links.values()) await link.setMicTrack(track);
    }
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

  /** Share a screen, window or tab (when the room allows it). */
  async startScreenShare(constraints = { video: { frameRate: 15 }, audio: false }) {
    if (this.features.screenSharing === false) {
      throw new ConnvoError('feature-disabled', 'Screen sharing is turned off in this meeting.');
    }
    if (!this.sendsMedia) throw new ConnvoError('forbidden', 'Only participants can share.');
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

  async #capture(kind) {
    if (!navigator.mediaDevices?.getUserMedia) {
      throw new ConnvoError('media-unavailable', 'This browser cannot capture media (is the page served over https?)');
    }
    const constraints = kind === 'audio' ? { audio: true }
      : { video: this.options.videoConstraints };
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
    this.resumeToken = msg.resumeToken;
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
    for (const link of this.#links.values()) {
      const ice = link.pc.iceConnectionState;
      if (link.needsRestart || ice === 'failed' || ice === 'disconnected') link.restartIce();
      else if (link.pc.signalingState === 'have-local-offer') link.sendOffer();
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
      if (!was) this.emit('transcription', { active: true });
    } else {
      this.#peers.set(peer.peerId, peer);
      this.emit('peer-joined', { peer });
    }
    if (offer) link.start();
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
      if (this.#taps.size === 0) this.emit('transcription', { active: false });
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
      case 'pong':
        this.#pongDeadline = null;
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

/** A getUserMedia / getDisplayMedia failure as a ConnvoError with a readable message. */
export function mediaError(err, what) {
  const name = err?.name ?? '';
  if (name === 'NotAllowedError' || name === 'SecurityError') {
    return new ConnvoError(`${what}-blocked`,
      what === 'screen' ? 'Screen sharing was cancelled or blocked.'
        : `Your ${what} is blocked. Allow it in the browser's site settings, then try again.`,
      { cause: err });
  }
  if (name === 'NotFoundError' || name === 'OverconstrainedError') {
    return new ConnvoError(`${what}-not-found`, `No ${what} was found.`, { cause: err });
  }
  if (name === 'NotReadableError' || name === 'AbortError') {
    return new ConnvoError(`${what}-busy`, `Your ${what} is in use by another application.`, { cause: err });
  }
  return new ConnvoError(`${what}-failed`, `Could not start your ${what}: ${err?.message ?? err}`, { cause: err });
}

/** Capture a camera + microphone stream for a preview (and to hand to `new Room`). Returns
 * `{stream, errors}`; a blocked device is an entry in `errors`, not a rejection. */
export async function captureLocalMedia({ audio = true, video = true,
  videoConstraints = DEFAULT_VIDEO } = {}) {
  const stream = new MediaStream();
  const errors = [];
  if (!navigator.mediaDevices?.getUserMedia) {
    errors.push(new ConnvoError('media-unavailable',
      'This browser cannot use a camera or microphone here (the page must be served over https).'));
    return { stream, errors };
  }
  const want = { audio: Boolean(audio), video: video ? videoConstraints : false };
  if (!want.audio && !want.video) return { stream, errors };
  try {
    const got = await navigator.mediaDevices.getUserMedia(want);
    for (const track of got.getTracks()) stream.addTrack(track);
  } catch (err) {
    // Try each device on its own: one blocked or missing device must not cost the other.
    for (const kind of ['audio', 'video']) {
      if (!want[kind]) continue;
      try {
        const got = await navigator.mediaDevices.getUserMedia({ [kind]: want[kind] });
        for (const track of got.getTracks()) stream.addTrack(track);
      } catch (inner) {
        errors.push(mediaError(inner, kind === 'audio' ? 'microphone' : 'camera'));
      }
    }
    if (!errors.length) errors.push(mediaError(err, 'camera'));
  }
  return { stream, errors };
}
