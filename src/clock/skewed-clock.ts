// A clock that is wrong on purpose, for the simulator and for chaos runs: a base clock plus an
// offset, a drift (in parts per million of time elapsed since construction) and jumps. Pure: the
// base clock is injected (real time in a process, simulated time in the simulator). The process
// environment is read elsewhere (src/transport/clock-env.ts), never here.
import { assert } from "../util/assert.js";

export interface ClockSkew {
  offsetMs?: number;
  driftPpm?: number;
}

export class SkewedClock {
  private offsetMs: number;
  private driftPpm: number;
  private originMs: number;
  private driftAtOriginMs = 0; // drift accumulated before the last setDrift

  constructor(
    private readonly baseNowMs: () => number,
    skew: ClockSkew = {},
  ) {
    this.offsetMs = skew.offsetMs ?? 0;
    this.driftPpm = skew.driftPpm ?? 0;
    assert(Number.isFinite(this.offsetMs) && Number.isFinite(this.driftPpm), "clock skew must be finite");
    this.originMs = baseNowMs();
  }

  nowMs(): number {
    return this.readAt(this.baseNowMs());
  }

  // The reading this clock shows when the base clock shows baseMs (the simulator evaluates
  // clocks at the instants messages are sent and received).
  readAt(baseMs: number): number {
    return baseMs + this.offsetMs + this.driftAtOriginMs + ((baseMs - this.originMs) * this.driftPpm) / 1_000_000;
  }

  // Total error now, relative to the base clock.
  errorMs(): number {
    return this.nowMs() - this.baseNowMs();
  }

  jump(deltaMs: number): void {
    assert(Number.isFinite(deltaMs), "jump must be finite");
    this.offsetMs += deltaMs;
  }

  setOffset(offsetMs: number): void {
    assert(Number.isFinite(offsetMs), "offset must be finite");
    this.offsetMs = offsetMs;
  }

  // Changes the rate from now on, keeping the drift accumulated so far.
  setDrift(driftPpm: number): void {
    assert(Number.isFinite(driftPpm), "drift must be finite");
    const baseMs = this.baseNowMs();
    this.driftAtOriginMs += ((baseMs - this.originMs) * this.driftPpm) / 1_000_000;
    this.originMs = baseMs;
    this.driftPpm = driftPpm;
  }
}
