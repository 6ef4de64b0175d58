// How good a classroom's link is, from what the relay measures (RTT, loss, bitrate) and what the
// classroom's player reports (frames per second, freezes). DOM-free: the teacher console shows
// the grade, node's test runner checks the thresholds.

/**
 * @typedef {{rtt_ms: number|null, loss: number|null, jitter_ms?: number|null,
 *            kbps: number|null, packets_lost?: number}} Link
 * @typedef {{fps: number, kbps: number, lost: number, freezes: number}} PageReport
 */

/** Loss fraction and RTT above which a link is "fair", then "poor". */
export const FAIR = { loss: 0.02, rttMs: 250, fps: 12 };
export const POOR = { loss: 0.08, rttMs: 600, fps: 5 };

/**
 * "good", "fair" or "poor"; null while nothing has been measured.
 * @param {Link|null|undefined} link
 * @param {PageReport|null|undefined} [page]
 * @returns {"good"|"fair"|"poor"|null}
 */
export function grade(link, page = null) {
  const loss = link?.loss ?? null;
  const rtt = link?.rtt_ms ?? null;
  const fps = page ? page.fps : null;
  if (loss === null && rtt === null && fps === null) return null;
  if ((loss !== null && loss >= POOR.loss) || (rtt !== null && rtt >= POOR.rttMs) ||
      (fps !== null && fps < POOR.fps)) return "poor";
  if ((loss !== null && loss >= FAIR.loss) || (rtt !== null && rtt >= FAIR.rttMs) ||
      (fps !== null && fps < FAIR.fps) || (page?.freezes ?? 0) > 3) return "fair";
  return "good";
}

/**
 * Numbers for the console's line, rounded for people ("–" when unknown).
 * @param {Link|null|undefined} link
 */
export function linkFigures(link) {
  const round = (/** @type {number|null|undefined} */ x, digits = 0) =>
    x === null || x === undefined ? "–" : x.toFixed(digits);
  return {
    rtt: round(link?.rtt_ms),
    loss: link?.loss === null || link?.loss === undefined ? "–" : (link.loss * 100).toFixed(1),
    kbps: round(link?.kbps),
  };
}
