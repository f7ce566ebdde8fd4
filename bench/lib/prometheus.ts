// Reading a Prometheus histogram out of a node's /metrics text, and comparing two readings: how
// many observations fell above each bucket bound between them. Used by bench/tail.ts.

// Cumulative count per bucket bound ("0.001", ..., "+Inf"), as the exposition format has them.
export type HistogramReading = Map<string, number>;

export function readHistogram(metricsText: string, name: string): HistogramReading {
  const reading: HistogramReading = new Map();
  const prefix = `${name}_bucket{`;
  for (const line of metricsText.split("\n")) {
    if (!line.startsWith(prefix)) continue;
    const match = /le="([^"]+)"[^}]*\} (\d+(?:\.\d+)?(?:e[+-]?\d+)?)$/.exec(line);
    if (match) reading.set(match[1]!, Number(match[2]));
  }
  return reading;
}

// Observations between `before` and `after`, and the share of them above each bound (seconds).
export function sharesAbove(before: HistogramReading, after: HistogramReading, boundsSeconds: number[]): { count: number; above: Array<{ boundSeconds: number; share: number }> } {
  const delta = (le: string) => (after.get(le) ?? 0) - (before.get(le) ?? 0);
  const count = delta("+Inf");
  const above = boundsSeconds.map((boundSeconds) => {
    const le = String(boundSeconds);
    if (!after.has(le)) throw new Error(`the histogram has no bucket at ${le} s`);
    return { boundSeconds, share: count === 0 ? 0 : (count - delta(le)) / count };
  });
  return { count, above };
}
