// Canvas heatmap: layout, cell hit-testing, RGBA filling (one pixel per cell) and painting scaled
// up with nearest-neighbour sampling. A layout may carry a `view` (lib/zoom.js: the rows and columns
// shown); without one it shows the whole map.
import { NAN_INDEX } from "./scales.js";

/**
 * Where the cells go. Cells are square, an integer number of CSS pixels when they fit
 * (`maxSize / max(rows, cols)` at least 1, or at least `minCell` when that is given), else:
 * - without `minCell`, the grid is squeezed into `maxSize`;
 * - with `minCell`, the plot grows up to `maxView` pixels a side with whole cells of at least `minCell`
 *   pixels, and when even that cannot show the whole map, it opens on the top left corner at `minCell`
 *   pixels a cell (`view`; the rest is reached by panning and zooming out).
 * @returns {{x: number, y: number, width: number, height: number, rows: number, cols: number,
 *   cell: number, totalWidth: number, totalHeight: number, view: {r0: number, c0: number, nr: number, nc: number}}}
 */
export function heatmapLayout({
  rows,
  cols,
  maxSize = 420,
  maxCell = 40,
  minCell = 0,
  maxView = 640,
  margin = { left: 0, top: 0, right: 0, bottom: 0 },
}) {
  if (!(rows >= 1 && cols >= 1)) throw new RangeError(`need rows, cols >= 1, got ${rows}, ${cols}`);
  const n = Math.max(rows, cols);
  const whole = Math.min(maxCell, Math.floor(maxSize / n));
  let cell = whole >= Math.max(1, minCell) ? whole : maxSize / n;
  let nr = rows;
  let nc = cols;
  if (minCell > 0 && whole < minCell) {
    cell = Math.max(minCell, Math.floor(maxView / n));
    if (n * minCell > maxView) {
      const shown = Math.max(1, Math.floor(maxView / minCell));
      nr = Math.min(rows, shown);
      nc = Math.min(cols, shown);
    }
  }
  const width = cell * nc;
  const height = cell * nr;
  return {
    x: margin.left,
    y: margin.top,
    width,
    height,
    rows,
    cols,
    cell,
    totalWidth: margin.left + width + margin.right,
    totalHeight: margin.top + height + margin.bottom,
    view: { r0: 0, c0: 0, nr, nc },
  };
}

/** The rows and columns a layout shows: its `view`, or the whole map. */
export function viewOf(layout) {
  return layout.view ?? { r0: 0, c0: 0, nr: layout.rows, nc: layout.cols };
}

/** The layout showing `view` instead (same plot rectangle; `cell` is then the shown cell width). */
export function withView(layout, view) {
  return { ...layout, view: { ...view }, cell: layout.width / view.nc };
}

/** The cell `{i, j}` (row, column) under point `(px, py)` in layout coordinates, or null. */
export function cellAt(layout, px, py) {
  const u = (px - layout.x) / layout.width;
  const v = (py - layout.y) / layout.height;
  if (!(u >= 0 && u < 1 && v >= 0 && v < 1)) return null;
  const { r0, c0, nr, nc } = viewOf(layout);
  return {
    i: r0 + Math.min(nr - 1, Math.floor(v * nr)),
    j: c0 + Math.min(nc - 1, Math.floor(u * nc)),
  };
}

/** Rectangle of cell (i, j) in layout coordinates (outside the plot for a cell the view does not show). */
export function cellRect(layout, i, j) {
  const { r0, c0, nr, nc } = viewOf(layout);
  const w = layout.width / nc;
  const h = layout.height / nr;
  return { x: layout.x + (j - c0) * w, y: layout.y + (i - r0) * h, w, h };
}

/** Whether the view of `layout` shows cell (i, j). */
export function cellShown(layout, i, j) {
  const { r0, c0, nr, nc } = viewOf(layout);
  return i >= r0 && i < r0 + nr && j >= c0 && j < c0 + nc;
}

/**
 * Fill `out` (RGBA bytes, row-major, `values.length * 4`) with the colour of every value.
 * @param {ArrayLike<number>} values
 * @param {(v: number) => number} indexer value -> LUT index or NAN_INDEX / NONPOSITIVE_INDEX
 * @param {Uint8Array} lut r g b per entry
 * @param {{nan: number[], nonpositive: number[]}} special RGBA for the two codes
 */
export function fillRGBA(out, values, indexer, lut, special) {
  const n = values.length;
  if (out.length !== 4 * n) throw new RangeError(`need ${4 * n} bytes, got ${out.length}`);
  for (let k = 0, o = 0; k < n; k++, o += 4) {
    const idx = indexer(values[k]);
    if (idx >= 0) {
      const c = 3 * idx;
      out[o] = lut[c];
      out[o + 1] = lut[c + 1];
      out[o + 2] = lut[c + 2];
      out[o + 3] = 255;
    } else {
      const s = idx === NAN_INDEX ? special.nan : special.nonpositive;
      out[o] = s[0];
      out[o + 1] = s[1];
      out[o + 2] = s[2];
      out[o + 3] = s[3];
    }
  }
  return out;
}

/**
 * The cells a raster of `view` holds, one per raster pixel: every shown cell when they fit in `maxW x maxH`
 * pixels (the device pixels of the plot), else the cell under the centre of each pixel, the one `cellAt`
 * reports there (a 2,048-cell map in a 640-pixel plot is coloured from 640 x 640 cells, not 4 million).
 * @returns {{rows: Int32Array, cols: Int32Array}} map row of each raster row, map column of each raster column
 */
export function viewSamples(view, maxW, maxH) {
  const pick = (start, count, max) => {
    const n = Math.max(1, Math.min(count, Math.floor(max)));
    const out = new Int32Array(n);
    for (let q = 0; q < n; q++) out[q] = start + Math.min(count - 1, Math.floor(((q + 0.5) * count) / n));
    return out;
  };
  return { rows: pick(view.r0, view.nr, maxH), cols: pick(view.c0, view.nc, maxW) };
}

/**
 * `fillRGBA` of the cells `rows x cols` (from `viewSamples`) of a row-major map with `stride` columns:
 * `out` holds `rows.length * cols.length` RGBA pixels.
 */
export function fillViewRGBA(out, values, stride, rows, cols, indexer, lut, special) {
  const h = rows.length;
  const w = cols.length;
  if (out.length !== 4 * w * h) throw new RangeError(`need ${4 * w * h} bytes, got ${out.length}`);
  const picked = new Float64Array(w);
  for (let r = 0; r < h; r++) {
    const base = rows[r] * stride;
    for (let q = 0; q < w; q++) picked[q] = values[base + cols[q]];
    fillRGBA(out.subarray(4 * r * w, 4 * (r + 1) * w), picked, indexer, lut, special);
  }
  return out;
}

/** Put an RGBA grid (`rows x cols` pixels) into `scratch`, a canvas of this view reused between paints. */
export function rasterize(scratch, rgba, rows, cols) {
  if (scratch.width !== cols || scratch.height !== rows) {
    scratch.width = cols;
    scratch.height = rows;
  }
  const sctx = scratch.getContext("2d");
  const image = sctx.createImageData(cols, rows);
  image.data.set(rgba);
  sctx.putImageData(image, 0, 0);
  return scratch;
}

/**
 * Draw a rasterized grid (`scratch`: the shown cells, e.g. from `fillViewRGBA`) into the layout's
 * rectangle of `ctx`, one block of screen pixels per raster pixel, no smoothing.
 */
export function blitGrid(ctx, layout, scratch) {
  ctx.save();
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(scratch, layout.x, layout.y, layout.width, layout.height);
  ctx.restore();
}

/** `rasterize` then `blitGrid`: paint a whole map (`layout.rows x layout.cols` RGBA pixels, no zoom). */
export function paintGrid(ctx, layout, rgba, scratch) {
  rasterize(scratch, rgba, layout.rows, layout.cols);
  blitGrid(ctx, layout, scratch);
}
