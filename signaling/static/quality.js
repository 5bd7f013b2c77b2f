// quality.js: a connection's quality as people understand it (good / fair / poor), from two
// samples of `room.getStats()` for one peer: round-trip time, packet loss over the interval
// between them, and jitter. The thresholds follow what makes a call feel laggy or choppy:
// RTT above 300 ms is noticeable, above 600 ms awkward; loss above 2 % is audible, above 8 %
// breaks speech up; jitter above 30 ms / 100 ms strains the jitter buffer.

export const QUALITY_THRESHOLDS = {
  fair: { rtt: 0.3, loss: 0.02, jitter: 0.03 },
  poor: { rtt: 0.6, loss: 0.08, jitter: 0.1 },
};

/** `good`, `fair`, `poor`, or `unknown` (no media yet) for one peer's stats `now`, with
 * `before` the previous sample (or null). */
export function qualityOf(now, before) {
  if (!now) return 'unknown';
  if (now.connectionState === 'failed' || now.connectionState === 'disconnected') return 'poor';
  if (now.connectionState !== 'connected') return 'unknown';
  const received = (s) => (s ? s.inbound.audio.packets + s.inbound.video.packets : 0);
  const lost = (s) => (s ? s.inbound.audio.lost + s.inbound.video.lost : 0);
  const gotNow = received(now) - received(before);
  const lostNow = Math.max(0, lost(now) - lost(before));
  const loss = gotNow + lostNow > 0 ? lostNow / (gotNow + lostNow) : 0;
  const rtt = now.roundTripTime ?? 0;
  const jitter = Math.max(now.inbound.audio.jitter, now.inbound.video.jitter);
  if (before && gotNow === 0) return 'poor'; // media stopped arriving
  const over = (t) => rtt > t.rtt || loss > t.loss || jitter > t.jitter;
  if (over(QUALITY_THRESHOLDS.poor)) return 'poor';
  if (over(QUALITY_THRESHOLDS.fair)) return 'fair';
  return 'good';
}
