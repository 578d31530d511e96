// The 3D surface of a landscape grid as plain arrays (vertex positions, colours, triangle indices) for
// a WebGL renderer; pure, so it is tested without a GPU.
//
// Scene axes: x = alpha and z = -beta, both scaled to [-1, 1] over the grid; y (up) = the value,
// scaled to [0, height] over the colour domain (log values on a log scale) and clamped to it.
import { scaleLinear } from "d3-scale";
import { colorbarTicks, colorIndexer, distinctLabels } from "./scales.js";

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

// ----- axes and camera fit (scene units as above; pure, tested without WebGL)

const TICK = 0.06; // tick mark length
const LABEL_GAP = 0.2; // tick labels sit this far beyond the frame
const TITLE_GAP = 0.42; // axis titles this far

/**
 * Ticks, titles and line segments of the three axes: α along the front edge (z = 1), β along the right
 * edge (x = 1), the value up the front-left edge (x = -1, z = 1).
 * @param {{alphas: ArrayLike<number>, betas: ArrayLike<number>, domain: [number, number], log?: boolean,
 *   height?: number, count?: number, titles?: {alpha?: string, beta?: string, value?: string}}} options
 * @returns {{ticks: {axis: "alpha"|"beta"|"value", value: number, label: string, at: number[]}[],
 *   titles: {axis: string, text: string, at: number[]}[], segments: Float32Array}}
 *   `at` = `[x, y, z]` anchor of a label; `segments`: pairs of points (axis lines and tick marks)
 */
export function surfaceAxes({ alphas, betas, domain, log = false, height = 0.8, count = 5, titles = {} }) {
  const ticks = [];
  const segments = [];
  const line = (a, b) => segments.push(...a, ...b);
  const along = (values) => {
    const scale = scaleLinear().domain([values[0], values[values.length - 1]]).range([0, 1]);
    const ticks = scale.ticks(count);
    const labels = distinctLabels(ticks);
    return ticks.map((value, k) => ({ value, t: scale(value), label: labels[k] }));
  };
  if (alphas.length >= 2 && alphas[alphas.length - 1] > alphas[0]) {
    line([-1, 0, 1], [1, 0, 1]);
    for (const { value, t, label } of along(alphas)) {
      const x = 2 * t - 1;
      line([x, 0, 1], [x, 0, 1 + TICK]);
      ticks.push({ axis: "alpha", value, label, at: [x, 0, 1 + LABEL_GAP] });
    }
  }
  if (betas.length >= 2 && betas[betas.length - 1] > betas[0]) {
    line([1, 0, 1], [1, 0, -1]);
    for (const { value, t, label } of along(betas)) {
      const z = -(2 * t - 1);
      line([1, 0, z], [1 + TICK, 0, z]);
      ticks.push({ axis: "beta", value, label, at: [1 + LABEL_GAP, 0, z] });
    }
  }
  const [lo, hi] = domain;
  if (Number.isFinite(lo) && Number.isFinite(hi) && hi > lo && (!log || lo > 0)) {
    line([-1, 0, 1], [-1, height, 1]);
    for (const { value, t, label } of colorbarTicks(domain, log, count)) {
      const y = height * t;
      line([-1, y, 1], [-1 - TICK, y, 1 + TICK]);
      ticks.push({ axis: "value", value, label, at: [-1 - LABEL_GAP, y, 1 + LABEL_GAP] });
    }
  }
  const named = [
    { axis: "alpha", text: titles.alpha ?? "α", at: [0, 0, 1 + TITLE_GAP] },
    { axis: "beta", text: titles.beta ?? "β", at: [1 + TITLE_GAP, 0, 0] },
    { axis: "value", text: titles.value ?? "loss", at: [-1, height + 0.16, 1] },
  ];
  return { ticks, titles: named, segments: Float32Array.from(segments) };
}

/**
 * The points the view must show (for `fitView`): the corners of the box that holds the surface and the
 * ends of the lines its labels sit on (`surfaceAxes`), whatever the tick values.
 */
export function sceneBox(height = 0.8) {
  const corners = [];
  for (const x of [-1, 1]) for (const y of [0, height]) for (const z of [-1, 1]) corners.push([x, y, z]);
  const [g, t] = [1 + LABEL_GAP, 1 + TITLE_GAP];
  const labels = [
    [-1, 0, g], [1, 0, g], [0, 0, t], // alpha ticks and title
    [g, 0, -1], [g, 0, 1], [t, 0, 0], // beta
    [-g, 0, g], [-g, height, g], [-1, height + 0.16, 1], // value
  ];
  return [...corners, ...labels];
}

const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
const normalize = (a) => {
  const n = Math.hypot(...a);
  return a.map((v) => v / n);
};

/** Camera frame looking from `target + distance * direction` at `target`, with y up: `{right, up, back}`. */
function cameraFrame(direction) {
  const back = normalize(direction); // from the target towards the camera
  const right = normalize(cross([0, 1, 0], back));
  return { right, up: cross(back, right), back };
}

/**
 * Normalised device coordinates `[x, y]` (in [-1, 1] when on screen) of `point` seen by a perspective
 * camera at `target + distance * direction` looking at `target`, y up, vertical field of view `fov`
 * degrees, width / height = `aspect`.
 */
export function projectPoint(point, { target, direction, distance, fov, aspect }) {
  const { right, up, back } = cameraFrame(direction);
  const p = [point[0] - target[0], point[1] - target[1], point[2] - target[2]];
  const depth = distance - dot(p, back);
  const tanY = Math.tan((fov * Math.PI) / 360);
  return [dot(p, right) / (depth * tanY * aspect), dot(p, up) / (depth * tanY)];
}

/**
 * The smallest camera distance at which every point lies inside the view with a `margin` (a fraction of
 * the half-width) to spare: for a point `p` (relative to the target) at horizontal and vertical offsets
 * `x = p·right`, `y = p·up` and depth `distance - p·back`, it needs
 * `distance >= p·back + max(|x| / (tan(fov/2) aspect), |y| / tan(fov/2)) / (1 - margin)`.
 * @param {number[][]} points `[x, y, z]` each
 * @param {{target: number[], direction: number[], fov: number, aspect: number, margin?: number}} view
 */
export function fitDistance(points, { target, direction, fov, aspect, margin = 0.04 }) {
  if (!(aspect > 0) || !(fov > 0 && fov < 180)) throw new RangeError(`bad camera: aspect ${aspect}, fov ${fov}`);
  const { right, up, back } = cameraFrame(direction);
  const tanY = Math.tan((fov * Math.PI) / 360);
  let distance = 0;
  for (const point of points) {
    const p = [point[0] - target[0], point[1] - target[1], point[2] - target[2]];
    const need = Math.max(Math.abs(dot(p, right)) / (tanY * aspect), Math.abs(dot(p, up)) / tanY) / (1 - margin);
    distance = Math.max(distance, dot(p, back) + need);
  }
  return distance;
}

/**
 * A camera target and distance that fit `points` into the view with `margin` to spare and centre them:
 * the target moves across the view (along the camera's right and up axes) until the projected box is
 * centred, and the distance is fitted again (`fitDistance`) after each move.
 * @returns {{target: number[], distance: number}}
 */
export function fitView(points, { target, direction, fov, aspect, margin = 0.04, rounds = 6 }) {
  const { right, up } = cameraFrame(direction);
  const tanY = Math.tan((fov * Math.PI) / 360);
  let t = [...target];
  let distance = fitDistance(points, { target: t, direction, fov, aspect, margin });
  for (let round = 0; round < rounds; round++) {
    const ndc = points.map((p) => projectPoint(p, { target: t, direction, distance, fov, aspect }));
    const xs = ndc.map(([x]) => x);
    const ys = ndc.map(([, y]) => y);
    const cx = (Math.min(...xs) + Math.max(...xs)) / 2; // offsets of the box centre, in NDC
    const cy = (Math.min(...ys) + Math.max(...ys)) / 2;
    const dx = cx * distance * tanY * aspect; // in scene units at the target's depth
    const dy = cy * distance * tanY;
    t = t.map((v, k) => v + dx * right[k] + dy * up[k]);
    distance = fitDistance(points, { target: t, direction, fov, aspect, margin });
  }
  return { target: t, distance };
}

const SURFACE = { width: 504, height: 400 }; // the largest 3D view, CSS pixels (the fitted scene is wider than tall)
const SURFACE_BAR = 104; // the colour bar beside the 3D view, with its gap
const SURFACE_MIN_WIDTH = 240;

/** CSS `{width, height}` of the 3D view in an output area `available` pixels wide (NaN: unknown): as wide
 * as fits beside its colour bar, between 240 and 504 pixels, in the proportions 504 x 400 (the camera is
 * fitted to whatever it gets). */
export function surfaceSize(available) {
  const room = Number.isFinite(available) && available > 0 ? available - SURFACE_BAR : SURFACE.width;
  const width = Math.round(Math.min(SURFACE.width, Math.max(SURFACE_MIN_WIDTH, room)));
  return { width, height: Math.round((width * SURFACE.height) / SURFACE.width) };
}
