// The physical clock Ferry uses: the raw clock plus a correction that brings it to the cluster's
// clock. Ferry never touches the OS clock; it only corrects its own reading. Small differences are
// slewed (the correction moves at most slewRatePpm µs per ms of elapsed time, so the clock runs
// slightly fast or slow and never jumps); differences beyond stepThresholdMs are stepped at once.
// A step may move the reading backwards: the HLC above it stays monotonic regardless.
import { assert } from "../util/assert.js";

export const STEP_THRESHOLD_MS_DEFAULT = 128; // NTP's step threshold
export const SLEW_RATE_PPM_DEFAULT = 500; // NTP's maximum slew rate

export interface DisciplineOptions {
  stepThresholdMs?: number; // Infinity: never step, always slew
  slewRatePpm?: number;
}

export type CorrectionAction = "none" | "slew" | "step";

export class DisciplinedClock {
  private correction = 0;
  private target = 0;
  private lastRawMs: number | undefined;
  readonly stepThresholdMs: number;
  readonly slewRatePpm: number;

  constructor(
    private readonly rawNowMs: () => number,
    options: DisciplineOptions = {},
  ) {
    this.stepThresholdMs = options.stepThresholdMs ?? STEP_THRESHOLD_MS_DEFAULT;
    this.slewRatePpm = options.slewRatePpm ?? SLEW_RATE_PPM_DEFAULT;
    assert(this.stepThresholdMs >= 0, "stepThresholdMs must not be negative");
    assert(Number.isFinite(this.slewRatePpm) && this.slewRatePpm > 0, "slewRatePpm must be positive");
  }

  // The corrected time in ms (not rounded).
  nowMs(): number {
    const rawMs = this.rawNowMs();
    this.advanceSlew(rawMs);
    return rawMs + this.correction;
  }

  // The correction applied at this instant (ms to add to the raw clock).
  correctionMs(): number {
    this.advanceSlew(this.rawNowMs());
    return this.correction;
  }

  // The correction being slewed towards.
  targetCorrectionMs(): number {
    return this.target;
  }

  // Sets the correction to reach (the estimator's cluster offset of the raw clock).
  adjust(targetCorrectionMs: number): { action: CorrectionAction; deltaMs: number } {
    assert(Number.isFinite(targetCorrectionMs), `target correction is not finite: ${targetCorrectionMs}`);
    this.advanceSlew(this.rawNowMs());
    const deltaMs = targetCorrectionMs - this.correction;
    this.target = targetCorrectionMs;
    if (deltaMs === 0) return { action: "none", deltaMs };
    if (Math.abs(deltaMs) > this.stepThresholdMs) {
      this.correction = targetCorrectionMs;
      return { action: "step", deltaMs };
    }
    return { action: "slew", deltaMs };
  }

  private advanceSlew(rawMs: number): void {
    // A raw clock that went backwards gives no elapsed time (and no slew) for that interval.
    const elapsedMs = this.lastRawMs === undefined ? 0 : Math.max(0, rawMs - this.lastRawMs);
    this.lastRawMs = rawMs;
    const remainingMs = this.target - this.correction;
    if (remainingMs === 0 || elapsedMs === 0) return;
    const maxMoveMs = (elapsedMs * this.slewRatePpm) / 1_000_000;
    this.correction += Math.sign(remainingMs) * Math.min(Math.abs(remainingMs), maxMoveMs);
  }
}
