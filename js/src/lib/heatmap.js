// Canvas heatmap: layout, cell hit-testing, RGBA filling (one pixel per cell) and painting scaled
// up with nearest-neighbour sampling.
import { NAN_INDEX } from "./scales.js";

/**
 * Where the cells go. Cells are square, an integer number of CSS pixels when they fit
 * (`maxSize / max(rows, cols)` at least 1), else the grid is squeezed into `maxSize`.
 * @returns {{x: number, y: number, width: number, height: number, rows: number, cols: number,
 *   cell: number, totalWidth: number, totalHeight: number}}
 */
export function heatmapLayout({
  rows,
  cols,
  maxSize = 420,
  maxCell = 40,
  margin = { left: 0, top: 0, right: 0, bottom: 0 },
}) {
  if (!(rows >= 1 && cols >= 1)) throw new RangeError(`need rows, cols >= 1, got ${rows}, ${cols}`);
  const n = Math.max(rows, cols);
  const whole = Math.min(maxCell, Math.floor(maxSize / n));
  const cell = whole >= 1 ? whole : maxSize / n;
  const width = cell * cols;
  const height = cell * rows;
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
  };
}

/** The cell `{i, j}` (row, column) under point `(px, py)` in layout coordinates, or null. */
export function cellAt(layout, px, py) {
  const u = (px - layout.x) / layout.width;
  const v = (py - layout.y) / layout.height;
  if (!(u >= 0 && u < 1 && v >= 0 && v < 1)) return null;
  return {
    i: Math.min(layout.rows - 1, Math.floor(v * layout.rows)),
    j: Math.min(layout.cols - 1, Math.floor(u * layout.cols)),
  };
}

/** Rectangle of cell (i, j) in layout coordinates. */
export function cellRect(layout, i, j) {
  const w = layout.width / layout.cols;
  const h = layout.height / layout.rows;
  return { x: layout.x + j * w, y: layout.y + i * h, w, h };
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
 * Paint an RGBA grid (`rows x cols` pixels) into the layout's rectangle of `ctx`, one block of
 * screen pixels per cell, no smoothing. `scratch` is a canvas of this view, reused between paints.
 */
export function paintGrid(ctx, layout, rgba, scratch) {
  const { rows, cols } = layout;
  if (scratch.width !== cols || scratch.height !== rows) {
    scratch.width = cols;
    scratch.height = rows;
  }
  const sctx = scratch.getContext("2d");
  const image = sctx.createImageData(cols, rows);
  image.data.set(rgba);
  sctx.putImageData(image, 0, 0);
  ctx.save();
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(scratch, layout.x, layout.y, layout.width, layout.height);
  ctx.restore();
}
