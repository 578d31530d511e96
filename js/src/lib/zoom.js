// Zoom and pan of a heatmap: which cells a plot shows. Pure functions over a view
// `{r0, c0, nr, nc}` (first row and column shown, and how many; whole cells, inside the map), so that
// drawing (`blitGrid`), hit-testing (`cellAt`) and axis ticks agree on one linear map from cells to pixels:
// cell column j spans x + (j - c0) * width / nc ... x + (j - c0 + 1) * width / nc.

/** The whole `rows x cols` map. */
export function fullView(rows, cols) {
  return { r0: 0, c0: 0, nr: rows, nc: cols };
}

/** Whether `view` shows the whole `rows x cols` map. */
export function isFullView(view, rows, cols) {
  return view.r0 === 0 && view.c0 === 0 && view.nr === rows && view.nc === cols;
}

const clampInt = (v, lo, hi) => Math.min(hi, Math.max(lo, Math.round(v)));

/**
 * `view` made valid for a `rows x cols` map: whole cells, at least `minCells` (or the whole axis when
 * shorter) and at most the map on each axis, inside the map.
 */
export function clampView(view, rows, cols, minCells = 4) {
  if (!(rows >= 1 && cols >= 1)) throw new RangeError(`need rows, cols >= 1, got ${rows}, ${cols}`);
  const nr = clampInt(view.nr, Math.min(minCells, rows), rows);
  const nc = clampInt(view.nc, Math.min(minCells, cols), cols);
  return { r0: clampInt(view.r0, 0, rows - nr), c0: clampInt(view.c0, 0, cols - nc), nr, nc };
}

/**
 * Zoom by `factor` (> 1: in, < 1: out) around the point at fractions `(fx, fy)` of the plot's width and
 * height (the cell under it stays under it, up to whole-cell rounding). A zoom in always drops at least
 * one cell and a zoom out adds one, so small wheel steps still move.
 */
export function zoomView(view, rows, cols, factor, fx = 0.5, fy = 0.5, minCells = 4) {
  if (!(factor > 0) || !Number.isFinite(factor)) throw new RangeError(`zoom factor must be a positive number, got ${factor}`);
  const step = (n, limit) => {
    let m = Math.round(n / factor);
    if (factor > 1 && m >= n) m = n - 1;
    if (factor < 1 && m <= n) m = n + 1;
    return Math.min(limit, Math.max(Math.min(minCells, limit), m));
  };
  const nr = step(view.nr, rows);
  const nc = step(view.nc, cols);
  const anchorRow = view.r0 + fy * view.nr; // in cells, continuous
  const anchorCol = view.c0 + fx * view.nc;
  return clampView({ r0: anchorRow - fy * nr, c0: anchorCol - fx * nc, nr, nc }, rows, cols, minCells);
}

/** Move the view by whole cells (`dRows` down, `dCols` right), stopping at the edges of the map. */
export function panView(view, rows, cols, dRows, dCols) {
  return clampView({ ...view, r0: view.r0 + dRows, c0: view.c0 + dCols }, rows, cols, 1);
}

/**
 * The view of a brushed rectangle between cells `a` and `b` (`{i, j}`, either corner first): a square
 * one (the larger side, so the aspect of the cells stays) centred on the rectangle, inside the map.
 */
export function brushView(a, b, rows, cols, minCells = 4) {
  const i0 = Math.min(a.i, b.i);
  const j0 = Math.min(a.j, b.j);
  const side = Math.max(Math.abs(a.i - b.i), Math.abs(a.j - b.j)) + 1;
  const n = Math.max(side, Math.min(minCells, rows, cols));
  const ci = i0 + (Math.abs(a.i - b.i) + 1) / 2;
  const cj = j0 + (Math.abs(a.j - b.j) + 1) / 2;
  return clampView({ r0: Math.floor(ci - n / 2), c0: Math.floor(cj - n / 2), nr: Math.min(n, rows), nc: Math.min(n, cols) }, rows, cols, minCells);
}

/**
 * Whole-cell pan of a drag of `(dx, dy)` pixels started at `view`, in a plot of `width x height` pixels:
 * the map follows the pointer (dragging right shows columns further left).
 */
export function dragView(view, rows, cols, dx, dy, width, height) {
  return panView(view, rows, cols, -Math.round((dy * view.nr) / height), -Math.round((dx * view.nc) / width));
}

/** `"r0,c0,nr,nc"`, as views are named in data attributes. */
export const viewKey = (view) => `${view.r0},${view.c0},${view.nr},${view.nc}`;
