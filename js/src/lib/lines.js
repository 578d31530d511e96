// Small SVG line charts (row/column profiles, the relative-offset view): a NaN-aware path builder
// (pure) and the chart.
import { scaleLinear, scaleLog } from "d3-scale";
import { s } from "./dom.js";
import { appendAxes } from "./histogram.js";

/**
 * SVG path data through the points `(sx(xs[k]), sy(ys[k]))`; points whose value is not finite
 * (or not positive on a log scale, `skip`) break the line.
 */
export function linePath(xs, ys, sx, sy, skip = (v) => !Number.isFinite(v)) {
  let d = "";
  let pen = false;
  for (let k = 0; k < xs.length; k++) {
    if (skip(ys[k])) {
      pen = false;
      continue;
    }
    const px = +sx(xs[k]).toFixed(2);
    const py = +sy(ys[k]).toFixed(2);
    d += `${pen ? "L" : "M"}${px},${py}`;
    pen = true;
  }
  return d;
}

/** [min, max] of the usable values (positive ones for log); null if none. */
export function valueExtent(ys, log = false) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of ys) {
    if (!Number.isFinite(v) || (log && v <= 0)) continue;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return lo <= hi ? [lo, hi] : null;
}

// Ids of the overlays' clip paths: unique within a page, also across bundles that each hold this module.
const clipPrefix = `tscope-clip-${Math.random().toString(36).slice(2, 10)}`;
let clipCount = 0;

/**
 * A line chart of `ys` against `xs` with dots, an optional vertical marker at `markerX`
 * and a log y axis when `log` (non-positive values are left out).
 * `xTickLabel(v)`: names whole-number x ticks (positions by their tokens).
 * `overlays`: extra dashed curves `{xs, ys, label, color?}` (e.g. a model to compare with), clipped to
 * the plot area and named in a legend; the y axis is fitted to `ys` alone.
 */
export function lineChart(xs, ys, { width = 290, height = 130, xLabel = "", yLabel = "", markerX = null, log = false, theme, overlays = [], xTickLabel = null }) {
  const m = { left: 50, right: 10, top: 8, bottom: 30 };
  const svg = s("svg", { width, height, class: "tscope-chart" });
  const extent = valueExtent(ys, log);
  if (xs.length === 0 || extent === null) {
    svg.append(s("text", { x: width / 2, y: height / 2, "text-anchor": "middle", fill: theme.fg }, "no data"));
    return svg;
  }
  let [lo, hi] = extent;
  if (lo === hi) [lo, hi] = log ? [lo / 10, hi * 10] : [Math.min(0, lo), Math.max(0, hi) || 1];
  const x = scaleLinear().domain([xs[0], xs[xs.length - 1] === xs[0] ? xs[0] + 1 : xs[xs.length - 1]]).range([m.left, width - m.right]);
  const y = (log ? scaleLog() : scaleLinear()).domain([lo, hi]).range([height - m.bottom, m.top]);
  if (!log) y.nice();
  const skip = log ? (v) => !(Number.isFinite(v) && v > 0) : (v) => !Number.isFinite(v);
  if (markerX !== null && Number.isFinite(markerX)) {
    svg.append(s("line", { x1: x(markerX), x2: x(markerX), y1: m.top, y2: height - m.bottom, stroke: theme.accent, "stroke-dasharray": "3 2" }));
  }
  if (overlays.length) {
    const id = `${clipPrefix}-${++clipCount}`;
    svg.append(s("clipPath", { id }, s("rect", { x: m.left, y: m.top, width: width - m.left - m.right, height: height - m.top - m.bottom })));
    overlays.forEach((o, k) => {
      const color = o.color ?? theme.accent;
      svg.append(s("path", { d: linePath(o.xs, o.ys, x, y, skip), fill: "none", stroke: color, "stroke-width": 1.5, "stroke-dasharray": "5 3", "clip-path": `url(#${id})`, class: "tscope-overlay" }));
      const ly = m.top + 8 + 12 * k;
      svg.append(
        s("rect", { x: width - m.right - 124, y: ly - 6, width: 124, height: 12, fill: theme.bg, opacity: 0.85 }),
        s("line", { x1: width - m.right - 120, x2: width - m.right - 104, y1: ly, y2: ly, stroke: color, "stroke-width": 1.5, "stroke-dasharray": "5 3" }),
        s("text", { x: width - m.right - 100, y: ly + 3, fill: theme.fg, "font-size": 10 }, o.label ?? ""),
      );
    });
  }
  svg.append(s("path", { d: linePath(xs, ys, x, y, skip), fill: "none", stroke: theme.fg, "stroke-width": 1.5 }));
  const dots = s("g", { fill: theme.fg });
  if (xs.length <= 128) {
    for (let k = 0; k < xs.length; k++) {
      if (!skip(ys[k])) dots.append(s("circle", { cx: x(xs[k]), cy: y(ys[k]), r: 2 }));
    }
  }
  svg.append(dots);
  appendAxes(svg, x, y, { width, height, m, xLabel, yLabel, theme, yLog: log, xTickLabel });
  return svg;
}
