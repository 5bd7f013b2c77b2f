// levels.js: audio levels with Web Audio, for the demo room: a level per tile, the active
// speaker (the loudest person above a threshold, held briefly so the highlight does not
// flicker), and whether *we* are talking while muted (measured on a clone of the microphone
// track, which stays enabled while the track we send is muted).

const SPEAKING_RMS = 0.015; // about -36 dBFS: speech, not room noise
const HOLD_MS = 900; // the active speaker keeps the highlight this long after a pause
const MUTED_TALK_MS = 600; // this much speech while muted shows the hint

export class AudioLevels {
  /** `onChange({levels: Map<key, 0..1>, speaker: key | null, talkingWhileMuted: bool})` is
   * called about every 100 ms. Keys are peerIds; ours is `self`. */
  constructor(onChange) {
    this.onChange = onChange;
    this.context = null;
    this.sources = new Map(); // key -> {track, source, analyser, buffer}
    this.speaker = null;
    this.speakerSince = 0;
    this.lastLoud = new Map();
    this.mutedTalkMs = 0;
    this.timer = null;
  }

  #ensureContext() {
    if (!this.context) {
      const Context = window.AudioContext ?? window.webkitAudioContext;
      if (!Context) return null;
      this.context = new Context();
    }
    if (this.context.state === 'suspended') this.context.resume().catch(() => {});
    return this.context;
  }

  /** Measure `track` (an audio MediaStreamTrack, or null to stop) under `key`. */
  watch(key, track) {
    const current = this.sources.get(key);
    if (current?.track === track) return;
    this.unwatch(key);
    if (!track || track.readyState !== 'live') return;
    const context = this.#ensureContext();
    if (!context) return;
    const source = context.createMediaStreamSource(new MediaStream([track]));
    const analyser = context.createAnalyser();
    analyser.fftSize = 512;
    source.connect(analyser);
    this.sources.set(key, { track, source, analyser, buffer: new Float32Array(analyser.fftSize) });
    if (!this.timer) this.timer = setInterval(() => this.#tick(), 100);
  }

  unwatch(key) {
    const entry = this.sources.get(key);
    if (!entry) return;
    entry.source.disconnect();
    this.sources.delete(key);
    this.lastLoud.delete(key);
    if (key === 'self' && entry.ownTrack) entry.track.stop();
  }

  /** Our microphone: measured on a clone, so speech is heard while the sent track is muted. */
  watchSelf(micTrack) {
    const current = this.sources.get('self');
    if (current?.original === micTrack) return;
    this.unwatch('self');
    if (!micTrack || micTrack.readyState !== 'live') return;
    const clone = micTrack.clone();
    clone.enabled = true;
    this.watch('self', clone);
    const entry = this.sources.get('self');
    if (entry) Object.assign(entry, { original: micTrack, ownTrack: true });
  }

  #tick() {
    const now = performance.now();
    const levels = new Map();
    let loudest = null;
    let loudestRms = SPEAKING_RMS;
    for (const [key, { analyser, buffer }] of this.sources) {
      analyser.getFloatTimeDomainData(buffer);
      let sum = 0;
      for (const x of buffer) sum += x * x;
      const rms = Math.sqrt(sum / buffer.length);
      levels.set(key, Math.min(1, rms * 8));
      if (rms >= SPEAKING_RMS) this.lastLoud.set(key, now);
      const muted = key === 'self' && this.sources.get('self')?.original?.enabled === false;
      if (!muted && rms > loudestRms) {
        loudest = key;
        loudestRms = rms;
      }
    }
    // The highlight moves to a new speaker at once; it leaves a speaker only after a pause.
    if (loudest) {
      this.speaker = loudest;
    } else if (this.speaker && now - (this.lastLoud.get(this.speaker) ?? 0) > HOLD_MS) {
      this.speaker = null;
    }
    const self = this.sources.get('self');
    const talkingMuted = Boolean(self && self.original?.enabled === false
      && now - (this.lastLoud.get('self') ?? 0) < 150);
    this.mutedTalkMs = talkingMuted ? this.mutedTalkMs + 100 : Math.max(0, this.mutedTalkMs - 50);
    this.onChange({ levels, speaker: this.speaker, talkingWhileMuted: this.mutedTalkMs >= MUTED_TALK_MS });
  }

  close() {
    clearInterval(this.timer);
    this.timer = null;
    for (const key of [...this.sources.keys()]) this.unwatch(key);
    this.context?.close().catch(() => {});
    this.context = null;
    this.speaker = null;
  }
}
