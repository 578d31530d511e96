// Geometry of the sweep view (tscope_widgets/figures/sweep.py describes it, svg_sweep.py draws the picture):
// pure functions from the `chart` trait (plain lists, null for NaN) to pixel positions, and the CSV of the
// view. Log x and log y; error bars without a positive lower end reach the bottom of the plot.
import { csvText } from "./download.js";

export const MARGIN = Object.freeze({ left: 60, right: 14, top: 22, bottom: 38 });

/** A log10 scale from the positive `domain` [lo, hi] to the pixel `range` [a, b]. */
export function logScale([lo, hi], [a, b]) {
  if (!(lo > 0 && hi > lo)) throw new Error(`a log scale needs 0 < lo < hi, got [${lo}, ${hi}]`);
  const l0 = Math.log10(lo);
  const span = Math.log10(hi) - l0;
  return (v) => a + ((Math.log10(v) - l0) / span) * (b - a);
}

/** Powers of ten inside [lo, hi]; with fewer than two, the ends too ([lo, 0.1, hi]); as svg_sweep.decade_ticks. */
export function decadeTicks(lo, hi) {
  const a = Math.ceil(Math.log10(lo) - 1e-9);
  const b = Math.floor(Math.log10(hi) + 1e-9);
  const ticks = [];
  for (let e = a; e <= b; e++) ticks.push(10 ** e);
  return ticks.length >= 2 ? ticks : [lo, ...ticks, hi];
}

const usable = (v) => typeof v === "number" && Number.isFinite(v) && v > 0;

/**
 * Pixel geometry of a chart wire in a `width` x `height` plot (margins MARGIN), or null without ranges.
 * Returns {plot: {x, y, w, h}, sx, sy, xTicks, yTicks, marker, guides, groups: [{key, color, label, runs: [[px, py]],
 * means: [[px, py]], bars: [[px, pyLow, pyHigh]], fit: "M..L.." | null}]}.
 */
export function sweepGeometry(chart, width, height) {
  if (!chart || !chart.x_range || !chart.y_range) return null;
  const plot = { x: MARGIN.left, y: MARGIN.top, w: width - MARGIN.left - MARGIN.right, h: height - MARGIN.top - MARGIN.bottom };
  const bottom = plot.y + plot.h;
  const sx = logScale(chart.x_range, [plot.x, plot.x + plot.w]);
  const sy = logScale(chart.y_range, [bottom, plot.y]);
  const r = (v) => +v.toFixed(2);
  const groups = chart.groups.map((g) => {
    const runs = [];
    g.points_x.forEach((x, k) => usable(x) && usable(g.points_y[k]) && runs.push([r(sx(x)), r(sy(g.points_y[k]))]));
    const means = [];
    const bars = [];
    g.x.forEach((x, k) => {
      if (!usable(x) || !usable(g.mean[k])) return;
      means.push([r(sx(x)), r(sy(g.mean[k]))]);
      const hi = g.err_hi[k];
      if (usable(hi)) {
        const lo = g.err_lo[k];
        bars.push([r(sx(x)), usable(lo) ? r(sy(lo)) : bottom, r(sy(Math.min(hi, chart.y_range[1])))]);
      }
    });
    let fit = null;
    if (g.fit && g.fit.x) {
      fit = g.fit.x.map((x, k) => `${k ? "L" : "M"}${r(sx(x))},${r(sy(g.fit.y[k]))}`).join("");
    }
    return { key: g.key, color: g.color, label: g.label, runs, means, bars, fit };
  });
  const guides = chart.guides.map((g) => ({
    label: g.label,
    color: g.color,
    x1: r(sx(g.x[0])), y1: r(sy(g.y[0])), x2: r(sx(g.x[1])), y2: r(sy(g.y[1])),
  }));
  const inX = (v) => v >= chart.x_range[0] && v <= chart.x_range[1];
  return {
    plot,
    sx,
    sy,
    xTicks: decadeTicks(...chart.x_range).map((v) => [v, r(sx(v))]),
    yTicks: decadeTicks(...chart.y_range).map((v) => [v, r(sy(v))]),
    marker: chart.marker_x !== null && chart.marker_x !== undefined && inX(chart.marker_x) ? r(sx(chart.marker_x)) : null,
    guides,
    groups,
  };
}

/** The numbers of the view as CSV: one line per (group, x): mean, standard error, runs, and the group's fit. */
export function sweepCsv(chart) {
  if (!chart || !chart.groups.length) return null;
  const rows = [];
  for (const g of chart.groups) {
    const f = g.fit ?? {};
    g.x.forEach((x, k) => rows.push([g.key, x, g.mean[k], g.stderr[k], g.count[k], f.exponent ?? NaN, f.ci_low ?? NaN, f.ci_high ?? NaN, f.prefactor ?? NaN]));
  }
  return csvText(["group", chart.x_label, `mean ${chart.y_label}`, "stderr", "runs", "exponent", "ci_low", "ci_high", "prefactor"], rows);
}
