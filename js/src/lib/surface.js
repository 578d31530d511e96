// The 3D surface of a landscape grid as plain arrays (vertex positions, colours, triangle indices) for
// a WebGL renderer; pure, so it is tested without a GPU.
//
// Scene axes: x = alpha and z = -beta, both scaled to [-1, 1] over the grid; y (up) = the value,
// scaled to [0, height] over the colour domain (log values on a log scale) and clamped to it.
import { colorIndexer } from "./scales.js";

const usable = (v, log) => Number.isFinite(v) && (!log || v > 0);

/** `v` in [-1, 1] over `[first, last]` of the grid coordinates (0 for a single point). */
function unit(v, values) {
  const lo = values[0];
  const hi = values[values.length - 1];
  return hi === lo ? 0 : (2 * (v - lo)) / (hi - lo) - 1;
}

/**
 * Vertex arrays of the surface.
 * @param {ArrayLike<number>} values `[A, B]` row-major, NaN = not computed
 * @param {{alphas: ArrayLike<number>, betas: ArrayLike<number>, domain: [number, number], log?: boolean,
 *   lut: Uint8Array, height?: number}} options
 * @returns {{positions: Float32Array, colors: Float32Array, indices: Uint32Array, quads: number}}
 *   `A * B * 3` positions and RGB colours in [0, 1]; two triangles per grid square whose four corners
 *   have usable values
 */
export function surfaceMesh(values, A, B, { alphas, betas, domain, log = false, lut, height = 0.8 }) {
  if (values.length !== A * B || alphas.length !== A || betas.length !== B) {
    throw new RangeError(`values, alphas and betas do not make an ${A} x ${B} grid`);
  }
  const n = lut.length / 3;
  const toIndex = colorIndexer(domain, { log, n });
  const [lo, hi] = log ? [Math.log(domain[0]), Math.log(domain[1])] : domain;
  const positions = new Float32Array(A * B * 3);
  const colors = new Float32Array(A * B * 3);
  for (let i = 0; i < A; i++) {
    for (let j = 0; j < B; j++) {
      const k = i * B + j;
      const v = values[k];
      let y = 0;
      if (usable(v, log)) {
        const t = ((log ? Math.log(v) : v) - lo) / (hi - lo);
        y = height * Math.min(1, Math.max(0, t));
        const c = 3 * toIndex(v);
        colors.set([lut[c] / 255, lut[c + 1] / 255, lut[c + 2] / 255], 3 * k);
      }
      positions.set([unit(alphas[i], alphas), y, -unit(betas[j], betas)], 3 * k);
    }
  }
  const triangles = [];
  for (let i = 0; i + 1 < A; i++) {
    for (let j = 0; j + 1 < B; j++) {
      const a = i * B + j;
      const b = (i + 1) * B + j;
      if (![a, a + 1, b, b + 1].every((k) => usable(values[k], log))) continue;
      triangles.push(a, b, a + 1, b, b + 1, a + 1);
    }
  }
  return { positions, colors, indices: Uint32Array.from(triangles), quads: triangles.length / 6 };
}

/** Index `k` with `values[k] <= v <= values[k + 1]` in an ascending list (clamped to the ends). */
function segment(values, v) {
  let lo = 0;
  let hi = values.length - 1;
  if (hi <= 0) return 0;
  if (v <= values[0]) return 0;
  if (v >= values[hi]) return hi - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (values[mid] <= v) lo = mid;
    else hi = mid;
  }
  return lo;
}

/**
 * The grid's value at `(alpha, beta)` by bilinear interpolation between the four surrounding grid
 * points (clamped to the grid); NaN if one of them has no value.
 */
export function interpolateGrid(values, A, B, alphas, betas, alpha, beta) {
  const i = segment(alphas, alpha);
  const j = segment(betas, beta);
  const frac = (vals, k, v) => {
    if (vals.length < 2 || vals[k + 1] === vals[k]) return 0;
    return Math.min(1, Math.max(0, (v - vals[k]) / (vals[k + 1] - vals[k])));
  };
  const u = frac(alphas, i, alpha);
  const w = frac(betas, j, beta);
  let sum = 0;
  for (const [di, dj, weight] of [[0, 0, (1 - u) * (1 - w)], [1, 0, u * (1 - w)], [0, 1, (1 - u) * w], [1, 1, u * w]]) {
    if (weight === 0) continue; // a corner with no weight may lack a value
    sum += weight * values[Math.min(i + di, A - 1) * B + Math.min(j + dj, B - 1)];
  }
  return sum;
}

/** Scene coordinates `[x, y, z]` of a point on the surface (see the module note), or null without a value. */
export function surfacePosition(values, A, B, { alphas, betas, domain, log = false, height = 0.8 }, alpha, beta) {
  const v = interpolateGrid(values, A, B, alphas, betas, alpha, beta);
  if (!usable(v, log)) return null;
  const [lo, hi] = log ? [Math.log(domain[0]), Math.log(domain[1])] : domain;
  const t = ((log ? Math.log(v) : v) - lo) / (hi - lo);
  return [unit(alpha, alphas), height * Math.min(1, Math.max(0, t)), -unit(beta, betas)];
}
