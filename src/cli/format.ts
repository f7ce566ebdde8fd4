// Text renderings for humans: message bodies on one line, aligned tables, JSON-safe messages.
import type { DeliveredMessage, ListItem } from "../protocol/api.js";

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

// The text protocol's escaping: a body stays on one line (`\n` for newline, `\\` for backslash).
export function escapeBody(body: Uint8Array): string {
  const text = new TextDecoder().decode(body);
  return text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/\r/g, "\\r");
}

// A message for --json: the body as text when it is valid UTF-8, else as base64.
export function messageJson(message: DeliveredMessage): Record<string, unknown> {
  const { body, ...rest } = message;
  const json: Record<string, unknown> = { ...rest, timestamp: message.timestamp.toString() };
  try {
    json.body = strictUtf8.decode(body);
  } catch {
    json.bodyBase64 = Buffer.from(body).toString("base64");
  }
  return json;
}

export function listItemJson(item: ListItem): Record<string, unknown> {
  return { ...item, timestamp: item.timestamp.toString() };
}

// Left-aligned columns separated by two spaces; the header row first.
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => (row[column] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, column) => cell.padEnd(widths[column]!))
      .join("  ")
      .trimEnd();
  return [line(header), ...rows.map(line)].join("\n");
}
