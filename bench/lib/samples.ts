// Latency samples in milliseconds, kept whole (a run holds at most a few hundred thousand) so
// every percentile is exact instead of bucketed. Percentiles use the nearest-rank method.

const CAPACITY_INITIAL = 4096;

export interface LatencySummary {
  count: number;
  meanMs: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  p999Ms: number;
  maxMs: number;
}

export class Samples {
  private values = new Float64Array(CAPACITY_INITIAL);
  private length = 0;
  private sorted = true;

  add(valueMs: number): void {
    if (this.length === this.values.length) {
      const grown = new Float64Array(this.values.length * 2);
      grown.set(this.values);
      this.values = grown;
    }
    this.values[this.length++] = valueMs;
    this.sorted = false;
  }

  get count(): number {
    return this.length;
  }

  // The value below which `fraction` (0..1) of the samples fall.
  percentile(fraction: number): number {
    if (this.length === 0) return Number.NaN;
    this.sort();
    const rank = Math.min(this.length, Math.max(1, Math.ceil(fraction * this.length)));
    return this.values[rank - 1]!;
  }

  summary(): LatencySummary {
    let total = 0;
    for (let index = 0; index < this.length; index++) total += this.values[index]!;
    return {
      count: this.length,
      meanMs: round(this.length === 0 ? Number.NaN : total / this.length),
      p50Ms: round(this.percentile(0.5)),
      p90Ms: round(this.percentile(0.9)),
      p99Ms: round(this.percentile(0.99)),
      p999Ms: round(this.percentile(0.999)),
      maxMs: round(this.percentile(1)),
    };
  }

  // Points of the percentile curve on a log scale of "1 in N" (50%, 90%, 99%, ... max), for plots.
  curve(pointsPerDecade = 20): Array<[fraction: number, valueMs: number]> {
    if (this.length === 0) return [];
    const decadesMax = Math.log10(this.length);
    // From the median up: the plots start at 50%.
    const points: Array<[number, number]> = [[0.5, round(this.percentile(0.5))]];
    for (let step = Math.ceil(Math.log10(2) * pointsPerDecade); step < Math.floor(decadesMax * pointsPerDecade); step++) {
      const fraction = 1 - 10 ** -(step / pointsPerDecade);
      if (fraction > 0.5) points.push([fraction, round(this.percentile(fraction))]);
    }
    // The maximum sits at "1 in N", where the samples run out, not at an invented 100%.
    points.push([1 - 1 / this.length, round(this.percentile(1))]);
    return points;
  }

  toArray(): number[] {
    return Array.from(this.values.subarray(0, this.length), round);
  }

  private sort(): void {
    if (this.sorted) return;
    this.values.subarray(0, this.length).sort();
    this.sorted = true;
  }
}

// Milliseconds to microsecond precision keep the JSON small and lose nothing we can measure.
export function round(valueMs: number): number {
  return Math.round(valueMs * 1000) / 1000;
}

const PARTIAL_BUCKET_FRACTION_MIN = 0.25;

// Counts of events in fixed buckets from a start time: throughput over time.
export class Timeline {
  private readonly counts: number[] = [];
  constructor(
    private readonly startMs: number,
    readonly bucketMs = 1000,
  ) {}

  add(atMs: number, count = 1): void {
    const index = Math.floor((atMs - this.startMs) / this.bucketMs);
    if (index < 0) return;
    while (this.counts.length <= index) this.counts.push(0);
    this.counts[index]! += count;
  }

  // Events per second in each bucket up to endMs; the last, partial bucket is rated over the
  // part of it that elapsed (and left out when that is too short to say anything).
  ratesPerSecond(endMs: number): number[] {
    const elapsedMs = endMs - this.startMs;
    const rates: number[] = [];
    for (let index = 0; index * this.bucketMs < elapsedMs; index++) {
      const coveredMs = Math.min(this.bucketMs, elapsedMs - index * this.bucketMs);
      if (coveredMs < this.bucketMs * PARTIAL_BUCKET_FRACTION_MIN) break;
      rates.push(Math.round(((this.counts[index] ?? 0) * 1000) / coveredMs));
    }
    return rates;
  }
}
