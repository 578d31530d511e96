// A training trajectory projected onto the landscape plane: points (alpha_t, beta_t) to pixels, which
// steps get a label, and the point under the pointer. Pure functions.

/**
 * Pixel positions of the trajectory points.
 * @param {ArrayLike<number>} points `[T, 2]` row-major: (alpha_t, beta_t)
 * @param {ArrayLike<number>|null} steps `[T]` step numbers (default 0 .. T-1)
 * @param {{x: (a: number) => number, y: (b: number) => number}} scales from `gridScales`
 * @returns {{x: number, y: number, alpha: number, beta: number, step: number, index: number}[]}
 *   points with non-finite coordinates left out
 */
export function trajectoryPixels(points, steps, scales) {
  if (points.length % 2 !== 0) throw new RangeError("trajectory points must be [T, 2]");
  const T = points.length / 2;
  if (steps && steps.length !== T) throw new RangeError(`${steps.length} steps for ${T} points`);
  const out = [];
  for (let t = 0; t < T; t++) {
    const alpha = points[2 * t];
    const beta = points[2 * t + 1];
    if (!Number.isFinite(alpha) || !Number.isFinite(beta)) continue;
    out.push({ x: scales.x(alpha), y: scales.y(beta), alpha, beta, step: steps ? steps[t] : t, index: t });
  }
  return out;
}

/**
 * Indices (into `0 .. n-1`) of the points that get a step label: the first, the last and about
 * `maxLabels - 2` evenly spaced ones between them.
 * @returns {number[]} ascending, without repeats
 */
export function labelledPoints(n, maxLabels = 6) {
  if (n <= 0) return [];
  if (n <= maxLabels) return Array.from({ length: n }, (_, k) => k);
  const out = new Set([0, n - 1]);
  const inner = Math.max(0, maxLabels - 2);
  for (let k = 1; k <= inner; k++) out.add(Math.round((k * (n - 1)) / (inner + 1)));
  return [...out].sort((a, b) => a - b);
}

/**
 * The candidates whose labels do not pile up: each kept label is at least `minGap` pixels from every
 * label kept before it, candidates taken in priority order (the last, the first, then the rest), so a
 * trajectory's ends keep theirs. `thin_labels` of tscope_widgets/figures/landscape.py.
 * @param {{x: number, y: number}[]} pixels label anchors
 * @param {number[]} candidates indices into `pixels`
 * @returns {number[]} kept indices, ascending
 */
export function thinLabels(pixels, candidates, minGap = 18) {
  const unique = [...new Set(candidates)];
  const order = unique.length > 1 ? [unique[unique.length - 1], unique[0], ...unique.slice(1, -1)] : unique;
  const kept = [];
  for (const k of order) {
    const p = pixels[k];
    if (kept.every((q) => Math.hypot(pixels[q].x - p.x, pixels[q].y - p.y) >= minGap)) kept.push(k);
  }
  return kept.sort((a, b) => a - b);
}

/** The point within `radius` pixels of `(px, py)` nearest to it, or null. */
export function pointNear(pixels, px, py, radius = 6) {
  let best = null;
  let gap = radius;
  for (const p of pixels) {
    const d = Math.hypot(p.x - px, p.y - py);
    if (d <= gap) {
      gap = d;
      best = p;
    }
  }
  return best;
}
