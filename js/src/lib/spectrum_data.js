// Pure helpers of the spectrum widget: series grouped into chart panels, nearest-step lookup,
// parameter-group spans ("block0.attn.q" belongs to "block0"), and layouts for a heatmap whose
// cells are not square (blocks x steps). No DOM here, so all of it runs under `node --test`.

/**
 * The panels to draw, in the order of `panels`, each with its selected series in option order.
 * @param {{key: string, label: string, panel: string}[]} options
 * @param {string[]} selected keys
 * @param {{key: string, title: string, y_label: string}[]} panels
 * @returns {{key: string, title: string, yLabel: string, series: {key: string, label: string, index: number}[]}[]}
 *   `index`: the option's position (a stable colour index)
 */
export function panelsOf(options, selected, panels) {
  const chosen = new Set(selected ?? []);
  const out = [];
  for (const p of panels ?? []) {
    const series = [];
    (options ?? []).forEach((o, index) => {
      if (o.panel === p.key && chosen.has(o.key)) series.push({ key: o.key, label: o.label, index });
    });
    if (series.length) out.push({ key: p.key, title: p.title, yLabel: p.y_label, series });
  }
  return out;
}

// Series that exist only for some optimisers (figures/spectrum.py OPTIMISER_SERIES, THRESHOLD_SERIES).
export const OPTIMISER_SERIES = ["threshold", "precond_lambda_max", "adam_threshold"];
export const THRESHOLD_SERIES = ["threshold", "adam_threshold"];
export const NO_THRESHOLD_LABEL = "no known stability threshold for this optimiser (or η unknown)";

/**
 * The lines of one panel as the pictures draw them (figures.spectrum.series_charts): the optimiser's
 * series (SGD's 2/η, Adam's λ_max(P⁻¹H) and its threshold) only where they have a finite value; when a
 * selected threshold has none, one entry in its colour says so instead of an empty legend entry.
 * @param {{key: string, label: string, ys: ArrayLike<number>}[]} lines in option order
 * @returns the lines to draw (same objects; the announcement a copy with `NO_THRESHOLD_LABEL`)
 */
export function optimiserLines(lines) {
  const out = [];
  let missing = null;
  for (const line of lines) {
    if (OPTIMISER_SERIES.includes(line.key) && !Array.from(line.ys ?? []).some(Number.isFinite)) {
      if (THRESHOLD_SERIES.includes(line.key) && missing === null) missing = { ...line, label: NO_THRESHOLD_LABEL };
      continue;
    }
    out.push(line);
  }
  if (missing !== null && !out.some((line) => THRESHOLD_SERIES.includes(line.key))) out.push(missing);
  return out;
}

/**
 * Index of the value of increasing `xs` nearest to `x` (ties: the lower index); -1 for empty `xs`.
 */
export function nearestIndex(xs, x) {
  const n = xs.length;
  if (n === 0 || !Number.isFinite(x)) return -1;
  let lo = 0;
  let hi = n - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (xs[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  // xs[lo] is the first value >= x (or the last one)
  if (lo > 0 && Math.abs(xs[lo - 1] - x) <= Math.abs(xs[lo] - x)) return lo - 1;
  return lo;
}

/** The group of a parameter-group label: the part before the first dot (`"block0.attn.q"` -> `"block0"`). */
export function groupOf(label) {
  const k = String(label).indexOf(".");
  return k > 0 ? label.slice(0, k) : String(label);
}

/** The label within its group (`"block0.attn.q"` -> `"attn.q"`); a label without a dot stays whole. */
export function memberOf(label) {
  const k = String(label).indexOf(".");
  return k > 0 && k < label.length - 1 ? label.slice(k + 1) : String(label);
}

/**
 * Runs of consecutive labels in the same group.
 * @returns {{name: string, start: number, end: number}[]} `end` exclusive
 */
export function groupSpans(labels) {
  const spans = [];
  (labels ?? []).forEach((label, i) => {
    const name = groupOf(label);
    const last = spans[spans.length - 1];
    if (last && last.name === name) last.end = i + 1;
    else spans.push({ name, start: i, end: i + 1 });
  });
  return spans;
}

/** True when grouping helps: some group holds more than one label. */
export function hasGroups(spans) {
  return spans.some((s) => s.end - s.start > 1);
}

/**
 * Margins of the block-norm map: room for the member labels and, when there are groups (and
 * `grouping`), a bracket and the group name beyond them (about `charPx` per character).
 * @returns {{left: number, top: number, right: number, bottom: number, labelPx: number, groupPx: number}}
 */
export function blockMapMargins(labels, { charPx = 6, maxChars = 18, right = 96, top = 8, grouping = true } = {}) {
  const spans = groupSpans(labels);
  const grouped = grouping && hasGroups(spans);
  const text = (s) => Math.min(maxChars, Array.from(s).length) * charPx + 8;
  const labelPx = Math.max(24, ...(labels ?? []).map((l) => text(grouped ? memberOf(l) : l)));
  const groupPx = grouped ? Math.max(...spans.map((s) => text(s.name))) + 8 : 0;
  return { left: 20 + groupPx + labelPx, top, right, bottom: 20 + 16 + (grouped ? 18 : 0) + labelPx, labelPx, groupPx };
}

/**
 * Layout of a `rows x cols` heatmap with cells `width / cols` wide and `rowHeight` high (not square),
 * with the fields of `heatmapLayout` (lib/heatmap.js), so that `cellAt`, `cellRect`, `paintGrid` and
 * `drawAxes` work on it. Rows get between `minRow` and `maxRow` pixels so that the whole map is
 * about `height` high.
 */
export function stripLayout({ rows, cols, width = 480, height = 200, minRow = 4, maxRow = 24, margin }) {
  if (!(rows >= 1 && cols >= 1)) throw new RangeError(`need rows, cols >= 1, got ${rows}, ${cols}`);
  const m = margin ?? { left: 0, top: 0, right: 0, bottom: 0 };
  const rowHeight = Math.max(minRow, Math.min(maxRow, Math.floor(height / rows)));
  const cellWidth = Math.min(maxRow * 2, width / cols);
  const w = cellWidth * cols;
  const h = rowHeight * rows;
  return {
    x: m.left,
    y: m.top,
    width: w,
    height: h,
    rows,
    cols,
    cell: Math.min(cellWidth, rowHeight),
    totalWidth: m.left + w + m.right,
    totalHeight: m.top + h + m.bottom,
  };
}

/**
 * Legend entries packed left to right in rows between `left` and `right` pixels: a swatch of
 * `swatchPx` and about `charPx` per character of the label.
 * @returns {{x: number, row: number}[]} one position per label; `row` counts from 0
 */
export function legendLayout(labels, { left, right, charPx = 6, swatchPx = 14, gapPx = 12 }) {
  let x = left;
  let row = 0;
  return (labels ?? []).map((label) => {
    const w = swatchPx + Array.from(String(label)).length * charPx;
    if (x > left && x + w > right) {
      x = left;
      row += 1;
    }
    const at = { x, row };
    x += w + gapPx;
    return at;
  });
}

/** Row `i` of a row-major `rows x cols` matrix. */
export function matrixRow(values, cols, i) {
  return Array.from({ length: cols }, (_, j) => values[i * cols + j]);
}

/**
 * `[lo, hi]` over several series and bands (positive values only on a log scale); null if none.
 * @param {ArrayLike<number>[]} arrays
 */
export function jointExtent(arrays, log = false) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const a of arrays) {
    if (!a) continue;
    for (let k = 0; k < a.length; k++) {
      const v = a[k];
      if (!Number.isFinite(v) || (log && v <= 0)) continue;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
  }
  if (!(lo <= hi)) return null;
  if (lo === hi) return log ? [lo / 10, hi * 10] : lo === 0 ? [0, 1] : [Math.min(0, lo), Math.max(0, hi)];
  return [lo, hi];
}

/**
 * SVG path of a shaded band between `lo` and `hi` (e.g. ± one standard error): one closed polygon
 * per run of points where both ends are usable.
 */
export function bandPath(xs, lo, hi, sx, sy, usable = Number.isFinite) {
  let d = "";
  let run = [];
  const flush = () => {
    if (run.length >= 2) {
      const top = run.map((k) => `${+sx(xs[k]).toFixed(2)},${+sy(hi[k]).toFixed(2)}`);
      const bottom = run.map((k) => `${+sx(xs[k]).toFixed(2)},${+sy(lo[k]).toFixed(2)}`).reverse();
      d += `M${top.join("L")}L${bottom.join("L")}Z`;
    }
    run = [];
  };
  for (let k = 0; k < xs.length; k++) {
    if (usable(lo[k]) && usable(hi[k])) run.push(k);
    else flush();
  }
  flush();
  return d;
}

/**
 * Rows of the eigenvalue table of a block run, largest first.
 * @param {{eigenvalues?: number[], residuals?: number[]}|null} eigen (already in descending order)
 * @returns {{k: number, value: number, residual: number, relative: number}[]}
 *   `relative`: residual / |value| (NaN for a zero eigenvalue)
 */
export function eigenRows(eigen) {
  const values = eigen?.eigenvalues ?? [];
  const residuals = eigen?.residuals ?? [];
  return values.map((v, k) => {
    const value = v === null ? NaN : v;
    const residual = residuals[k] === null || residuals[k] === undefined ? NaN : residuals[k];
    return { k: k + 1, value, residual, relative: value !== 0 ? residual / Math.abs(value) : NaN };
  });
}

/**
 * What to say about the weights a block's eigenvalues were computed on: always the model's current weights
 * (the tracker keeps no past weights), which a click on an earlier step of the block x step map does not
 * change. Null before a result.
 * @param {number | null} computedAt  the step of the weights Lanczos ran on
 * @param {number | null} picked  the step picked in the view (null: the latest)
 */
export function weightsNote(computedAt, picked) {
  if (computedAt === null || computedAt === undefined) return null;
  if (picked !== null && picked !== undefined && picked !== computedAt) {
    return `Computed on the current weights (step ${computedAt}), not on those of step ${picked} that you picked: past weights are not kept. The map shows λ_max of step ${picked} as recorded then.`;
  }
  return `Computed on the current weights (step ${computedAt}).`;
}

export const DENSITY_LOG_RANGE = 1e-6; // as figures.spectrum.DENSITY_LOG_RANGE

/** `max(φ, ratio · max φ)` of a density for a log axis (NaN stays NaN): far from the Ritz values an SLQ
 * density underflows to 1e-47 and below, which stretched the axis over dozens of decades. */
export function floorDensity(values, ratio = DENSITY_LOG_RANGE) {
  let peak = 0;
  for (const v of values) if (Number.isFinite(v) && v > peak) peak = v;
  const floor = Math.max(peak, 1e-300) * ratio;
  return Float64Array.from(values, (v) => (Number.isNaN(v) ? NaN : Math.max(v, floor)));
}
