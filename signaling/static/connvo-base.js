// connvo-base.js: what every part of connvo.js shares: errors, the event emitter, the HTTP
// API client and camera/microphone capture. Import from connvo.js, which re-exports it all.

export const DEFAULT_VIDEO = { width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { ideal: 24 } };

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

  /** `{scenarios: [{scenarioId, title, description, personaName, language, callDuration}]}`:
   * the scenarios this deployment provides. */
  listScenarios() { return this.call('/api/run/meetings/scenarios/listScenarios', {}); }

  /** A meeting with a scenario's AI persona, started at once: `{meetingId, roomId, roomUrl,
   * roomToken, wsUrl, role, expiresAt, agent}` (`args`: `{scenarioId, name, ...}`, see the
   * README's API section). */
  createMeetingFromScenario(args) {
    return this.call('/api/run/meetings/lifecycle/createMeetingFromScenario', args);
  }

  /** Dev mode only: an invite link secret for a meeting (host). */
  createInvite(meetingId, { ttlSeconds } = {}) {
    const args = { meetingId };
    if (ttlSeconds) args.ttlSeconds = ttlSeconds;
    return this.call('/api/dev/createInvite', args);
  }

  /** Dev mode only: a join token (plus `meetingId`, `title`) for an invite link's meeting. */
  joinByInvite(invite) { return this.call('/api/dev/joinByInvite', { invite }); }

  /** Dev mode only, no login: `{valid: true, meetingId, title, state, startedAt, serverTime}`
   * of an invite link's meeting, or `{valid: false, code}` (`bad-invite`, `invite-expired`,
   * `meeting-not-found`). */
  checkInvite(invite) { return this.call('/api/dev/checkInvite', { invite }); }
}

// --------------------------------------------------------------------------------- media

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

/** Capture a camera + microphone stream for a preview (and to hand to `new Room`); `audio`
 * is true, false or constraints, `videoConstraints` the camera's. Returns
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
  // `audio` may be constraints (a chosen microphone: `{deviceId: {exact}}`).
  const want = { audio: audio && typeof audio === 'object' ? audio : Boolean(audio),
    video: video ? videoConstraints : false };
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
  }
  return { stream, errors };
}


/** `{address, port, protocol, type}` of an ICE candidate string, or null. */
export function parseCandidate(text) {
  const bits = String(text || '').replace(/^a=/, '').replace(/^candidate:/, '').trim().split(/\s+/);
  if (bits.length < 8) return null;
  return { protocol: bits[2].toLowerCase(), address: bits[4], port: Number(bits[5]), type: bits[7] };
}
