// The node's time: src/clock's NodeClock (offset estimator, disciplined clock, skew guard, HLC)
// plus what needs I/O: the raw clock (optionally skewed for chaos tests), the persisted HLC
// high-water mark (<dataDir>/clock.json) that keeps timestamps monotonic across restarts, and the
// discipline cadence.
//
// Test hooks (never set in production): FERRY_CLOCK_OFFSET_MS / FERRY_CLOCK_DRIFT_PPM skew the raw
// clock from the start; FERRY_CLOCK_FILE names a file holding an offset in ms, re-read every
// second, so a test can make a running node's clock jump and jump back.
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { NodeClock } from "../clock/node-clock.js";
import type { ClockSample, PeerOffset } from "../clock/offset-estimator.js";
import { SkewedClock } from "../clock/skewed-clock.js";
import { readClockSkewFromEnv } from "../transport/clock-env.js";
import { writeFileDurably } from "./members.js";
import type { Logger } from "./log.js";

const FILE_NAME = "clock.json";
const DISCIPLINE_INTERVAL_MS = 1000;

export class NodeTime {
  private readonly clock: NodeClock;
  private lastDisciplineMs = 0;
  private reserving = false;
  private closed = false;
  private healthyBefore = true;

  private constructor(
    private readonly dataDir: string,
    private readonly raw: SkewedClock,
    highWaterMark: bigint,
    maxOffsetMs: number,
    private readonly log: Logger,
    private readonly clockFile: string | undefined,
  ) {
    this.clock = new NodeClock(() => raw.nowMs(), { highWaterMark, maxOffsetMs });
  }

  static async open(dataDir: string, maxOffsetMs: number, baseNowMs: () => number, log: Logger): Promise<NodeTime> {
    const raw = new SkewedClock(baseNowMs, readClockSkewFromEnv());
    let highWaterMark = 0n;
    try {
      highWaterMark = BigInt(JSON.parse(await readFile(join(dataDir, FILE_NAME), "utf8")).highWaterMark);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw new Error(`${join(dataDir, FILE_NAME)} is unreadable: ${(error as Error).message}`);
    }
    const time = new NodeTime(dataDir, raw, highWaterMark, maxOffsetMs, log, process.env.FERRY_CLOCK_FILE);
    await time.reserve();
    return time;
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
    const timestamp = this.clock.hlc.now();
    if (this.clock.hlc.needsReservation()) void this.reserve();
    return timestamp;
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

  private async reserve(): Promise<void> {
    if (this.reserving || this.closed) return;
    this.reserving = true;
    try {
      const highWaterMark = this.clock.hlc.reserveHighWaterMark();
      await writeFileDurably(this.dataDir, FILE_NAME, JSON.stringify({ highWaterMark: highWaterMark.toString() }));
    } finally {
      this.reserving = false;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    while (this.reserving) await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
