// Front end of tscope_widgets.widgets.SensitivityExplorer (anywidget ESM module).
//
// Python owns the data: `heat` (the selected layer's statistic, [S, S] float32), `counts` ([S, S]
// int32), `detail` (the selected cell's statistics and reservoir samples) and the job status. This
// view draws them and writes back only view state: layer, statistic, view, log_scale ("auto", true,
// false), colormap, color_percentiles, color_limits, selected_cell; pause/resume/stop go as custom messages. Every render() keeps its own state and
// returns a cleanup that removes its listeners, so a widget can be shown twice or re-rendered.
//
// Zoom and pan (this render only, never sent to Python): cells get at least MIN_CELL pixels; a map too long
// for that in MAX_VIEW pixels opens on its top left corner. The wheel zooms around the pointer, a drag pans,
// a shift-drag (or a drag in brush mode) zooms to the brushed square, "reset" goes back to the opening view
// and "whole map" shows every cell. The colour scale is set by the whole map (zooming keeps the colours);
// each paint colours only the shown cells, at most one per device pixel of the plot (`viewSamples`: the
// cell under each pixel's centre), so a repaint of a 2,048 x 2,048 map colours at most the plot's pixels.
// Hover and click read the cell through the same view (`cellAt`). Markers for tests:
// `canvas.tscope-heatmap[data-view="r0,c0,nr,nc"]`, `[data-zooms]` (bumps after each zoom/pan repaint).
//
// Each output showing the explorer is followed by a static picture of it (an output of its own, for
// notebooks reopened without widget state and nbconvert exports; see the Python module). While a view
// is in the page it hides every picture of its model (`.tscope-static[data-picture-id]`), so a live
// notebook does not show the heatmap twice; the picture comes back once the view is gone.
import { baseCss } from "./lib/style.js";
import { viewLifecycle } from "./lib/view.js";
import { drawAxes, positionLabel } from "./lib/axes.js";
import { decode, decodeTree } from "./lib/codec.js";
import { drawColorbar } from "./lib/colorbar.js";
import { fillSelect, h, sizeCanvas } from "./lib/dom.js";
import { blitGrid, cellAt, cellRect, cellShown, fillViewRGBA, heatmapLayout, rasterize, viewSamples, withView } from "./lib/heatmap.js";
import { isFullView, viewKey } from "./lib/zoom.js";
import { mapZoom } from "./lib/map_zoom.js";
import { histogramBins, histogramChart } from "./lib/histogram.js";
import { lineChart } from "./lib/lines.js";
import { pictureHidingCSS } from "./lib/picture.js";
import { columnProfile, offsetProfile, rowProfile, visibleOffsets } from "./lib/profiles.js";
import { COLORMAPS, DIVERGING, colorIndexer, colorRange, colormapLUT, formatValue, resolveLog } from "./lib/scales.js";
import { jobControls } from "./lib/job_controls.js";
import { emptyBodyText } from "./lib/status.js";
import { cellSummary } from "./lib/cell_summary.js";
import { cssToRGBA, themeColors } from "./lib/theme.js";
import { columnsCsv, downloadButtons, matrixCsv } from "./lib/download.js";
import { showTooltip } from "./lib/tooltip.js";

const LUTS = new Map(); // read-only tables shared by all views, one per colour map
const lutOf = (name) => {
  const key = COLORMAPS.includes(name) ? name : COLORMAPS[0];
  if (!LUTS.has(key)) LUTS.set(key, colormapLUT(key, 256));
  return LUTS.get(key);
};
const SCALE_TITLES = { auto: "auto", log: "log", linear: "linear" };
const RANGE_TITLES = { full: "full range", "1-99": "1–99 %", "5-95": "5–95 %" };
const RANGES = { full: null, "1-99": [1, 99], "5-95": [5, 95] };
const MARGIN = { left: 112, top: 8, right: 96, bottom: 104 };
const MIN_CELL = 2; // pixels: longer maps open zoomed in on their top left corner
const MAX_VIEW = 640; // pixels a side of the plot of a long map
const STAT_TITLES = {
  mean: "mean",
  std: "std",
  sem: "std. error of mean",
  cv: "std / |mean|",
  min: "min",
  max: "max",
  count: "samples per cell",
};
const VIEW_TITLES = { matrix: "matrix i × j", offset: "offset i − j" };

const CSS = `${baseCss(".tscope-explorer")}
.tscope-explorer .tscope-main { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
.tscope-explorer .tscope-plot { position: relative; }
.tscope-explorer .tscope-heatmap { display: block; cursor: crosshair; touch-action: none; }
.tscope-explorer .tscope-heatmap.tscope-panning { cursor: grabbing; }
.tscope-explorer button[aria-pressed="true"] { background: var(--jp-brand-color3, #bbdefb); }
.tscope-explorer .tscope-maps { display: flex; flex-wrap: wrap; gap: 8px; align-items: flex-start; }
.tscope-explorer .tscope-tooltip { position: absolute; display: none; pointer-events: none; z-index: 10;
  white-space: pre; font-size: 11px; padding: 3px 6px; border-radius: 3px;
  background: var(--jp-layout-color0, #fff); border: 1px solid var(--jp-border-color1, #9e9e9e);
  box-shadow: 0 1px 3px rgba(0, 0, 0, 0.25); }
.tscope-explorer .tscope-detail { width: 300px; }
.tscope-explorer .tscope-detail h4 { margin: 0; font-size: inherit; display: flex; justify-content: space-between; }
.tscope-explorer .tscope-caption { color: var(--jp-ui-font-color2, #616161); font-size: 11px; margin: 6px 0 0; }
.tscope-explorer .tscope-hint { color: var(--jp-ui-font-color2, #616161); }
.tscope-explorer svg.tscope-chart { display: block; overflow: visible; }
`;

const layerTitle = (layer) => (layer === "final" ? "final norm" : `layer ${layer}`);

function render({ model, el }) {
  const life = viewLifecycle(model);
  const { on, listen } = life;

  // ----- DOM
  const layerSelect = h("select", { "aria-label": "layer" });
  const statSelect = h("select", { "aria-label": "statistic" });
  const viewSelect = h("select", { "aria-label": "view" });
  const scaleSelect = h("select", { "aria-label": "colour scale" });
  const rangeSelect = h("select", { "aria-label": "colour range" });
  const cmapSelect = h("select", { "aria-label": "colour map" });
  const sampleSelect = h("select", { "aria-label": "sample" });
  const job = jobControls({ unit: "batch", keeps: "the statistics" });
  const downloads = downloadButtons({
    container: () => plot,
    theme: () => theme,
    name: () => ["sensitivity", layerTitle(model.get("layer")), statistic(), model.get("view")],
    csv: () => viewCsv(),
  });
  const zoomSlot = h("span", { class: "tscope-zoom-slot" }); // the zoom buttons, once the canvas exists
  const toolbar = h(
    "div",
    { class: "tscope-toolbar" },
    h("label", {}, "layer", layerSelect),
    h("label", {}, "statistic", statSelect),
    h("label", {}, "view", viewSelect),
    h("label", {}, "colour", scaleSelect),
    h("label", {}, "range", rangeSelect),
    h("label", {}, "map", cmapSelect),
    h("label", { title: "a reservoir sample's own map, beside the population mean" }, "sample", sampleSelect),
    zoomSlot,
    job.buttons,
    downloads.element,
  );
  const statusLine = job.statusLine;
  const methodLine = h("p", { class: "tscope-caption tscope-method" });
  const canvas = h("canvas", { class: "tscope-heatmap" });
  const meanCanvas = h("canvas", { class: "tscope-heatmap-mean", style: "display:none" });
  const offsetPane = h("div", { class: "tscope-offset" });
  const tooltip = h("div", { class: "tscope-tooltip" });
  const zoomLine = h("p", { class: "tscope-caption tscope-zoom-line" });
  let layout = null; // the layout last painted (with its view), for hit-testing and zooming
  const zoomer = mapZoom({
    canvas,
    on,
    layout: () => layout,
    repaint: () => schedule("zoom"),
    hideTooltip: () => {
      tooltip.style.display = "none";
    },
  });
  zoomSlot.append(zoomer.buttons);
  const plot = h("div", { class: "tscope-plot" }, h("div", { class: "tscope-maps" }, canvas, meanCanvas), zoomLine, offsetPane, tooltip);
  const detailPane = h("div", { class: "tscope-detail" });
  const root = h(
    "div",
    { class: "tscope-explorer tscope-root" },
    h("style", {}, CSS + pictureHidingCSS(model.get("picture_id"))),
    toolbar,
    statusLine,
    methodLine,
    h("div", { class: "tscope-main" }, plot, detailPane),
  );
  el.append(root);

  // ----- view state (this render only)
  const scratch = document.createElement("canvas"); // the shown map, one pixel per cell
  const meanScratch = document.createElement("canvas"); // the population mean beside a sample's map
  const probe = document.createElement("canvas");
  probe.width = probe.height = 1;
  let theme = themeColors(root);
  let heat = null;
  let counts = null;
  let sampleInfo = null; // decoded `sample_view`: a reservoir sample's map, tokens and the population mean
  let paints = 0;
  let zooms = 0;
  let dataAt = null; // when the last map arrived (performance.now()), for the repaint time marker
  let lastPaint = null; // the maps and colours of the last full paint, which zooms and pans repaint
  let rgbaBuffer = null;

  const statistic = () => model.get("statistic");
  const isCount = () => statistic() === "count";
  const useLog = () => resolveLog(model.get("log_scale"), heat ? heat.data : [], { count: isCount() });
  const scaleKey = () => {
    const v = model.get("log_scale");
    return v === "auto" ? "auto" : v ? "log" : "linear";
  };
  const rangeKey = () => {
    const p = model.get("color_percentiles");
    if (!p) return "full";
    const key = Object.keys(RANGES).find((k) => RANGES[k] && RANGES[k][0] === p[0] && RANGES[k][1] === p[1]);
    return key ?? `${p[0]}-${p[1]}`;
  };
  const colormap = () => (isCount() ? COLORMAPS[0] : model.get("colormap"));
  const tokens = () => model.get("token_labels") ?? [];
  const statTitle = () => {
    const stat = statistic();
    return stat === "count" ? STAT_TITLES.count : `${STAT_TITLES[stat] ?? stat} ${model.get("quantity")}`;
  };

  // Redraws are coalesced: the change events of one message fire together, one paint follows.
  const dirty = new Set();
  const parts = { controls: drawControls, status: drawStatus, main: drawMain, zoom: drawZoom, detail: drawDetail };
  function schedule(...names) {
    if (dirty.size === 0) {
      queueMicrotask(() => {
        if (life.closed) return;
        const todo = [...dirty];
        dirty.clear();
        theme = themeColors(root); // cheap, and right even if the view was drawn before it was attached
        if (todo.includes("main") && todo.includes("zoom")) todo.splice(todo.indexOf("zoom"), 1); // main paints all
        for (const name of Object.keys(parts)) if (todo.includes(name)) parts[name]();
      });
    }
    for (const n of names) dirty.add(n);
  }

  function drawControls() {
    fillSelect(layerSelect, model.get("layer_options") ?? [], model.get("layer"), layerTitle);
    fillSelect(statSelect, model.get("statistic_options") ?? [], statistic(), (s) => STAT_TITLES[s] ?? s);
    fillSelect(viewSelect, model.get("view_options") ?? [], model.get("view"), (v) => VIEW_TITLES[v] ?? v);
    fillSelect(scaleSelect, Object.keys(SCALE_TITLES), scaleKey(), (k) => SCALE_TITLES[k]);
    const ranges = Object.keys(RANGES).includes(rangeKey()) ? Object.keys(RANGES) : [...Object.keys(RANGES), rangeKey()];
    fillSelect(rangeSelect, ranges, rangeKey(), (k) => RANGE_TITLES[k] ?? `${k} %`);
    fillSelect(cmapSelect, COLORMAPS, model.get("colormap"), (k) => k);
    fillSelect(sampleSelect, [null, ...(model.get("sample_options") ?? [])], model.get("sample") ?? null, (k) => (k === null ? "population" : `sample ${k}`));
  }

  function drawStatus() {
    job.draw(model, root);
    const note = model.get("method_note") || "";
    methodLine.textContent = note;
    methodLine.style.display = note ? "" : "none";
    methodLine.dataset.method = model.get("method") || "";
  }

  function drawMain() {
    const offset = model.get("view") === "offset";
    canvas.style.display = offset ? "none" : "";
    if (offset) meanCanvas.style.display = "none";
    offsetPane.style.display = offset ? "" : "none";
    if (offset) zoomer.update({ shown: false, opening: true, whole: true });
    if (offset) {
      lastPaint = null;
      zoomLine.style.display = "none";
    }
    if (offset) drawOffset();
    else drawHeatmap();
    paints += 1;
    if (dataAt !== null) root.dataset.paintMs = (performance.now() - dataAt).toFixed(2); // decode + colours + paint
    dataAt = null;
    root.dataset.paints = String(paints); // a marker for browser tests: bumps after every repaint
  }

  // The map shown in the main canvas: the population statistic, or a reservoir sample's own map (then the
  // population mean goes beside it, on the same colour scale, in `meanCanvas`).
  function shownSample() {
    const k = model.get("sample");
    if (k === null || k === undefined) return null;
    const info = sampleInfo;
    return info && info.layer === model.get("layer") && info.sample === k ? info : null;
  }

  // The opening layout of a rows x cols map, and the view shown now (zoomed, or the opening one).
  const baseLayout = (rows, cols) => heatmapLayout({ rows, cols, margin: MARGIN, minCell: MIN_CELL, maxView: MAX_VIEW });
  const shownView = (rows, cols) => zoomer.view(rows, cols, baseLayout(rows, cols).view);

  // Paint one map into `target`: colour the shown cells into `raster` (at most one per device pixel), draw
  // it, the selection, the brush, the axes and the colour bar.
  function paintMap(target, raster, opts) {
    const { values, rows, cols, domain, log, lut, tokens: labels, title, selected, population, brush } = opts;
    const view = shownView(rows, cols);
    const lay = withView(baseLayout(rows, cols), view);
    const ctx = sizeCanvas(target, lay.totalWidth, lay.totalHeight, theme.bg);
    const dpr = window.devicePixelRatio || 1;
    const cells = viewSamples(view, lay.width * dpr, lay.height * dpr);
    const size = 4 * cells.rows.length * cells.cols.length;
    if (!rgbaBuffer || rgbaBuffer.length !== size) rgbaBuffer = new Uint8ClampedArray(size);
    fillViewRGBA(rgbaBuffer, values, cols, cells.rows, cells.cols, colorIndexer(domain, { log }), lut, {
      nan: cssToRGBA(theme.nan, probe),
      nonpositive: cssToRGBA(theme.bg, probe),
    });
    rasterize(raster, rgbaBuffer, cells.rows.length, cells.cols.length);
    blitGrid(ctx, lay, raster);
    ctx.save();
    ctx.beginPath();
    ctx.rect(lay.x - 2, lay.y - 2, lay.width + 4, lay.height + 4);
    ctx.clip(); // a selection or brush partly outside the view is cut at the plot's edge
    if (selected && selected[0] < rows && selected[1] < cols && cellShown(lay, selected[0], selected[1])) {
      const r = cellRect(lay, selected[0], selected[1]);
      ctx.strokeStyle = theme.accent;
      ctx.lineWidth = 2;
      ctx.strokeRect(r.x - 1, r.y - 1, r.w + 2, r.h + 2);
    }
    if (brush) {
      const a = cellRect(lay, Math.min(brush[0].i, brush[1].i), Math.min(brush[0].j, brush[1].j));
      const b = cellRect(lay, Math.max(brush[0].i, brush[1].i), Math.max(brush[0].j, brush[1].j));
      ctx.strokeStyle = theme.accent;
      ctx.setLineDash([4, 3]);
      ctx.lineWidth = 1.5;
      ctx.strokeRect(a.x, a.y, b.x + b.w - a.x, b.y + b.h - a.y);
    }
    ctx.restore();
    const note = population && model.get("label_note") ? ` (${model.get("label_note")})` : "";
    drawAxes(ctx, lay, { tokens: labels, theme, xTitle: `input position j${note}`, yTitle: `output position i${note}` });
    drawColorbar(ctx, {
      x: lay.x + lay.width + 12,
      y: lay.y,
      width: 12,
      height: lay.height,
      lut,
      domain,
      log,
      title: title + (log ? " (log)" : ""),
      theme,
    });
    target.dataset.log = String(log);
    target.dataset.colormap = colormap();
    target.dataset.domain = domain.map(formatValue).join(",");
    target.dataset.rows = String(rows);
    target.dataset.view = viewKey(view);
    return lay;
  }

  // The caption under the map: which cells are shown, and how to move.
  function drawZoomLine(rows, cols, view) {
    const whole = isFullView(view, rows, cols);
    const opening = viewKey(view) === viewKey(baseLayout(rows, cols).view);
    zoomer.update({ shown: true, opening, whole });
    const shown = whole
      ? `all ${rows} × ${cols} cells`
      : `rows ${view.r0}–${view.r0 + view.nr - 1}, columns ${view.c0}–${view.c0 + view.nc - 1} of ${rows} × ${cols}`;
    zoomLine.textContent = `${shown} · wheel: zoom · drag: pan · shift-drag or brush: zoom to a square`;
  }

  // A zoom, pan, brush or selection: repaint the maps with the colours of the last full paint.
  function drawZoom() {
    if (!lastPaint || !layout || model.get("view") === "offset") {
      drawMain();
      return;
    }
    const { rows, cols, main, mean } = lastPaint;
    const brush = zoomer.brushCells();
    const selected = model.get("selected_cell"); // not in the raster: a click repaints from it
    layout = paintMap(canvas, scratch, { ...main, selected, brush });
    if (mean) paintMap(meanCanvas, meanScratch, { ...mean, selected });
    drawZoomLine(rows, cols, layout.view);
    zooms += 1;
    root.dataset.zooms = String(zooms);
  }

  function drawHeatmap() {
    const info = shownSample();
    const waiting = model.get("sample") !== null && model.get("sample") !== undefined && !info;
    meanCanvas.style.display = info && !info.missing ? "" : "none";
    if (!heat || waiting || (info && info.missing)) {
      layout = null;
      lastPaint = null;
      zoomLine.style.display = "none";
      let text = emptyBodyText(model.get("status"), model.get("message"), "waiting for the first batch…");
      if (heat && waiting) text = `loading sample ${model.get("sample")}…`;
      if (heat && info && info.missing) text = `sample ${info.sample} is no longer in the reservoir: pick another`;
      const font = `12px ${theme.font}`;
      let ctx = sizeCanvas(canvas, 420, 60, theme.bg);
      ctx.font = font;
      const width = Math.ceil(ctx.measureText(text).width) + 24;
      if (width > 420) {
        ctx = sizeCanvas(canvas, Math.min(width, 1200), 60, theme.bg);
        ctx.font = font;
      }
      ctx.fillStyle = model.get("status") === "error" ? theme.error : theme.fg2;
      ctx.fillText(text, 12, 30);
      canvas.dataset.empty = text;
      return;
    }
    delete canvas.dataset.empty;
    const [rows, cols] = heat.shape;
    const log = useLog();
    const lut = lutOf(colormap());
    const count = isCount() && !info;
    const shown = info ? info.map.data : heat.data;
    let joint = shown;
    if (info) {
      joint = new Float64Array(shown.length + info.mean.data.length);
      joint.set(shown);
      joint.set(info.mean.data, shown.length);
    }
    const { domain } = colorRange(joint, {
      log,
      percentiles: count ? null : model.get("color_percentiles"),
      limits: count ? null : model.get("color_limits"),
      diverging: DIVERGING.has(colormap()),
    });
    const selected = model.get("selected_cell");
    const quantity = model.get("quantity");
    const main = {
      values: shown,
      rows,
      cols,
      domain,
      log,
      lut,
      tokens: info ? info.tokens : tokens(),
      title: info ? `${quantity} of sample ${info.sample}` : statTitle(),
      selected,
      population: !info,
    };
    layout = paintMap(canvas, scratch, main);
    canvas.dataset.sample = info ? String(info.sample) : "";
    let mean = null;
    if (info) {
      mean = { values: info.mean.data, rows, cols, domain, log, lut, tokens: tokens(), title: `population mean ${quantity}`, selected, population: true };
      paintMap(meanCanvas, meanScratch, mean);
    }
    lastPaint = { rows, cols, main, mean };
    zoomLine.style.display = "";
    drawZoomLine(rows, cols, layout.view);
  }

  function drawOffset() {
    if (!heat) {
      offsetPane.replaceChildren(
        h("p", { class: "tscope-hint" }, emptyBodyText(model.get("status"), model.get("message"), "waiting for the first batch…")),
      );
      return;
    }
    const S = heat.shape[0];
    const profile = visibleOffsets(offsetProfile(heat.data, counts ? counts.data : null, S));
    offsetPane.replaceChildren(
      lineChart(Array.from(profile.offsets), profile.values, {
        width: 540,
        height: 320,
        xLabel: "offset i − j (output position − input position)",
        yLabel: statTitle(),
        log: useLog(),
        theme,
      }),
      h(
        "p",
        { class: "tscope-caption" },
        `${statTitle()} of ${layerTitle(model.get("layer"))}, averaged over the cells of each diagonal i − j, weighted by samples per cell.`,
      ),
    );
  }

  function drawDetail() {
    const cell = model.get("selected_cell");
    if (!heat || !cell || cell[0] >= heat.shape[0] || cell[1] >= heat.shape[1]) {
      detailPane.replaceChildren(
        h("p", { class: "tscope-hint" }, "Click a cell: its values over the samples, its row and its column."),
      );
      return;
    }
    const [i, j] = cell;
    const [rows, cols] = heat.shape;
    const raw = decodeTree(model.get("detail"));
    const info = raw && raw.cell && raw.cell[0] === i && raw.cell[1] === j && raw.layer === model.get("layer") ? raw : null;
    const clear = h("button", { type: "button", title: "clear the selection", "aria-label": "clear selection" }, "×");
    // A plain listener: the button is replaced on every redraw and collected with its listener.
    clear.addEventListener("click", () => {
      model.set("selected_cell", null);
      model.save_changes();
    });
    const log = useLog();
    const quantity = model.get("quantity");
    const children = [
      h("h4", {}, h("span", {}, `output ${positionLabel(i, tokens(), 16)} ← input ${positionLabel(j, tokens(), 16)}`), clear),
      h("p", { class: "tscope-caption" }, layerTitle(model.get("layer"))),
    ];
    if (info) {
      children.push(
        h(
          "p",
          { class: "tscope-caption" },
          cellSummary(info, model.get("method")),
        ),
        histogramChart(histogramBins(info.samples ? info.samples.data : []), { xLabel: quantity, markerX: info.mean, theme }),
        h(
          "p",
          { class: "tscope-caption" },
          `${info.samples ? info.samples.data.length : 0} of the ${info.reservoir_size} reservoir samples (${info.seen} seen); dashed: the mean over all samples`,
        ),
      );
    } else {
      children.push(h("p", { class: "tscope-caption" }, "loading…"));
    }
    children.push(
      h("p", { class: "tscope-caption" }, `row i = ${positionLabel(i, tokens(), 16)}: this output against every input j`),
      lineChart(Array.from({ length: cols }, (_, k) => k), rowProfile(heat.data, cols, i), {
        xLabel: "input position j",
        xTickLabel: (k) => positionLabel(k, tokens(), 6),
        yLabel: STAT_TITLES[statistic()] ?? statistic(),
        markerX: j,
        log,
        theme,
      }),
      h("p", { class: "tscope-caption" }, `column j = ${positionLabel(j, tokens(), 16)}: every output i against this input`),
      lineChart(Array.from({ length: rows }, (_, k) => k), columnProfile(heat.data, rows, cols, j), {
        xLabel: "output position i",
        xTickLabel: (k) => positionLabel(k, tokens(), 6),
        yLabel: STAT_TITLES[statistic()] ?? statistic(),
        markerX: i,
        log,
        theme,
      }),
    );
    detailPane.replaceChildren(...children);
    detailPane.dataset.cell = `${i},${j}`;
    detailPane.dataset.samples = info && info.samples ? String(info.samples.data.length) : "";
  }

  // The numbers of the view as CSV: the map (rows: output positions, columns: input positions, named
  // "i:token") or the offset profile with the samples behind each offset.
  function viewCsv() {
    if (!heat) return null;
    const [rows, cols] = heat.shape;
    const t = tokens();
    const named = (k) => (k < t.length ? `${k}:${t[k]}` : String(k));
    if (model.get("view") === "offset") {
      const p = visibleOffsets(offsetProfile(heat.data, counts ? counts.data : null, rows));
      return columnsCsv([
        ["offset i-j", Array.from(p.offsets)],
        [statTitle(), Array.from(p.values)],
        ["samples", Array.from(p.weights)],
      ]);
    }
    return matrixCsv(heat.data, rows, cols, { rowName: named, colName: named, corner: `output i \\ input j (${statTitle()})` });
  }

  function readArrays() {
    heat = decode(model.get("heat"));
    counts = decode(model.get("counts"));
  }
  function readSample() {
    sampleInfo = decodeTree(model.get("sample_view"));
  }

  // ----- pointer: hover tooltip and click-to-select (zoom, pan and brush: lib/map_zoom.js)
  function layoutPoint(event) {
    const box = canvas.getBoundingClientRect();
    return {
      x: ((event.clientX - box.left) * layout.totalWidth) / box.width,
      y: ((event.clientY - box.top) * layout.totalHeight) / box.height,
    };
  }
  function cellOfEvent(event) {
    if (!layout) return null;
    const { x, y } = layoutPoint(event);
    return cellAt(layout, x, y);
  }
  on(canvas, "mousemove", (event) => {
    const c = !zoomer.busy() && heat && cellOfEvent(event);
    if (!c) {
      tooltip.style.display = "none";
      return;
    }
    const k = c.i * heat.shape[1] + c.j;
    const found = shownSample();
    const info = found && !found.missing ? found : null;
    const t = info ? info.tokens : tokens();
    const lines = [`output ${positionLabel(c.i, t, 24)}`, `input  ${positionLabel(c.j, t, 24)}`];
    if (info) lines.push(`sample ${info.sample}: ${formatValue(info.map.data[k])}`, `population mean: ${formatValue(info.mean.data[k])}`);
    else lines.push(`${STAT_TITLES[statistic()] ?? statistic()}: ${formatValue(heat.data[k])}`, `samples: ${counts ? counts.data[k] : "–"}`);
    showTooltip(tooltip, plot, lines, event);
  });
  on(canvas, "mouseleave", () => {
    tooltip.style.display = "none";
  });
  on(canvas, "click", (event) => {
    if (zoomer.takeClick()) return; // the end of a drag
    const c = cellOfEvent(event);
    if (!c) return;
    const current = model.get("selected_cell");
    const same = current && current[0] === c.i && current[1] === c.j;
    model.set("selected_cell", same ? null : [c.i, c.j]);
    model.save_changes();
  });

  // ----- controls
  const choose = (select, trait, options) => () => {
    const value = (model.get(options) ?? [])[Number(select.value)];
    if (value === undefined) return;
    model.set(trait, value);
    model.save_changes();
  };
  on(layerSelect, "change", choose(layerSelect, "layer", "layer_options"));
  on(statSelect, "change", choose(statSelect, "statistic", "statistic_options"));
  on(viewSelect, "change", choose(viewSelect, "view", "view_options"));
  on(scaleSelect, "change", () => {
    const key = Object.keys(SCALE_TITLES)[Number(scaleSelect.value)];
    if (key === undefined) return;
    model.set("log_scale", key === "auto" ? "auto" : key === "log");
    model.save_changes();
  });
  on(rangeSelect, "change", () => {
    const key = Object.keys(RANGES)[Number(rangeSelect.value)];
    if (key === undefined) return; // an extra entry (percentiles set from Python) is already shown
    model.set("color_percentiles", RANGES[key]);
    model.save_changes();
  });
  on(sampleSelect, "change", () => {
    const options = [null, ...(model.get("sample_options") ?? [])];
    const value = options[Number(sampleSelect.value)];
    if (value === undefined) return;
    model.set("sample", value);
    model.save_changes();
  });
  on(cmapSelect, "change", () => {
    const name = COLORMAPS[Number(cmapSelect.value)];
    if (name === undefined) return;
    model.set("colormap", name);
    model.save_changes();
  });
  job.wire(model, life, () => schedule("status"));
  downloads.wire(on);

  // ----- model events
  listen("change:heat", () => {
    dataAt = performance.now();
    readArrays();
    schedule("main", "detail");
  });
  listen("change:counts", () => {
    readArrays();
    schedule("main", "detail");
  });
  listen("change:detail", () => schedule("detail"));
  listen("change:sample_view", () => {
    readSample();
    schedule("main", "detail");
  });
  listen("change:sample", () => schedule("controls", "main", "detail"));
  listen("change:sample_options", () => schedule("controls"));
  listen("change:status", () => {
    if (!heat) schedule("main"); // an empty body says whether the job still runs or failed
  });
  listen("change:selected_cell", () => schedule("zoom", "detail"));
  for (const name of ["log_scale", "colormap", "color_percentiles", "color_limits"]) {
    listen(`change:${name}`, () => schedule("controls", "main", "detail"));
  }
  listen("change:view", () => schedule("controls", "main"));
  for (const name of ["layer", "statistic", "layer_options", "statistic_options", "view_options"]) {
    listen(`change:${name}`, () => schedule("controls"));
  }
  for (const name of ["method", "method_note"]) listen(`change:${name}`, () => schedule("status", "detail"));
  for (const name of ["token_labels", "label_note", "quantity"]) {
    listen(`change:${name}`, () => schedule("main", "detail"));
  }


  readArrays();
  readSample();
  theme = themeColors(root);
  drawControls();
  drawStatus();
  drawMain();
  drawDetail();

  life.repaintWhenNeeded(root, () => schedule("main", "detail"));
  return life.dispose;
}

export default { render };
