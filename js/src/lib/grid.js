// A loss landscape grid on screen: `values[i * B + j]` is the value at (alphas[i], betas[j]) (row-major
// [A, B], as Python sends it). The plot shows alpha across (left to right) and beta up (bottom to top),
// one rectangular cell per grid point. Pure functions: layout, image transpose, coordinate scales,
// hit-testing, slices through a point, nearest grid index.
import { scaleLinear } from "d3-scale";

/**
 * Where the plot area goes inside a canvas of `margin.left + width + margin.right` by
 * `margin.top + height + margin.bottom` CSS pixels, with `A` columns (alpha) and `B` rows (beta).
 * @returns {{x: number, y: number, width: number, height: number, A: number, B: number, cw: number,
 *   ch: number, totalWidth: number, totalHeight: number}}
 */
export function gridLayout({ A, B, width = 400, height = 400, margin = { left: 0, top: 0, right: 0, bottom: 0 } }) {
  if (!(A >= 1 && B >= 1)) throw new RangeError(`need A, B >= 1, got ${A}, ${B}`);
  return {
    x: margin.left,
    y: margin.top,
    width,
    height,
    A,
    B,
    cw: width / A,
    ch: height / B,
    totalWidth: margin.left + width + margin.right,
    totalHeight: margin.top + height + margin.bottom,
  };
}

/**
 * The grid as an image, row-major from the top row: pixel (r, c) holds `values[c * B + (B - 1 - r)]`
 * (alpha index `c` across, beta index `B - 1 - r` so that beta grows upwards).
 * @returns {Float64Array} `B * A` values
 */
export function gridImage(values, A, B) {
  if (values.length !== A * B) throw new RangeError(`expected ${A * B} values, got ${values.length}`);
  const out = new Float64Array(A * B);
  for (let i = 0; i < A; i++) {
    for (let j = 0; j < B; j++) out[(B - 1 - j) * A + i] = values[i * B + j];
  }
  return out;
}

/**
 * Scales from grid coordinates to pixels: `x(alpha)` and `y(beta)` put grid point `k` at the centre of
 * its cell, piecewise linear between grid points (grids need not be uniform) and extended linearly
 * beyond them (trajectory points outside the grid).
 */
export function gridScales(layout, alphas, betas) {
  const { x, y, cw, ch, A, B } = layout;
  const axis = (values, first, step) => {
    const n = values.length;
    const domain = Array.from(values);
    const range = domain.map((_, k) => first + k * step);
    if (n === 1) return scaleLinear().domain([domain[0] - 1, domain[0] + 1]).range([first - step / 2, first + step / 2]);
    return scaleLinear().domain(domain).range(range);
  };
  if (alphas.length !== A || betas.length !== B) throw new RangeError("alphas/betas do not match the layout");
  return {
    x: axis(alphas, x + cw / 2, cw),
    y: axis(betas, y + (B - 0.5) * ch, -ch),
  };
}

/** The grid point `{i, j}` (alpha index, beta index) whose cell holds `(px, py)`, or null outside. */
export function gridPointAt(layout, px, py) {
  const u = (px - layout.x) / layout.width;
  const v = (py - layout.y) / layout.height;
  if (!(u >= 0 && u < 1 && v >= 0 && v < 1)) return null;
  return {
    i: Math.min(layout.A - 1, Math.floor(u * layout.A)),
    j: layout.B - 1 - Math.min(layout.B - 1, Math.floor(v * layout.B)),
  };
}

/** Rectangle of grid point (i, j) in pixels. */
export function gridCellRect(layout, i, j) {
  return { x: layout.x + i * layout.cw, y: layout.y + (layout.B - 1 - j) * layout.ch, w: layout.cw, h: layout.ch };
}

/** Index of the value of `values` nearest to `v` (first one on ties); -1 for an empty list or NaN. */
export function nearestIndex(values, v) {
  let best = -1;
  let gap = Infinity;
  for (let k = 0; k < values.length; k++) {
    const d = Math.abs(values[k] - v);
    if (d < gap) {
      gap = d;
      best = k;
    }
  }
  return best;
}

/**
 * The two 1D slices of the grid through grid point (i, j): along alpha at `betas[j]` (`[A]`, the
 * grid's column j) and along beta at `alphas[i]` (`[B]`, row i).
 * @returns {{alongAlpha: Float64Array, alongBeta: Float64Array}}
 */
export function slicesThrough(values, A, B, i, j) {
  if (!(i >= 0 && i < A && j >= 0 && j < B)) throw new RangeError(`(${i}, ${j}) is outside the ${A} x ${B} grid`);
  const alongAlpha = new Float64Array(A);
  for (let k = 0; k < A; k++) alongAlpha[k] = values[k * B + j];
  const alongBeta = new Float64Array(B);
  for (let k = 0; k < B; k++) alongBeta[k] = values[i * B + k];
  return { alongAlpha, alongBeta };
}

/**
 * The grid point a view shows the slices through: the selected `[alpha, beta]`, else the point
 * nearest to the origin.
 * @returns {{i: number, j: number}}
 */
export function focusPoint(alphas, betas, selected) {
  const [a, b] = selected && selected.length === 2 ? selected : [0, 0];
  return { i: nearestIndex(alphas, a), j: nearestIndex(betas, b) };
}

/**
 * Whether `values[k]` is the origin of its axis: 0 up to rounding (float32 on the wire), relative to
 * the largest coordinate.
 */
export function isOrigin(values, k) {
  let scale = 0;
  for (const v of values) scale = Math.max(scale, Math.abs(v));
  return k >= 0 && k < values.length && Math.abs(values[k]) <= 1e-6 * (scale || 1);
}

/** Number of grid points with a finite value. */
export function countFinite(values) {
  let n = 0;
  for (let k = 0; k < values.length; k++) if (Number.isFinite(values[k])) n += 1;
  return n;
}
