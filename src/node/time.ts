// The node's time: src/clock's NodeClock (offset estimator, disciplined clock, skew guard, HLC)
// plus what needs I/O: the raw clock (optionally skewed for chaos tests) and the discipline
// cadence.
//
// The HLC starts at 0 after a restart, not at a persisted high-water mark: such a mark has to be
// reserved ahead of the clock (10 s), so a restarted leader stamped entries seconds in the future,
// unfenced, and shifted every lease, delay and TTL by as much. Monotonic stamps in log order do not
// need it: only a leader stamps, and it first observes the last stamp in its log and the floor
// recorded in its snapshot (FerryNode.maxTimestampInLog, the node snapshot's lastTimestamp).
//
// Test hooks (never set in production): FERRY_CLOCK_OFFSET_MS / FERRY_CLOCK_DRIFT_PPM skew the raw
// clock from the start; FERRY_CLOCK_FILE names a file holding an offset in ms, re-read every
// second, so a test can make a running node's clock jump and jump back.
import { readFileSync } from "node:fs";
import { NodeClock } from "../clock/node-clock.js";
import type { ClockSample, PeerOffset } from "../clock/offset-estimator.js";
import { SkewedClock } from "../clock/skewed-clock.js";
import { readClockSkewFromEnv } from "../transport/clock-env.js";
import type { Logger } from "./log.js";

const DISCIPLINE_INTERVAL_MS = 1000;

export class NodeTime {
  private readonly clock: NodeClock;
  private lastDisciplineMs = 0;
  private healthyBefore = true;

  private constructor(
    private readonly raw: SkewedClock,
    maxOffsetMs: number,
    private readonly log: Logger,
    private readonly clockFile: string | undefined,
  ) {
    this.clock = new NodeClock(() => raw.nowMs(), { maxOffsetMs });
  }

  static create(maxOffsetMs: number, baseNowMs: () => number, log: Logger): NodeTime {
    const raw = new SkewedClock(baseNowMs, readClockSkewFromEnv());
    return new NodeTime(raw, maxOffsetMs, log, process.env.FERRY_CLOCK_FILE);
  }

  // The raw physical clock (for transport clock samples and timers).
  physicalNowMs(): number {
    return this.raw.nowMs();
  }

  // The disciplined clock in ms (what timestamps are made of).
  disciplinedNowMs(): number {
    return this.clock.disciplined.nowMs();
  }

  now(): bigint {
    return this.clock.hlc.now();
  }

  update(remote: bigint): void {
    this.clock.hlc.update(remote);
  }

  observe(timestamp: bigint): void {
    this.clock.hlc.observe(timestamp);
  }

  lastTimestamp(): bigint {
    return this.clock.hlc.lastTimestamp;
  }

  sample(from: number, sample: ClockSample): void {
    this.clock.addSample(from, sample);
  }

  // Called every Raft tick; disciplines about once a second.
  tick(): void {
    const nowMs = this.raw.nowMs();
    if (Math.abs(nowMs - this.lastDisciplineMs) < DISCIPLINE_INTERVAL_MS) return;
    this.lastDisciplineMs = nowMs;
    this.readClockFile();
    const report = this.clock.discipline();
    if (report.action === "step") this.log("warn", "clock-step", { deltaMs: report.deltaMs.toFixed(1) });
    if (report.healthy !== this.healthyBefore) {
      this.healthyBefore = report.healthy;
      this.log(report.healthy ? "info" : "error", report.healthy ? "clock-healthy" : "clock-fenced", { reason: report.reason, offsetMs: report.offsetMs?.toFixed(1) });
    }
  }

  healthy(): boolean {
    return this.clock.isHealthy;
  }

  healthReason(): string {
    return this.clock.status().reason;
  }

  offsetMs(): number | undefined {
    return this.clock.status().offsetMs;
  }

  peerOffsets(): Map<number, PeerOffset> {
    return new Map(this.clock.status().peers.map((peer) => [peer.peer, peer]));
  }

  private readClockFile(): void {
    if (!this.clockFile) return;
    try {
      const offsetMs = Number(readFileSync(this.clockFile, "utf8").trim() || "0");
      if (Number.isFinite(offsetMs)) this.raw.setOffset(offsetMs);
    } catch {
      // no file: no offset change
    }
  }

  async close(): Promise<void> {}
}
