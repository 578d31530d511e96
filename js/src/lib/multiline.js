// An SVG chart of several series against a shared x axis: legend, optional shaded bands, a marker
// line, a log or linear y axis, and pointer handling (hover reports the nearest x index, a click
// picks it). The caller owns the tooltip and what a pick means.
import { scaleLinear, scaleLog } from "d3-scale";
import { schemeTableau10 } from "d3-scale-chromatic";
import { s } from "./dom.js";
import { appendAxes } from "./histogram.js";
import { linePath } from "./lines.js";
import { bandPath, jointExtent, legendLayout, nearestIndex } from "./spectrum_data.js";

/** Colour of the series with option index `k` (same order as SERIES_PALETTE in tscope_widgets/figures/charts.py). */
export function seriesColor(k) {
  return schemeTableau10[((k % 10) + 10) % 10];
}

/**
 * @param {object} o
 * @param {ArrayLike<number>} o.xs increasing x values
 * @param {{label: string, ys: ArrayLike<number>, color: string, band?: {lo: ArrayLike<number>, hi: ArrayLike<number>}}[]} o.series
 * @param {(index: number|null, event: MouseEvent) => void} [o.onHover] nearest index under the pointer, null on leave
 * @param {(index: number, event: MouseEvent) => void} [o.onPick] click
 * @param {[number, number]|null} [o.yDomain] y range to use instead of the series' joint extent (charts side by side)
 * @param {((v: number) => string)|null} [o.xTickLabel] text of an x tick (e.g. category names at integer x)
 * @returns {SVGSVGElement}
 */
export function multiLineChart({
  xs,
  series,
  width = 420,
  height = 190,
  xLabel = "",
  yLabel = "",
  log = false,
  markerX = null,
  theme,
  onHover = null,
  onPick = null,
  yDomain = null,
  xTickLabel = null,
}) {
  const left = 52;
  const right = 12;
  const legend = legendLayout(series.map((sr) => sr.label), { left, right: width - right });
  const legendRows = legend.length ? legend[legend.length - 1].row + 1 : 0;
  const m = { left, right, top: 10 + 14 * legendRows, bottom: 32 };
  const h = height + 14 * legendRows;
  const svg = s("svg", { width, height: h, class: "tscope-chart" });
  series.forEach((sr, k) => {
    const { x: lx, row } = legend[k];
    const ly = 10 + 14 * row;
    svg.append(
      s("rect", { x: lx, y: ly - 6, width: 10, height: 3, fill: sr.color }),
      s("text", { x: lx + 14, y: ly, fill: theme.fg, "font-size": 10 }, sr.label),
    );
  });
  const extent = yDomain ?? jointExtent(
    series.flatMap((sr) => (sr.band ? [sr.ys, sr.band.lo, sr.band.hi] : [sr.ys])),
    log,
  );
  if (xs.length === 0 || extent === null) {
    svg.append(s("text", { x: width / 2, y: h / 2, "text-anchor": "middle", fill: theme.fg2 }, log ? "no positive values" : "no data"));
    return svg;
  }
  const x0 = xs[0];
  const x1 = xs[xs.length - 1] === x0 ? x0 + 1 : xs[xs.length - 1];
  const x = scaleLinear().domain([x0, x1]).range([m.left, width - m.right]);
  const y = (log ? scaleLog() : scaleLinear()).domain(extent).range([h - m.bottom, m.top]);
  if (!log) y.nice();
  const usable = log ? (v) => Number.isFinite(v) && v > 0 : (v) => Number.isFinite(v);
  const skip = (v) => !usable(v);
  for (const sr of series) {
    if (sr.band) {
      svg.append(s("path", { d: bandPath(xs, sr.band.lo, sr.band.hi, x, y, usable), fill: sr.color, opacity: 0.18, stroke: "none" }));
    }
  }
  for (const sr of series) {
    svg.append(s("path", { d: linePath(xs, sr.ys, x, y, skip), fill: "none", stroke: sr.color, "stroke-width": 1.5 }));
    let lone = 0;
    for (let k = 0; k < xs.length; k++) if (usable(sr.ys[k])) lone += 1;
    if (xs.length <= 64 || lone === 1) {
      const dots = s("g", { fill: sr.color });
      for (let k = 0; k < xs.length; k++) if (usable(sr.ys[k])) dots.append(s("circle", { cx: x(xs[k]), cy: y(sr.ys[k]), r: 2 }));
      svg.append(dots);
    }
  }
  if (markerX !== null && markerX !== undefined && Number.isFinite(markerX)) {
    const mx = x(markerX);
    svg.append(s("line", { class: "tscope-marker", x1: mx, x2: mx, y1: m.top, y2: h - m.bottom, stroke: theme.accent, "stroke-dasharray": "3 2" }));
  }
  appendAxes(svg, x, y, { width, height: h, m, xLabel, yLabel: log ? `${yLabel} (log)` : yLabel, theme, yLog: log, xTickLabel });

  if (onHover || onPick) {
    const rule = s("line", { y1: m.top, y2: h - m.bottom, stroke: theme.fg2, "stroke-width": 1, visibility: "hidden" });
    const overlay = s("rect", {
      x: m.left,
      y: m.top,
      width: width - m.left - m.right,
      height: h - m.top - m.bottom,
      fill: "transparent",
      style: onPick ? "cursor: crosshair" : "",
    });
    svg.append(rule, overlay);
    const indexOf = (event) => {
      const box = svg.getBoundingClientRect();
      const px = ((event.clientX - box.left) * width) / (box.width || width);
      return nearestIndex(xs, x.invert(px));
    };
    // Plain listeners: the chart is replaced on redraw and collected with them.
    overlay.addEventListener("mousemove", (event) => {
      const k = indexOf(event);
      if (k < 0) return;
      rule.setAttribute("x1", x(xs[k]));
      rule.setAttribute("x2", x(xs[k]));
      rule.setAttribute("visibility", "visible");
      if (onHover) onHover(k, event);
    });
    overlay.addEventListener("mouseleave", (event) => {
      rule.setAttribute("visibility", "hidden");
      if (onHover) onHover(null, event);
    });
    if (onPick) {
      overlay.addEventListener("click", (event) => {
        const k = indexOf(event);
        if (k >= 0) onPick(k, event);
      });
    }
  }
  return svg;
}
