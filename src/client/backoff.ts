// Exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff And Jitter"):
// the delay before retry n is uniform in [0, min(max, min * 2^n)]. Full jitter spreads a crowd of
// clients that lost the same leader at the same moment, so they do not reconnect in lockstep.
// Pure: the random source is a parameter.

export function backoffDelayMs(attempt: number, minMs: number, maxMs: number, random: () => number): number {
  const exponent = Math.min(attempt, 30); // 2^30 * minMs already exceeds any sane ceiling
  const ceilingMs = Math.min(maxMs, minMs * 2 ** exponent);
  return Math.floor(random() * ceilingMs);
}
