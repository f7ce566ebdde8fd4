// Decides whether this node's clock is trustworthy enough to lead. Unhealthy as soon as the offset
// of its (disciplined) clock from the cluster exceeds maxOffsetMs; healthy again only after the
// offset has stayed within rejoinFraction * maxOffsetMs for rejoinAfterMs, so a clock hovering
// at the limit does not flap leadership. No estimate (no fresh samples) changes nothing.
import { assert } from "../util/assert.js";

export const MAX_OFFSET_MS_DEFAULT = 250;
export const REJOIN_FRACTION_DEFAULT = 0.5;
export const REJOIN_AFTER_MS_DEFAULT = 5000;

export interface SkewGuardOptions {
  maxOffsetMs?: number;
  rejoinFraction?: number; // of maxOffsetMs, in (0, 1]
  rejoinAfterMs?: number;
}

export interface SkewStatus {
  healthy: boolean;
  reason: string; // why unhealthy, or what the last check saw
  offsetMs: number | undefined;
}

export class SkewGuard {
  readonly maxOffsetMs: number;
  readonly rejoinFraction: number;
  readonly rejoinAfterMs: number;
  private healthy = true;
  private reason = "no clock estimate yet";
  private offsetMs: number | undefined;
  private withinSinceMs: number | undefined;

  constructor(options: SkewGuardOptions = {}) {
    this.maxOffsetMs = options.maxOffsetMs ?? MAX_OFFSET_MS_DEFAULT;
    this.rejoinFraction = options.rejoinFraction ?? REJOIN_FRACTION_DEFAULT;
    this.rejoinAfterMs = options.rejoinAfterMs ?? REJOIN_AFTER_MS_DEFAULT;
    assert(this.maxOffsetMs > 0, "maxOffsetMs must be positive");
    assert(this.rejoinFraction > 0 && this.rejoinFraction <= 1, "rejoinFraction must be in (0, 1]");
    assert(this.rejoinAfterMs >= 0, "rejoinAfterMs must not be negative");
  }

  status(): SkewStatus {
    return { healthy: this.healthy, reason: this.reason, offsetMs: this.offsetMs };
  }

  get isHealthy(): boolean {
    return this.healthy;
  }

  // offsetMs: this node's clock minus the cluster's (undefined: no estimate); nowMs: any
  // monotonic-enough ms clock, only differences are used.
  update(offsetMs: number | undefined, nowMs: number): SkewStatus {
    if (offsetMs === undefined) return this.status();
    this.offsetMs = offsetMs;
    const magnitudeMs = Math.abs(offsetMs);
    if (magnitudeMs > this.maxOffsetMs) {
      this.healthy = false;
      this.withinSinceMs = undefined;
      this.reason = `clock offset ${formatMs(offsetMs)} from the cluster exceeds the maximum of ${this.maxOffsetMs} ms`;
    } else if (this.healthy) {
      this.reason = `clock offset ${formatMs(offsetMs)} within ${this.maxOffsetMs} ms`;
    } else {
      this.considerRejoin(magnitudeMs, offsetMs, nowMs);
    }
    return this.status();
  }

  private considerRejoin(magnitudeMs: number, offsetMs: number, nowMs: number): void {
    const rejoinMs = this.maxOffsetMs * this.rejoinFraction;
    if (magnitudeMs > rejoinMs) {
      this.withinSinceMs = undefined;
      this.reason = `clock offset ${formatMs(offsetMs)} must come within ${rejoinMs} ms to rejoin`;
      return;
    }
    this.withinSinceMs ??= nowMs;
    const heldMs = nowMs - this.withinSinceMs;
    if (heldMs >= this.rejoinAfterMs) {
      this.healthy = true;
      this.withinSinceMs = undefined;
      this.reason = `clock offset ${formatMs(offsetMs)} within ${this.maxOffsetMs} ms (rejoined)`;
    } else {
      this.reason = `clock offset ${formatMs(offsetMs)} back within ${rejoinMs} ms for ${Math.max(0, heldMs)} of ${this.rejoinAfterMs} ms`;
    }
  }
}

function formatMs(valueMs: number): string {
  return `${valueMs >= 0 ? "+" : ""}${valueMs.toFixed(1)} ms`;
}
