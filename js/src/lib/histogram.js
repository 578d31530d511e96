// Histogram of a cell's values over the reservoir samples: bins (pure) and an SVG bar chart.
import { bin } from "d3-array";
import { scaleLinear } from "d3-scale";
import { s } from "./dom.js";
import { colorbarTicks, distinctLabels, formatValue } from "./scales.js";

/**
 * Bins of the finite values: `[{x0, x1, count}]` with equal widths over [min, max]; one bin for a
 * constant sample, none for an empty one.
 */
export function histogramBins(values, nBins = 20) {
  const finite = Array.from(values).filter(Number.isFinite);
  if (finite.length === 0) return [];
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of finite) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (lo === hi) return [{ x0: lo, x1: hi, count: finite.length }];
  const width = (hi - lo) / nBins;
  const thresholds = Array.from({ length: nBins - 1 }, (_, k) => lo + (k + 1) * width);
  return bin().domain([lo, hi]).thresholds(thresholds)(finite).map((b) => ({
    x0: b.x0,
    x1: b.x1,
    count: b.length,
  }));
}

/** An SVG bar chart of `histogramBins` output, with a marker at `markerX` (e.g. the mean). */
export function histogramChart(bins, { width = 290, height = 130, xLabel = "", markerX = null, theme }) {
  const m = { left: 50, right: 10, top: 8, bottom: 30 };
  const svg = s("svg", { width, height, class: "tscope-chart" });
  if (bins.length === 0) {
    svg.append(s("text", { x: width / 2, y: height / 2, "text-anchor": "middle" }, "no samples"));
    return svg;
  }
  const lo = bins[0].x0;
  const hi = bins[bins.length - 1].x1;
  const pad = lo === hi ? Math.abs(lo) * 0.5 || 1 : 0;
  const x = scaleLinear().domain([lo - pad, hi + pad]).range([m.left, width - m.right]);
  const maxCount = Math.max(...bins.map((b) => b.count));
  const y = scaleLinear().domain([0, maxCount]).nice().range([height - m.bottom, m.top]);
  for (const b of bins) {
    const x0 = lo === hi ? x(lo) - 4 : x(b.x0);
    const x1 = lo === hi ? x(lo) + 4 : x(b.x1);
    svg.append(
      s("rect", {
        x: x0 + 0.5,
        y: y(b.count),
        width: Math.max(1, x1 - x0 - 1),
        height: y(0) - y(b.count),
        fill: theme.accent,
        opacity: 0.8,
      }, s("title", {}, `${formatValue(b.x0)} – ${formatValue(b.x1)}: ${b.count}`)),
    );
  }
  if (markerX !== null && Number.isFinite(markerX)) {
    svg.append(s("line", { x1: x(markerX), x2: x(markerX), y1: m.top, y2: height - m.bottom, stroke: theme.fg, "stroke-dasharray": "3 2" }));
  }
  appendAxes(svg, x, y, { width, height, m, xLabel, yLabel: "samples", theme });
  return svg;
}

/** Bottom and left axes with a few ticks (shared with the line charts); `yLog` for a log y scale;
 * `xTickLabel(v)`: text of the x tick at `v` (then only whole-number ticks are drawn, e.g. positions named by
 * their tokens); default: the number. */
export function appendAxes(svg, x, y, { width, height, m, xLabel, yLabel, theme, xTicks = 4, yTicks = 3, yLog = false, xTickLabel = null }) {
  const g = s("g", { class: "tscope-axis", stroke: theme.fg2, fill: "none" });
  const [x0, x1] = x.range();
  const [y0, y1] = y.range();
  g.append(s("path", { d: `M${x0},${y0}H${x1}M${x0},${y0}V${y1}` }));
  svg.append(g);
  const text = (attrs, t) => s("text", { fill: theme.fg, stroke: "none", "font-size": 10, ...attrs }, t);
  const ticks = xTickLabel ? x.ticks(xTicks).filter(Number.isInteger) : x.ticks(xTicks);
  const xLabels = xTickLabel ? ticks.map(xTickLabel) : distinctLabels(ticks); // 2.405, 2.41: never two alike
  ticks.forEach((v, k) => {
    g.append(s("path", { d: `M${x(v)},${y0}v3` }));
    svg.append(text({ x: x(v), y: y0 + 13, "text-anchor": "middle" }, xLabels[k]));
  });
  for (const { value: v, label } of colorbarTicks(y.domain(), yLog, yTicks)) {
    g.append(s("path", { d: `M${x0},${y(v)}h-3` }));
    svg.append(text({ x: x0 - 5, y: y(v) + 3, "text-anchor": "end" }, label));
  }
  if (xLabel) svg.append(text({ x: (x0 + x1) / 2, y: height - 3, "text-anchor": "middle" }, xLabel));
  if (yLabel) {
    svg.append(text({ transform: `translate(9,${(y0 + y1) / 2}) rotate(-90)`, "text-anchor": "middle" }, yLabel));
  }
}
