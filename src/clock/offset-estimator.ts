// Estimates this node's clock offset from its peers, NTP style, from the four timestamps of each
// exchange that the transport piggybacks on its frames:
//   offset = ((t2 - t1) + (t3 - t4)) / 2      (peer clock minus ours)
//   delay  = (t4 - t1) - (t3 - t2)            (round trip minus the peer's hold time)
// The error of one sample is at most delay / 2 (all of it is asymmetry in the worst case), so per
// peer we keep a small window and trust its minimum-delay sample (NTP's clock filter). Peers are
// combined with the median of {0 (ourselves)} ∪ {peer offsets}: for an odd cluster that is the
// median clock minus ours, the same point for every node, so all nodes converge on it and one
// wild clock (ours or a peer's) cannot drag the others. With an even count the two middle clocks
// are not averaged (centralOffsetMs): a wild clock could drag us halfway.
import { assert } from "../util/assert.js";

// The four timestamps of one exchange, in ms: t1 and t4 on our clock, t2 and t3 on the peer's.
// (The transport declares the same shape; it may not import this folder.)
export interface ClockSample {
  t1Ms: number;
  t2Ms: number;
  t3Ms: number;
  t4Ms: number;
}

export interface OffsetMeasurement {
  offsetMs: number; // peer minus us
  delayMs: number; // round-trip network delay
  atMs: number; // t4: when it was measured, on our raw clock
}

export interface PeerOffset extends OffsetMeasurement {
  peer: number;
  samples: number; // in the window
}

export const WINDOW_SAMPLES_DEFAULT = 8;
export const SAMPLE_MAX_AGE_MS_DEFAULT = 30_000;
// A sample whose delay exceeds this says nothing useful (its error bound is delay / 2).
export const SAMPLE_DELAY_MS_MAX_DEFAULT = 1000;
// Millisecond clocks round: a sub-ms round trip may compute as slightly negative.
const ROUNDING_SLACK_MS = 2;

export interface EstimatorOptions {
  windowSamples?: number;
  sampleMaxAgeMs?: number;
  sampleDelayMsMax?: number;
}

export function measureSample(sample: ClockSample): OffsetMeasurement {
  const offsetMs = (sample.t2Ms - sample.t1Ms + (sample.t3Ms - sample.t4Ms)) / 2;
  const delayMs = sample.t4Ms - sample.t1Ms - (sample.t3Ms - sample.t2Ms);
  return { offsetMs, delayMs, atMs: sample.t4Ms };
}

export function median(values: readonly number[]): number {
  assert(values.length > 0, "median of nothing");
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

export class OffsetEstimator {
  private readonly windows = new Map<number, OffsetMeasurement[]>();
  private readonly windowSamples: number;
  private readonly sampleMaxAgeMs: number;
  private readonly sampleDelayMsMax: number;

  constructor(options: EstimatorOptions = {}) {
    this.windowSamples = options.windowSamples ?? WINDOW_SAMPLES_DEFAULT;
    this.sampleMaxAgeMs = options.sampleMaxAgeMs ?? SAMPLE_MAX_AGE_MS_DEFAULT;
    this.sampleDelayMsMax = options.sampleDelayMsMax ?? SAMPLE_DELAY_MS_MAX_DEFAULT;
    assert(Number.isInteger(this.windowSamples) && this.windowSamples > 0, "windowSamples must be a positive integer");
    assert(this.sampleMaxAgeMs > 0 && this.sampleDelayMsMax > 0, "sample limits must be positive");
  }

  // Returns the measurement, or undefined when the sample is rejected: non-finite stamps, a
  // negative delay (a clock jumped mid-exchange), or a delay too long to be informative.
  addSample(peer: number, sample: ClockSample): OffsetMeasurement | undefined {
    const stamps = [sample.t1Ms, sample.t2Ms, sample.t3Ms, sample.t4Ms];
    if (!stamps.every(Number.isFinite)) return undefined;
    const measurement = measureSample(sample);
    if (measurement.delayMs < -ROUNDING_SLACK_MS || measurement.delayMs > this.sampleDelayMsMax) return undefined;
    measurement.delayMs = Math.max(0, measurement.delayMs);
    let window = this.windows.get(peer);
    if (window === undefined) this.windows.set(peer, (window = []));
    window.push(measurement);
    if (window.length > this.windowSamples) window.shift();
    return measurement;
  }

  removePeer(peer: number): void {
    this.windows.delete(peer);
  }

  // The minimum-delay fresh sample of one peer (nowMs on our raw clock, like t4).
  peerOffset(peer: number, nowMs: number): PeerOffset | undefined {
    const window = this.windows.get(peer);
    if (window === undefined) return undefined;
    const fresh = window.filter((measurement) => Math.abs(nowMs - measurement.atMs) <= this.sampleMaxAgeMs);
    if (fresh.length === 0) return undefined;
    let best = fresh[0]!;
    for (const measurement of fresh) {
      // Ties go to the newer sample: it reflects drift since the older one.
      if (measurement.delayMs <= best.delayMs) best = measurement;
    }
    return { peer, ...best, samples: fresh.length };
  }

  peerOffsets(nowMs: number): PeerOffset[] {
    const offsets: PeerOffset[] = [];
    for (const peer of [...this.windows.keys()].sort((a, b) => a - b)) {
      const offset = this.peerOffset(peer, nowMs);
      if (offset !== undefined) offsets.push(offset);
    }
    return offsets;
  }

  // How much to add to our raw clock to reach the cluster's median clock; undefined when no peer
  // has a fresh sample (alone, or cut off: nothing to correct against).
  clusterOffsetMs(nowMs: number): number | undefined {
    const offsets = this.peerOffsets(nowMs);
    if (offsets.length === 0) return undefined;
    return centralOffsetMs(offsets.map((offset) => offset.offsetMs));
  }
}

// The median of {0 (ourselves)} ∪ peer offsets, except that with an even count (a node that has
// heard from only some of its peers: one peer in a young 3-node cluster, or an even cluster) it
// never averages the two middle clocks: when we lie between them we are a middle clock (0);
// otherwise the nearer one. Averaging made a follower that had heard only from the leader step
// halfway to a leader whose clock had jumped (median of {0, +5000} = +2500), fencing it too.
export function centralOffsetMs(peerOffsetsMs: readonly number[]): number {
  const sorted = [0, ...peerOffsetsMs].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  if (sorted.length % 2 === 1) return sorted[middle]!;
  const low = sorted[middle - 1]!;
  const high = sorted[middle]!;
  if (low <= 0 && high >= 0) return 0;
  return high < 0 ? high : low;
}
