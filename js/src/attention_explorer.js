// Front end of tscope_widgets.widgets.AttentionExplorer (anywidget ESM module).
//
// Python owns the data: `pane` (one layer's mean attention map of a head, the head mean or the rollout beside
// the layer's mean sensitivity, [S, S] float32 each, with Spearman ρ and its interval), `table` (ρ of every map
// of the layer), `cell` (the clicked cell in every map), `grid` (one effective rank of every head, [L, n]) and
// `head` (the clicked head's singular values and trajectory). This view draws them and writes back only view
// state: layer, attention_map, selected_cell, measure, kind, selected_head. Hover and click are linked across
// the two maps: the pointer over either shows both values and outlines the cell in both.
import { baseCss } from "./lib/style.js";
import { viewLifecycle } from "./lib/view.js";
import { drawAxes, positionLabel } from "./lib/axes.js";
import { decode, decodeTree } from "./lib/codec.js";
import { drawColorbar } from "./lib/colorbar.js";
import { fillSelect, h, sizeCanvas } from "./lib/dom.js";
import { cellAt, cellRect, fillRGBA, heatmapLayout, paintGrid } from "./lib/heatmap.js";
import { lineChart } from "./lib/lines.js";
import { multiLineChart, seriesColor } from "./lib/multiline.js";
import { pictureHidingCSS } from "./lib/picture.js";
import { colorIndexer, colorRange, colormapLUT, formatValue, resolveLog } from "./lib/scales.js";
import { cssToRGBA, themeColors } from "./lib/theme.js";
import { showTooltip } from "./lib/tooltip.js";
import { cellLines, correlationText, gridLog, kindTitle, mapTitle, measureName, spectraSeries, toggled } from "./lib/attention_data.js";

const LUT = colormapLUT("viridis", 256);
const MAP_MARGIN = { left: 96, top: 8, right: 92, bottom: 92 };
const GRID_MARGIN = { left: 64, top: 8, right: 92, bottom: 40 };

const CSS = `${baseCss(".tscope-attention")}
.tscope-attention .tscope-maps { display: flex; flex-wrap: wrap; gap: 8px; align-items: flex-start; position: relative; }
.tscope-attention canvas { display: block; cursor: crosshair; }
.tscope-attention .tscope-row { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
.tscope-attention .tscope-tooltip { position: absolute; display: none; pointer-events: none; z-index: 10;
  white-space: pre; font-size: 11px; padding: 3px 6px; border-radius: 3px;
  background: var(--jp-layout-color0, #fff); border: 1px solid var(--jp-border-color1, #9e9e9e); }
.tscope-attention .tscope-caption { color: var(--jp-ui-font-color2, #616161); font-size: 11px; margin: 4px 0; }
.tscope-attention table { border-collapse: collapse; font-size: 11px; }
.tscope-attention td, .tscope-attention th { padding: 1px 6px; text-align: right; }
.tscope-attention tr.tscope-map-row { cursor: pointer; }
.tscope-attention tr.tscope-current { font-weight: bold; }
.tscope-attention h4 { margin: 10px 0 2px; font-size: inherit; }
.tscope-attention svg.tscope-chart { display: block; overflow: visible; }
`;

function render({ model, el }) {
  const life = viewLifecycle(model);
  const { on, listen } = life;

  // ----- DOM
  const layerSelect = h("select", { "aria-label": "layer" });
  const mapSelect = h("select", { "aria-label": "attention map" });
  const measureSelect = h("select", { "aria-label": "rank measure" });
  const kindSelect = h("select", { "aria-label": "matrix" });
  const attCanvas = h("canvas", { class: "tscope-attn-map" });
  const sensCanvas = h("canvas", { class: "tscope-sens-map" });
  const tooltip = h("div", { class: "tscope-tooltip" });
  const maps = h("div", { class: "tscope-maps" }, attCanvas, sensCanvas, tooltip);
  const corrLine = h("p", { class: "tscope-caption tscope-correlation" });
  const tablePane = h("div", { class: "tscope-table" });
  const cellPane = h("div", { class: "tscope-cell-detail" });
  const gridCanvas = h("canvas", { class: "tscope-head-grid" });
  const gridBox = h("div", { class: "tscope-maps" }, gridCanvas);
  const headPane = h("div", { class: "tscope-head-detail" });
  const root = h(
    "div",
    { class: "tscope-attention tscope-root" },
    h("style", {}, CSS + pictureHidingCSS(model.get("picture_id"))),
    h("div", { class: "tscope-toolbar" }, h("label", {}, "layer", layerSelect), h("label", {}, "attention", mapSelect)),
    maps,
    corrLine,
    h("div", { class: "tscope-row" }, tablePane, cellPane),
    h("h4", {}, "Head geometry"),
    h("div", { class: "tscope-toolbar" }, h("label", {}, "measure", measureSelect), h("label", {}, "matrix", kindSelect)),
    h("div", { class: "tscope-row" }, gridBox, headPane),
  );
  el.append(root);

  // ----- view state (this render only)
  const scratch = document.createElement("canvas");
  const probe = document.createElement("canvas");
  probe.width = probe.height = 1;
  let theme = themeColors(root);
  let pane = null; // decoded `pane`
  let grid = null; // decoded `grid`
  let mapLayout = null;
  let gridLayout = null;
  let hover = null; // the cell under the pointer, outlined in both maps
  let paints = 0;
  const tokens = () => model.get("token_labels") ?? [];

  const dirty = new Set();
  const parts = { controls: drawControls, maps: drawMaps, table: drawTable, cell: drawCell, grid: drawGrid, head: drawHead };
  function schedule(...names) {
    if (dirty.size === 0) {
      queueMicrotask(() => {
        if (life.closed) return;
        const todo = [...dirty];
        dirty.clear();
        theme = themeColors(root);
        for (const name of Object.keys(parts)) if (todo.includes(name)) parts[name]();
        paints += 1;
        root.dataset.paints = String(paints); // a marker for browser tests: bumps after every repaint
      });
    }
    for (const n of names) dirty.add(n);
  }

  function drawControls() {
    fillSelect(layerSelect, model.get("layer_options") ?? [], model.get("layer"), (l) => `layer ${l}`);
    fillSelect(mapSelect, model.get("map_options") ?? [], model.get("attention_map"), mapTitle);
    fillSelect(measureSelect, model.get("measure_options") ?? [], model.get("measure"), measureName);
    fillSelect(kindSelect, model.get("kind_options") ?? [], model.get("kind"), kindTitle);
  }

  function paintMap(canvas, values, S, { log, title, zero }) {
    const lay = heatmapLayout({ rows: S, cols: S, margin: MAP_MARGIN, maxSize: 320 });
    const ctx = sizeCanvas(canvas, lay.totalWidth, lay.totalHeight, theme.bg);
    const { domain } = colorRange(values, { log, limits: zero ? [0, null] : null });
    const rgba = fillRGBA(new Uint8ClampedArray(4 * S * S), values, colorIndexer(domain, { log }), LUT, {
      nan: cssToRGBA(theme.nan, probe),
      nonpositive: cssToRGBA(theme.bg, probe),
    });
    paintGrid(ctx, lay, rgba, scratch);
    for (const [cell, color] of [[hover, theme.fg2], [model.get("selected_cell"), theme.accent]]) {
      if (!cell || cell[0] >= S || cell[1] >= S) continue;
      const r = cellRect(lay, cell[0], cell[1]);
      ctx.strokeStyle = color;
      ctx.lineWidth = 2;
      ctx.strokeRect(r.x - 1, r.y - 1, r.w + 2, r.h + 2);
    }
    drawAxes(ctx, lay, { tokens: tokens(), theme, xTitle: "key position j", yTitle: "query position i" });
    drawColorbar(ctx, { x: lay.x + lay.width + 12, y: lay.y, width: 12, height: lay.height, lut: LUT, domain, log, title: title + (log ? " (log)" : ""), theme });
    canvas.dataset.rows = String(S);
    canvas.dataset.plot = [lay.x, lay.y, lay.width, lay.height].join(",");
    canvas.dataset.log = String(log);
    canvas.dataset.domain = domain.map(formatValue).join(",");
    return lay;
  }

  function drawMaps() {
    if (!pane) {
      mapLayout = null;
      corrLine.textContent = "";
      return;
    }
    const S = pane.attention.shape[0];
    const label = pane.map;
    mapLayout = paintMap(attCanvas, pane.attention.data, S, {
      log: false,
      zero: true,
      title: label === "rollout" ? "mean rollout" : `mean attention, ${mapTitle(label)}`,
    });
    paintMap(sensCanvas, pane.sensitivity.data, S, {
      log: resolveLog(model.get("log_scale"), pane.sensitivity.data),
      zero: false,
      title: "mean sensitivity s_ij",
    });
    attCanvas.dataset.map = label;
    attCanvas.dataset.layer = String(pane.layer);
    corrLine.textContent = correlationText(pane);
    corrLine.dataset.rho = Number.isFinite(pane.rho) ? pane.rho.toFixed(6) : "";
  }

  function drawTable() {
    const rows = model.get("table") ?? [];
    const current = model.get("attention_map");
    const f = (x) => (Number.isFinite(x) ? x.toFixed(3) : "–");
    const body = rows.map((r) => {
      const tr = h(
        "tr",
        { class: `tscope-map-row${r.map === current ? " tscope-current" : ""}`, "data-map": r.map, title: "show this map" },
        h("td", { style: "text-align:left" }, mapTitle(r.map)),
        h("td", {}, f(r.rho)),
        h("td", {}, `[${f(r.low)}, ${f(r.high)}]`),
      );
      tr.addEventListener("click", () => {
        model.set("attention_map", r.map);
        model.save_changes();
      });
      return tr;
    });
    tablePane.replaceChildren(
      h("table", {}, h("tr", {}, h("th", { style: "text-align:left" }, "map"), h("th", {}, "ρ"), h("th", {}, "interval")), ...body),
    );
  }

  function drawCell() {
    const sel = model.get("selected_cell");
    const info = decodeTree(model.get("cell"));
    if (!sel) {
      cellPane.replaceChildren(h("p", { class: "tscope-caption" }, "Click a cell of either map: its value in every map."));
      delete cellPane.dataset.cell;
      return;
    }
    if (!info || info.cell[0] !== sel[0] || info.cell[1] !== sel[1]) {
      cellPane.replaceChildren(h("p", { class: "tscope-caption" }, "loading…"));
      return;
    }
    const [i, j] = info.cell;
    const rows = info.maps.map((m, k) => h("tr", {}, h("td", { style: "text-align:left" }, mapTitle(m)), h("td", {}, formatValue(info.attention[k] ?? NaN))));
    cellPane.replaceChildren(
      h("p", { class: "tscope-caption" }, `query ${positionLabel(i, tokens(), 16)} → key ${positionLabel(j, tokens(), 16)}, layer ${info.layer}`),
      h("table", {}, ...rows, h("tr", {}, h("td", { style: "text-align:left" }, "sensitivity s_ij"), h("td", {}, formatValue(info.sensitivity ?? NaN)))),
    );
    cellPane.dataset.cell = `${i},${j}`;
  }

  function drawGrid() {
    const layers = model.get("head_layers") ?? [];
    if (!grid || !layers.length) {
      gridLayout = null;
      return;
    }
    const [L, n] = grid.shape;
    const measure = model.get("measure");
    const log = gridLog(measure, grid.data);
    const lay = heatmapLayout({ rows: L, cols: n, margin: GRID_MARGIN, maxSize: 320, maxCell: 36 });
    const ctx = sizeCanvas(gridCanvas, lay.totalWidth, lay.totalHeight, theme.bg);
    const { domain } = colorRange(grid.data, { log });
    const rgba = fillRGBA(new Uint8ClampedArray(4 * L * n), grid.data, colorIndexer(domain, { log }), LUT, {
      nan: cssToRGBA(theme.nan, probe),
      nonpositive: cssToRGBA(theme.bg, probe),
    });
    paintGrid(ctx, lay, rgba, scratch);
    const sel = model.get("selected_head");
    if (sel && layers.includes(sel[0])) {
      const r = cellRect(lay, layers.indexOf(sel[0]), sel[1]);
      ctx.strokeStyle = theme.accent;
      ctx.lineWidth = 2;
      ctx.strokeRect(r.x - 1, r.y - 1, r.w + 2, r.h + 2);
    }
    drawAxes(ctx, lay, { theme, xTitle: "head", yTitle: "layer", rowLabel: (i) => `L${layers[i]}`, colLabel: (j) => `h${j}` });
    const title = kindTitle(model.get("kind")); // the measure is in the menu; a long title would not fit beside two rows
    drawColorbar(ctx, { x: lay.x + lay.width + 12, y: lay.y, width: 12, height: lay.height, lut: LUT, domain, log, title: title + (log ? " (log)" : ""), theme });
    gridLayout = lay;
    const steps = model.get("steps") ?? [];
    gridCanvas.dataset.rows = String(L);
    gridCanvas.dataset.cols = String(n);
    gridCanvas.dataset.plot = [lay.x, lay.y, lay.width, lay.height].join(",");
    gridCanvas.dataset.records = String(steps.length);
    gridCanvas.title = steps.length ? `latest tracker record: step ${steps[steps.length - 1]}` : "the model as it is";
  }

  function drawHead() {
    const info = decodeTree(model.get("head"));
    const sel = model.get("selected_head");
    if (!sel || !info || info.layer !== sel[0] || info.head !== sel[1]) {
      headPane.replaceChildren(h("p", { class: "tscope-caption" }, sel ? "loading…" : "Click a head: its singular values (log scale)."));
      delete headPane.dataset.head;
      return;
    }
    const { xs, series } = spectraSeries(info, seriesColor);
    const titles = model.get("measure_titles") ?? {};
    const measure = model.get("measure");
    const kind = model.get("kind");
    const value = info.ranks?.[measure]?.[kind];
    const children = [
      h("p", { class: "tscope-caption" }, `layer ${info.layer} · head ${info.head}: ${titles[measure] ?? measureName(measure)} of ${kindTitle(kind)} = ${formatValue(value ?? NaN)}`),
      multiLineChart({ xs, series, width: 420, height: 200, xLabel: "index (descending)", yLabel: "singular value", log: true, theme }),
    ];
    const steps = info.steps ?? [];
    if (steps.length > 1) {
      children.push(
        h("p", { class: "tscope-caption" }, `${measureName(measure)} of ${kindTitle(kind)} during training`),
        lineChart(steps, Array.from(info.trajectory.data), { width: 420, xLabel: "step", yLabel: measureName(measure), theme }),
      );
      if (info.entropy) {
        children.push(
          h("p", { class: "tscope-caption" }, "mean attention entropy on the probe batch (nats)"),
          lineChart(steps, Array.from(info.entropy.data), { width: 420, xLabel: "step", yLabel: "entropy", theme }),
        );
      }
    }
    headPane.replaceChildren(...children);
    headPane.dataset.head = `${info.layer},${info.head}`;
    headPane.dataset.series = String(series.length);
    headPane.dataset.records = String(steps.length);
  }

  function readData() {
    pane = decodeTree(model.get("pane"));
    grid = decode(model.get("grid"));
  }

  // ----- pointer: linked hover and click on both maps, click on the head grid
  function cellOfEvent(canvas, event) {
    if (!mapLayout) return null;
    const box = canvas.getBoundingClientRect();
    const x = ((event.clientX - box.left) * mapLayout.totalWidth) / box.width;
    const y = ((event.clientY - box.top) * mapLayout.totalHeight) / box.height;
    return cellAt(mapLayout, x, y);
  }
  for (const canvas of [attCanvas, sensCanvas]) {
    on(canvas, "mousemove", (event) => {
      const c = pane && cellOfEvent(canvas, event);
      const next = c ? [c.i, c.j] : null;
      const changed = JSON.stringify(next) !== JSON.stringify(hover);
      hover = next;
      if (changed) schedule("maps");
      if (!c) {
        tooltip.style.display = "none";
        return;
      }
      const S = pane.attention.shape[0];
      showTooltip(tooltip, maps, cellLines(c.i, c.j, { attention: pane.attention.data, sensitivity: pane.sensitivity.data }, S, pane.map, tokens()), event);
    });
    on(canvas, "mouseleave", () => {
      tooltip.style.display = "none";
      hover = null;
      schedule("maps");
    });
    on(canvas, "click", (event) => {
      const c = cellOfEvent(canvas, event);
      if (!c) return;
      model.set("selected_cell", toggled(model.get("selected_cell"), [c.i, c.j]));
      model.save_changes();
    });
  }
  on(gridCanvas, "click", (event) => {
    if (!gridLayout) return;
    const box = gridCanvas.getBoundingClientRect();
    const c = cellAt(gridLayout, ((event.clientX - box.left) * gridLayout.totalWidth) / box.width, ((event.clientY - box.top) * gridLayout.totalHeight) / box.height);
    const layers = model.get("head_layers") ?? [];
    if (!c || c.i >= layers.length) return;
    model.set("selected_head", toggled(model.get("selected_head"), [layers[c.i], c.j]));
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
  on(mapSelect, "change", choose(mapSelect, "attention_map", "map_options"));
  on(measureSelect, "change", choose(measureSelect, "measure", "measure_options"));
  on(kindSelect, "change", choose(kindSelect, "kind", "kind_options"));

  // ----- model events
  listen("change:pane", () => {
    readData();
    schedule("maps");
  });
  listen("change:grid", () => {
    readData();
    schedule("grid");
  });
  listen("change:table", () => schedule("table"));
  listen("change:cell", () => schedule("cell"));
  listen("change:head", () => schedule("head"));
  listen("change:selected_cell", () => schedule("maps", "cell"));
  listen("change:selected_head", () => schedule("grid", "head"));
  listen("change:attention_map", () => schedule("controls", "table"));
  listen("change:steps", () => schedule("grid", "head"));
  for (const name of ["layer", "layer_options", "map_options", "measure", "kind", "measure_options", "kind_options"]) {
    listen(`change:${name}`, () => schedule("controls", "grid", "head"));
  }
  for (const name of ["token_labels", "log_scale"]) listen(`change:${name}`, () => schedule("maps", "cell"));

  readData();
  schedule(...Object.keys(parts));
  life.repaintWhenNeeded(root, () => schedule("maps", "grid", "head"));
  return life.dispose;
}

export default { render };
