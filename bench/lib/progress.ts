// A progress bar on stderr for a terminal, plain start/end lines otherwise (CI logs stay short).
// Redraws at most every REDRAW_INTERVAL_MS so drawing never costs the load generator much.

const REDRAW_INTERVAL_MS = 100;
const BAR_WIDTH_CHARS = 30;

export class Progress {
  private label = "";
  private total = 1;
  private lastDrawMs = 0;
  private readonly tty = process.stderr.isTTY === true;

  start(label: string, total: number): void {
    this.label = label;
    this.total = Math.max(1, total);
    this.lastDrawMs = 0;
    if (!this.tty) process.stderr.write(`  ${label} ...\n`);
    else this.update(0);
  }

  update(done: number, note = ""): void {
    if (!this.tty) return;
    const nowMs = performance.now();
    if (nowMs - this.lastDrawMs < REDRAW_INTERVAL_MS && done < this.total) return;
    this.lastDrawMs = nowMs;
    const fraction = Math.min(1, done / this.total);
    const filled = Math.round(fraction * BAR_WIDTH_CHARS);
    const bar = "#".repeat(filled) + ".".repeat(BAR_WIDTH_CHARS - filled);
    const percent = String(Math.round(fraction * 100)).padStart(3);
    process.stderr.write(`\r\x1b[2K  ${this.label.padEnd(28)} [${bar}] ${percent}% ${note}`);
  }

  end(summary: string): void {
    if (this.tty) process.stderr.write(`\r\x1b[2K`);
    process.stderr.write(`  ${this.label.padEnd(28)} ${summary}\n`);
  }

  note(line: string): void {
    if (this.tty) process.stderr.write(`\r\x1b[2K`);
    process.stderr.write(`  ${line}\n`);
  }
}
