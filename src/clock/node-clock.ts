// Everything a node needs from time, in one object the driver holds: the offset estimator fed by
// the transport's clock samples, the disciplined physical clock, the skew guard, and the HLC that
// stamps entries (its physical source is the disciplined clock). Pure: the raw clock is injected.
//
// Driver loop: addSample() for every transport sample; discipline() about once a second; consult
// isHealthy before campaigning or accepting leadership; status() for metrics and the status page.
import { type DisciplineOptions, DisciplinedClock, type CorrectionAction } from "./disciplined-clock.js";
import { type HlcTimestamp, HybridClock } from "./hlc.js";
import { type ClockSample, type EstimatorOptions, OffsetEstimator, type PeerOffset } from "./offset-estimator.js";
import { SkewGuard, type SkewGuardOptions } from "./skew-guard.js";

export const DISCIPLINE_INTERVAL_MS_DEFAULT = 1000;

export interface NodeClockOptions extends EstimatorOptions, DisciplineOptions, SkewGuardOptions {
  highWaterMark?: HlcTimestamp; // persisted by the previous run (HybridClock.reserveHighWaterMark)
}

export interface DisciplineReport {
  clusterOffsetMs: number | undefined; // correction the estimate asks for (undefined: no estimate)
  offsetMs: number | undefined; // our disciplined clock minus the cluster's, before this correction
  action: CorrectionAction;
  deltaMs: number; // change of target correction (stepped at once, or to be slewed)
  healthy: boolean;
  reason: string;
}

export interface ClockStatus {
  healthy: boolean;
  reason: string;
  offsetMs: number | undefined; // our disciplined clock minus the cluster's, at the last discipline()
  correctionMs: number; // applied to the raw clock now
  targetCorrectionMs: number;
  peers: PeerOffset[]; // per peer: offsetMs (peer minus our raw clock), delayMs (RTT), samples
  lastTimestamp: HlcTimestamp;
}

export class NodeClock {
  readonly estimator: OffsetEstimator;
  readonly disciplined: DisciplinedClock;
  readonly guard: SkewGuard;
  readonly hlc: HybridClock;

  constructor(
    private readonly rawNowMs: () => number,
    options: NodeClockOptions = {},
  ) {
    this.estimator = new OffsetEstimator(options);
    this.disciplined = new DisciplinedClock(rawNowMs, options);
    this.guard = new SkewGuard(options);
    this.hlc = new HybridClock(() => this.disciplined.nowMs(), options.highWaterMark);
  }

  get isHealthy(): boolean {
    return this.guard.isHealthy;
  }

  addSample(peer: number, sample: ClockSample): void {
    this.estimator.addSample(peer, sample);
  }

  removePeer(peer: number): void {
    this.estimator.removePeer(peer);
  }

  // Re-estimates, judges, then corrects. The guard sees the offset as it was before this
  // correction: a clock that needed a step beyond maxOffsetMs was wrong until now, so the node
  // stays fenced for the guard's rejoin period even though the step fixed it.
  discipline(): DisciplineReport {
    const rawMs = this.rawNowMs();
    const clusterOffsetMs = this.estimator.clusterOffsetMs(rawMs);
    if (clusterOffsetMs === undefined) {
      const { healthy, reason } = this.guard.update(undefined, rawMs);
      return { clusterOffsetMs, offsetMs: undefined, action: "none", deltaMs: 0, healthy, reason };
    }
    const offsetMs = this.disciplined.correctionMs() - clusterOffsetMs;
    const { healthy, reason } = this.guard.update(offsetMs, rawMs);
    const { action, deltaMs } = this.disciplined.adjust(clusterOffsetMs);
    return { clusterOffsetMs, offsetMs, action, deltaMs, healthy, reason };
  }

  status(): ClockStatus {
    const guard = this.guard.status();
    return {
      healthy: guard.healthy,
      reason: guard.reason,
      offsetMs: guard.offsetMs,
      correctionMs: this.disciplined.correctionMs(),
      targetCorrectionMs: this.disciplined.targetCorrectionMs(),
      peers: this.estimator.peerOffsets(this.rawNowMs()),
      lastTimestamp: this.hlc.lastTimestamp,
    };
  }
}
