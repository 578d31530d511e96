// Contour lines of a grid image (d3-contour's marching squares), as open or closed polylines that
// never run through missing values, and the levels to draw.
//
// Coordinates follow d3-contour: an image of `nx` columns and `ny` rows spans [0, nx] x [0, ny],
// and sample (c, r) sits at the centre of its cell, (c + 0.5, r + 0.5). d3-contour closes every ring,
// treating missing values (NaN, not yet computed) and the outside of the grid as lower than any level;
// drawn as lines, that would trace the edge of the computed region and the frame. `contourLines`
// keeps only the stretches of each ring that cross an edge between two finite samples, placed by
// linear interpolation along that edge (what d3-contour's smoothing does).
import { ticks } from "d3-array";
import { contours } from "d3-contour";

/**
 * Contour levels strictly inside a colour domain: nice round values (d3 ticks), in log10 for a log
 * scale (then `lo > 0`).
 * @param {[number, number]} domain lo < hi
 * @returns {number[]} ascending; at least one level (the middle) when no round value fits
 */
export function contourLevels(domain, { count = 10, log = false } = {}) {
  const [lo, hi] = domain;
  if (!(hi > lo) || (log && !(lo > 0))) throw new RangeError(`bad contour domain [${domain}]`);
  if (log) {
    const [a, b] = [Math.log10(lo), Math.log10(hi)];
    const inside = ticks(a, b, count)
      .map((e) => 10 ** e)
      .filter((v) => v > lo && v < hi);
    return inside.length ? inside : [Math.sqrt(lo * hi)];
  }
  const inside = ticks(lo, hi, count).filter((v) => v > lo && v < hi);
  return inside.length ? inside : [(lo + hi) / 2];
}

/** `(x, y)` of one unsmoothed d3-contour vertex interpolated on its grid edge, or null if that edge
 * touches a missing sample or leaves the grid. */
function placeVertex(point, image, nx, ny, level) {
  const [X, Y] = point;
  let c0, r0, c1, r1;
  if (Number.isInteger(X)) {
    // on the horizontal edge between samples (X - 1, r) and (X, r), r = Y - 0.5
    r0 = r1 = Y - 0.5;
    c0 = X - 1;
    c1 = X;
  } else {
    c0 = c1 = X - 0.5;
    r0 = Y - 1;
    r1 = Y;
  }
  if (c0 < 0 || r0 < 0 || c1 >= nx || r1 >= ny) return null;
  const v0 = image[r0 * nx + c0];
  const v1 = image[r1 * nx + c1];
  if (!Number.isFinite(v0) || !Number.isFinite(v1) || v0 === v1) return null;
  const t = (level - v0) / (v1 - v0);
  return c0 === c1 ? [c0 + 0.5, r0 + 0.5 + t] : [c0 + 0.5 + t, r0 + 0.5];
}

/** Split a closed ring (last point = first) into the runs of placed vertices. */
function ringRuns(ring, place) {
  const n = ring.length - 1;
  const placed = ring.slice(0, n).map(place);
  const first = placed.findIndex((p) => p === null);
  if (first === -1) return n >= 2 ? [[...placed, placed[0]]] : [];
  const runs = [];
  let run = [];
  for (let k = 1; k <= n; k++) {
    const p = placed[(first + k) % n];
    if (p === null) {
      if (run.length >= 2) runs.push(run);
      run = [];
    } else {
      run.push(p);
    }
  }
  if (run.length >= 2) runs.push(run);
  return runs;
}

/**
 * Contour lines of an image at each level.
 * @param {ArrayLike<number>} image `nx * ny` values, row-major from the top row; NaN = missing
 * @param {number[]} levels
 * @param {{log?: boolean}} options `log`: interpolate in log values (non-positive values count as missing)
 * @returns {{level: number, lines: number[][][]}[]} per level, polylines of `[x, y]` in image
 *   coordinates; a closed line repeats its first point at the end
 */
export function contourLines(image, nx, ny, levels, { log = false } = {}) {
  if (image.length !== nx * ny) throw new RangeError(`expected ${nx * ny} values, got ${image.length}`);
  if (nx < 2 || ny < 2) return levels.map((level) => ({ level, lines: [] }));
  const values = log ? Float64Array.from(image, (v) => (v > 0 ? Math.log(v) : NaN)) : image;
  const generator = contours().size([nx, ny]).smooth(false);
  return levels.map((level) => {
    const v = log ? Math.log(level) : level;
    const lines = [];
    if (!Number.isFinite(v)) return { level, lines };
    const place = (p) => placeVertex(p, values, nx, ny, v);
    for (const polygon of generator.contour(values, v).coordinates) {
      for (const ring of polygon) lines.push(...ringRuns(ring, place));
    }
    return { level, lines };
  });
}
