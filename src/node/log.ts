// A small structured logger: one line per event on stderr, `time level source event key=value...`.
// Readable in a terminal (`ferry dev` prefixes each node's lines) and easy to grep.

export type LogLevel = "debug" | "info" | "warn" | "error" | "fatal";
export type Logger = (level: LogLevel, event: string, fields?: Record<string, unknown>) => void;

const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, fatal: 50 };

export function createLogger(source: string, minimum: LogLevel = (process.env.FERRY_LOG_LEVEL as LogLevel) ?? "info"): Logger {
  const threshold = LEVELS[minimum] ?? LEVELS.info;
  return (level, event, fields = {}) => {
    if (LEVELS[level] < threshold) return;
    const parts = Object.entries(fields).map(([key, value]) => `${key}=${format(value)}`);
    process.stderr.write(`${new Date().toISOString()} ${level} ${source} ${event}${parts.length ? " " + parts.join(" ") : ""}\n`);
  };
}

function format(value: unknown): string {
  if (typeof value === "string") return /[\s"=]/.test(value) ? JSON.stringify(value) : value;
  if (typeof value === "bigint") return value.toString();
  return JSON.stringify(value);
}

export const silentLogger: Logger = () => {};
