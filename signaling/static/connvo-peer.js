// connvo-peer.js: one remote peer and the RTCPeerConnection to it (perfect negotiation, trickle
// ICE, ICE restart, stats). Internal to connvo.js, which owns the PeerLinks of a Room.

export const SENDING_ROLES = new Set(['host', 'participant']);
/** The AI persona of a meeting from a scenario: a server peer with a seat that sends audio
 * (its voice) and hears everyone's audio; it sends no video, and gets ours only when the room
 * records video. */
export const AGENT_ROLE = 'agent';
/** Server peers that receive no video unless the room records it (`features.recordVideo`). */
const AUDIO_ONLY_ROLES = new Set(['tap', AGENT_ROLE]);

export function direction(send, recv) {
  if (send && recv) return 'sendrecv';
  if (send) return 'sendonly';
  if (recv) return 'recvonly';
  return 'inactive';
}

export const sends = (dir) => dir === 'sendrecv' || dir === 'sendonly';

/** Whether a `role` peer may send `kind` in a room with `features` (hosts are exempt from
 * the participant controls; the hub refuses descriptions that break this). */
export function maySend(role, kind, features = {}) {
  if (role === AGENT_ROLE) return kind === 'audio'; // exempt from the participant controls
  if (!SENDING_ROLES.has(role)) return false;
  if (role === 'host') return true;
  return features[kind === 'audio' ? 'participantAudio' : 'participantVideo'] !== false;
}

/** Who sends what between two roles (the same rules as media/plan.py), within the room's
 * controls (`features`). The tap and the agent get video only when the room records it
 * (`features.recordVideo`). */
export function planMedia(localRole, remoteRole, features = {}) {
  const tapVideo = features.recordVideo === true;
  const audioSend = maySend(localRole, 'audio', features);
  const audioRecv = maySend(remoteRole, 'audio', features);
  // Taps and agents hear audio only, unless the room records video (then they take ours too).
  const videoSend = maySend(localRole, 'video', features) && (!AUDIO_ONLY_ROLES.has(remoteRole) || tapVideo);
  const videoRecv = maySend(remoteRole, 'video', features) && (!AUDIO_ONLY_ROLES.has(localRole) || tapVideo);
  return {
    audio: direction(audioSend, audioRecv),
    video: videoSend || videoRecv ? direction(videoSend, videoRecv) : null,
  };
}

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

  /** The meeting's AI persona (a participant with a name and a voice, no camera). */
  get isAgent() { return this.role === AGENT_ROLE; }
}

/** The RTCPeerConnection to one remote peer, with perfect negotiation. Internal. */
export class PeerLink {
  constructor(room, peer, { polite }) {
    this.room = room;
    this.peer = peer;
    this.polite = polite;
    this.plan = planMedia(room.role, peer.role, room.features);
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

  /** Whether `sdp` (an offer) comes from another RTCPeerConnection than the one we are
   * connected to: its DTLS fingerprint differs (an ICE restart keeps it). */
  isNewSession(sdp) {
    const current = this.pc.remoteDescription?.sdp;
    if (!current || this.pc.connectionState === 'new') return false;
    const fingerprint = (text) => /a=fingerprint:(\S+ \S+)/.exec(text)?.[1] ?? null;
    const before = fingerprint(current);
    return Boolean(before && fingerprint(sdp) && before !== fingerprint(sdp));
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

  /** ICE restart (new ufrag/pwd, fresh candidates); deferred while the socket is down, until
   * the room resumes (see Room.#reconcile). */
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
      inbound: { audio: { packets: 0, bytes: 0, lost: 0, jitter: 0 },
        video: { packets: 0, bytes: 0, frames: 0, lost: 0, jitter: 0 } },
      roundTripTime: null, // seconds, of the selected candidate pair
      outbound: { audio: { packets: 0, bytes: 0 }, video: { packets: 0, bytes: 0 } },
      candidatePair: null,
      iceUfrag: /a=ice-ufrag:(\S+)/.exec(this.pc.localDescription?.sdp ?? '')?.[1] ?? null,
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
        out.inbound[s.kind].lost += Math.max(0, s.packetsLost ?? 0);
        out.inbound[s.kind].jitter = Math.max(out.inbound[s.kind].jitter, s.jitter ?? 0);
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
      out.roundTripTime = pair.currentRoundTripTime ?? null;
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
