// Hand-written SVG line charts (no dependency): the latency percentile curve per system and
// throughput over time. Each chart is a <g> placed under the previous one in one document.

const CHART_WIDTH = 760;
const CHART_HEIGHT = 300;
const MARGIN = { top: 36, right: 180, bottom: 44, left: 70 };
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

export interface Series {
  label: string;
  points: Array<[number, number]>;
  markerX?: number; // a dashed vertical line (the kill), in x units
  dashed?: boolean;
}

export interface ChartSpec {
  title: string;
  xLabel: string;
  yLabel: string;
  x: "linear" | "nines"; // nines: x is a fraction, plotted as -log10(1 - x) (50%, 90%, 99% ...)
  y: "linear" | "log";
  series: Series[];
}

export function escapeXml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

const NINES_MAX = 5;
function toNines(fraction: number): number {
  return fraction >= 1 ? NINES_MAX : Math.min(NINES_MAX, -Math.log10(1 - fraction));
}

interface Axis {
  min: number;
  max: number;
  ticks: Array<[value: number, label: string]>;
}

function linearAxis(values: number[]): Axis {
  const max = Math.max(1, ...values);
  const step = 10 ** Math.floor(Math.log10(max / 4));
  const niceStep = [1, 2, 5, 10].map((factor) => factor * step).find((candidate) => max / candidate <= 6)!;
  const top = Math.ceil(max / niceStep) * niceStep;
  const ticks: Array<[number, string]> = [];
  for (let value = 0; value <= top + niceStep / 2; value += niceStep) ticks.push([value, formatNumber(value)]);
  return { min: 0, max: top, ticks };
}

function logAxis(values: number[]): Axis {
  const positive = values.filter((value) => value > 0);
  const low = Math.floor(Math.log10(Math.min(...positive, 1)));
  const high = Math.ceil(Math.log10(Math.max(...positive, 1)));
  const ticks: Array<[number, string]> = [];
  for (let exponent = low; exponent <= Math.max(high, low + 1); exponent++) ticks.push([exponent, formatNumber(10 ** exponent)]);
  return { min: low, max: Math.max(high, low + 1), ticks };
}

function ninesAxis(values: number[]): Axis {
  const labels = ["90%", "99%", "99.9%", "99.99%", "99.999%"];
  const max = Math.min(NINES_MAX, Math.max(1, Math.ceil(Math.max(...values))));
  const ticks: Array<[number, string]> = [[Math.log10(2), "50%"]];
  for (let nines = 1; nines <= max; nines++) ticks.push([nines, labels[nines - 1]!]);
  return { min: Math.log10(2), max, ticks };
}

function formatNumber(value: number): string {
  if (value >= 1000) return `${value / 1000}k`;
  return String(Math.round(value * 1000) / 1000);
}

export function renderChart(spec: ChartSpec, offsetY: number): string {
  const xs = spec.series.flatMap((series) => series.points.map(([x]) => (spec.x === "nines" ? toNines(x) : x)));
  const ys = spec.series.flatMap((series) => series.points.map(([, y]) => y));
  const xAxis = spec.x === "nines" ? ninesAxis(xs) : linearAxis(xs);
  const yAxis = spec.y === "log" ? logAxis(ys) : linearAxis(ys);
  const plotWidth = CHART_WIDTH - MARGIN.left - MARGIN.right;
  const plotHeight = CHART_HEIGHT - MARGIN.top - MARGIN.bottom;
  const px = (x: number) => MARGIN.left + ((x - xAxis.min) / (xAxis.max - xAxis.min || 1)) * plotWidth;
  const py = (y: number) => MARGIN.top + plotHeight - ((y - yAxis.min) / (yAxis.max - yAxis.min || 1)) * plotHeight;
  const mapX = (x: number) => px(spec.x === "nines" ? toNines(x) : x);
  const mapY = (y: number) => py(spec.y === "log" ? Math.log10(Math.max(y, 10 ** yAxis.min)) : y);
  const parts: string[] = [`<g transform="translate(0,${offsetY})" font-family="sans-serif" font-size="12">`];
  parts.push(`<text x="${MARGIN.left}" y="20" font-size="14" font-weight="bold">${escapeXml(spec.title)}</text>`);
  for (const [value, label] of xAxis.ticks) {
    parts.push(`<line x1="${px(value)}" x2="${px(value)}" y1="${MARGIN.top}" y2="${MARGIN.top + plotHeight}" stroke="#ddd"/>`);
    parts.push(`<text x="${px(value)}" y="${MARGIN.top + plotHeight + 16}" text-anchor="middle">${label}</text>`);
  }
  for (const [value, label] of yAxis.ticks) {
    parts.push(`<line x1="${MARGIN.left}" x2="${MARGIN.left + plotWidth}" y1="${py(value)}" y2="${py(value)}" stroke="#ddd"/>`);
    parts.push(`<text x="${MARGIN.left - 6}" y="${py(value) + 4}" text-anchor="end">${label}</text>`);
  }
  parts.push(`<rect x="${MARGIN.left}" y="${MARGIN.top}" width="${plotWidth}" height="${plotHeight}" fill="none" stroke="#888"/>`);
  parts.push(`<text x="${MARGIN.left + plotWidth / 2}" y="${CHART_HEIGHT - 8}" text-anchor="middle">${escapeXml(spec.xLabel)}</text>`);
  parts.push(
    `<text transform="translate(16,${MARGIN.top + plotHeight / 2}) rotate(-90)" text-anchor="middle">${escapeXml(spec.yLabel)}</text>`,
  );
  // Solid and dashed series of one system share a color: dashed ones follow their solid one.
  let colorIndex = -1;
  spec.series.forEach((series, index) => {
    if (!series.dashed) colorIndex++;
    const color = COLORS[Math.max(0, colorIndex) % COLORS.length];
    const dash = series.dashed ? ` stroke-dasharray="2 3"` : "";
    const path = series.points.map(([x, y], pointIndex) => `${pointIndex === 0 ? "M" : "L"}${mapX(x).toFixed(1)},${mapY(y).toFixed(1)}`);
    if (path.length > 1) parts.push(`<path d="${path.join(" ")}" fill="none" stroke="${color}" stroke-width="2"${dash}/>`);
    for (const [x, y] of series.points.length === 1 ? series.points : []) {
      parts.push(`<circle cx="${mapX(x).toFixed(1)}" cy="${mapY(y).toFixed(1)}" r="3" fill="${color}"/>`);
    }
    if (series.markerX !== undefined) {
      const x = mapX(series.markerX).toFixed(1);
      parts.push(`<line x1="${x}" x2="${x}" y1="${MARGIN.top}" y2="${MARGIN.top + plotHeight}" stroke="${color}" stroke-dasharray="4 3"/>`);
    }
    const legendY = MARGIN.top + 14 + index * 18;
    parts.push(`<line x1="${CHART_WIDTH - MARGIN.right + 12}" x2="${CHART_WIDTH - MARGIN.right + 32}" y1="${legendY - 4}" y2="${legendY - 4}" stroke="${color}" stroke-width="2"${dash}/>`);
    parts.push(`<text x="${CHART_WIDTH - MARGIN.right + 36}" y="${legendY}">${escapeXml(series.label)}</text>`);
  });
  parts.push("</g>");
  return parts.join("\n");
}

export function renderDocument(charts: ChartSpec[], caption: string): string {
  const captionHeight = 24;
  const height = charts.length * CHART_HEIGHT + captionHeight;
  const body = charts.map((chart, index) => renderChart(chart, captionHeight + index * CHART_HEIGHT));
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${CHART_WIDTH}" height="${height}" viewBox="0 0 ${CHART_WIDTH} ${height}" role="img" aria-labelledby="title">`,
    `<title id="title">Ferry benchmark: ${escapeXml(charts.map((chart) => chart.title).join("; "))}</title>`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="16" font-family="sans-serif" font-size="11" fill="#555">${escapeXml(caption)}</text>`,
    ...body,
    "</svg>",
    "",
  ].join("\n");
}
