// Front end of tscope_widgets.widgets.SpectrumWidget (anywidget ESM module).
//
// Python owns the data: `series` (the tracked history: steps [T], scalar series [T], gradient norms
// [L, T], per-block λ_max [G, T]), `density` (the SLQ density nearest to the picked step), `norms`
// (the block-norm map [G, G]), `eigen` (the clicked block's top eigenvalues) and the block job's
// status. This view draws them and writes back only view state: selected_series, picked_step,
// selected_block, log_y; stop/recompute go as custom messages. Every render() keeps its own state and
// returns a cleanup that removes its listeners, so a widget can be shown twice or re-rendered.
//
// Each output showing the widget is followed by a static picture of it (see tscope_widgets/widgets/_display.py);
// while a view is in the page it hides every picture of its model (lib/picture.js).
import { baseCss } from "./lib/style.js";
import { viewLifecycle } from "./lib/view.js";
import { drawAxes } from "./lib/axes.js";
import { decodeTree } from "./lib/codec.js";
import { drawColorbar } from "./lib/colorbar.js";
import { h, sizeCanvas } from "./lib/dom.js";
import { cellAt, cellRect, fillRGBA, heatmapLayout, paintGrid } from "./lib/heatmap.js";
import { multiLineChart, seriesColor } from "./lib/multiline.js";
import { pictureHidingCSS } from "./lib/picture.js";
import { colorDomain, colorIndexer, colormapLUT, formatValue } from "./lib/scales.js";
import {
  blockMapMargins,
  eigenRows,
  groupSpans,
  hasGroups,
  matrixRow,
  memberOf,
  optimiserLines,
  panelsOf,
  stripLayout,
  weightsNote,
  floorDensity,
} from "./lib/spectrum_data.js";
import { typeStepLines } from "./lib/block_spectra_data.js";
import { statusLine as jobStatusLine } from "./lib/job_controls.js";
import { statusText } from "./lib/status.js";
import { cssToRGBA, themeColors } from "./lib/theme.js";
import { columnsCsv, downloadButtons } from "./lib/download.js";
import { showTooltip as placeTooltip } from "./lib/tooltip.js";

const LUT = colormapLUT("viridis", 256); // read-only table shared by all views
const GRAD_NORM_PREFIX = "grad_norm:";
const JOB_TRAITS = ["job_status", "job_message", "job_done", "job_total", "job_rate", "job_eta", "job_elapsed"];

const CSS = `${baseCss(".tscope-spectrum")}
.tscope-spectrum { position: relative; }
.tscope-spectrum .tscope-toolbar { gap: 6px 14px; }
.tscope-spectrum details.tscope-series { position: relative; }
.tscope-spectrum details.tscope-series summary { cursor: pointer; }
.tscope-spectrum details.tscope-series > div { position: absolute; z-index: 20; min-width: 240px; max-height: 320px;
  overflow: auto; padding: 6px 8px; background: var(--jp-layout-color0, #fff);
  border: 1px solid var(--jp-border-color1, #bdbdbd); box-shadow: 0 1px 3px rgba(0, 0, 0, 0.25); }
.tscope-spectrum details.tscope-series h5 { margin: 4px 0 2px; font-size: 11px; color: var(--jp-ui-font-color2, #616161); }
.tscope-spectrum details.tscope-series label { display: flex; }
.tscope-spectrum .tscope-row { display: flex; flex-wrap: wrap; gap: 10px 16px; align-items: flex-start; }
.tscope-spectrum .tscope-panel h4 { margin: 0 0 2px; font-size: 12px; font-weight: 600; }
.tscope-spectrum canvas { display: block; cursor: pointer; }
.tscope-spectrum .tscope-tooltip { position: absolute; display: none; pointer-events: none; z-index: 30;
  white-space: pre; font-size: 11px; padding: 3px 6px; border-radius: 3px;
  background: var(--jp-layout-color0, #fff); border: 1px solid var(--jp-border-color1, #9e9e9e);
  box-shadow: 0 1px 3px rgba(0, 0, 0, 0.25); }
.tscope-spectrum .tscope-caption, .tscope-spectrum .tscope-hint { color: var(--jp-ui-font-color2, #616161); font-size: 11px; margin: 4px 0; }
.tscope-spectrum table.tscope-eigen { border-collapse: collapse; font-size: 12px; font-variant-numeric: tabular-nums; }
.tscope-spectrum table.tscope-eigen th, .tscope-spectrum table.tscope-eigen td { padding: 1px 8px; text-align: right;
  border-bottom: 1px solid var(--jp-border-color2, #e0e0e0); }
.tscope-spectrum svg.tscope-chart { display: block; overflow: visible; }
.tscope-spectrum .tscope-weights-note { margin: 4px 0; padding: 2px 8px; max-width: 380px;
  border-left: 3px solid var(--jp-warn-color1, #f57c00); background: var(--jp-warn-color3, #fff3e0); color: var(--jp-ui-font-color1, #1f1f1f); }
`;

/** Lines between groups of rows and columns, and brackets with the group names (left and below). */
function drawGroups(ctx, layout, spans, margins, theme, { columns = true } = {}) {
  const { x, y, width, height, rows, cols } = layout;
  const rh = height / rows;
  const cw = width / cols;
  ctx.save();
  ctx.strokeStyle = theme.bg;
  ctx.lineWidth = 1.5;
  for (const sp of spans.slice(1)) {
    ctx.beginPath();
    ctx.moveTo(x, y + sp.start * rh);
    ctx.lineTo(x + width, y + sp.start * rh);
    if (columns) {
      ctx.moveTo(x + sp.start * cw, y);
      ctx.lineTo(x + sp.start * cw, y + height);
    }
    ctx.stroke();
  }
  ctx.strokeStyle = theme.fg2;
  ctx.fillStyle = theme.fg;
  ctx.lineWidth = 1;
  ctx.font = `10px ${theme.font}`;
  const bx = x - margins.labelPx - 2;
  const by = y + height + 5 + margins.labelPx;
  for (const sp of spans) {
    if (sp.end - sp.start < 2) continue; // a group of one: its label already names it
    const y0 = y + sp.start * rh + 1;
    const y1 = y + sp.end * rh - 1;
    ctx.beginPath();
    ctx.moveTo(bx + 3, y0);
    ctx.lineTo(bx, y0);
    ctx.lineTo(bx, y1);
    ctx.lineTo(bx + 3, y1);
    ctx.stroke();
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    ctx.fillText(sp.name, bx - 4, (y0 + y1) / 2);
    if (columns) {
      const x0 = x + sp.start * cw + 1;
      const x1 = x + sp.end * cw - 1;
      ctx.beginPath();
      ctx.moveTo(x0, by - 3);
      ctx.lineTo(x0, by);
      ctx.lineTo(x1, by);
      ctx.lineTo(x1, by - 3);
      ctx.stroke();
      ctx.textAlign = "center";
      ctx.textBaseline = "top";
      ctx.fillText(sp.name, (x0 + x1) / 2, by + 3);
    }
  }
  ctx.restore();
}

/** Outline a rectangle in the accent colour. */
function outline(ctx, r, theme, width = 2) {
  ctx.save();
  ctx.strokeStyle = theme.accent;
  ctx.lineWidth = width;
  ctx.strokeRect(r.x - 1, r.y - 1, r.w + 2, r.h + 2);
  ctx.restore();
}

function render({ model, el }) {
  const life = viewLifecycle(model);
  const { on, listen } = life;
  const save = (changes) => {
    for (const [k, v] of Object.entries(changes)) model.set(k, v);
    model.save_changes();
  };

  // ----- DOM
  const seriesList = h("div", {});
  const seriesSummary = h("summary", {}, "series");
  const seriesMenu = h("details", { class: "tscope-series" }, seriesSummary, seriesList);
  const logBox = h("input", { type: "checkbox", "aria-label": "log scale" });
  const stepText = h("span", { class: "tscope-step" });
  const latestButton = h("button", { type: "button", title: "show the latest record" }, "latest");
  const blockSelect = h("select", { "aria-label": "block" });
  const downloads = downloadButtons({
    container: () => figure,
    theme: () => theme,
    name: () => ["spectrum", log() ? "log" : "linear"],
    csv: () => seriesCsv(),
  });
  const toolbar = h(
    "div",
    { class: "tscope-toolbar" },
    seriesMenu,
    h("label", {}, logBox, "log scale"),
    h("span", {}, "step: ", stepText, " ", latestButton),
    h("label", {}, "block", blockSelect),
    downloads.element,
  );
  const statusLine = jobStatusLine();
  const chartsPane = h("div", { class: "tscope-row tscope-charts" });
  const densityPane = h("div", { class: "tscope-panel tscope-density" });
  const normsCanvas = h("canvas", { class: "tscope-norms" });
  const normsPane = h("div", { class: "tscope-panel" }, h("h4", {}, "Hessian block norms ‖H_ab‖_F"), normsCanvas);
  const stepsCanvas = h("canvas", { class: "tscope-steps" });
  const stepsPane = h("div", { class: "tscope-panel" }, h("h4", {}, "λ_max of each Hessian block H_aa over training"), stepsCanvas);
  const typesPane = h("div", { class: "tscope-panel tscope-type-steps" });
  const stopButton = h("button", { type: "button", title: "stop after the Lanczos step in flight" }, "stop");
  const recomputeButton = h("button", { type: "button", title: "run again on the current weights" }, "recompute");
  const eigenStatus = h("div", { class: "tscope-status tscope-job-status", role: "status" });
  const eigenBody = h("div", {});
  const eigenPane = h(
    "div",
    { class: "tscope-panel tscope-eigen-pane" },
    h("h4", {}, "Top eigenvalues of the selected block H_aa"),
    h("div", { class: "tscope-toolbar" }, eigenStatus, stopButton, recomputeButton),
    eigenBody,
  );
  const figure = h(
    "div",
    { class: "tscope-figure" },
    h("div", { class: "tscope-row" }, chartsPane, densityPane),
    h("div", { class: "tscope-row" }, normsPane, stepsPane, eigenPane),
    h("div", { class: "tscope-row" }, typesPane),
  );
  const tooltip = h("div", { class: "tscope-tooltip" });
  const root = h(
    "div",
    { class: "tscope-spectrum tscope-root" },
    h("style", {}, CSS + pictureHidingCSS(model.get("picture_id"))),
    toolbar,
    statusLine,
    figure,
    tooltip,
  );
  el.append(root);

  // ----- view state (this render only)
  const scratch = document.createElement("canvas");
  const probe = document.createElement("canvas");
  probe.width = probe.height = 1;
  let theme = themeColors(root);
  let series = null; // decoded `series`
  let norms = null; // decoded `norms`
  let normsLayout = null;
  let stepsLayout = null;
  let paints = 0;

  const log = () => Boolean(model.get("log_y"));
  const steps = () => (series ? Array.from(series.steps.data) : []);
  const picked = () => model.get("picked_step");

  const showTooltip = (lines, event) => placeTooltip(tooltip, root, lines, event);
  const hideTooltip = () => {
    tooltip.style.display = "none";
  };

  // Redraws are coalesced: the change events of one message fire together, one paint follows.
  const dirty = new Set();
  const parts = {
    controls: drawControls,
    status: drawStatus,
    charts: drawCharts,
    density: drawDensity,
    norms: drawNorms,
    steps: drawSteps,
    types: drawTypeSteps,
    eigen: drawEigen,
  };
  function schedule(...names) {
    if (dirty.size === 0) {
      queueMicrotask(() => {
        if (life.closed) return;
        const todo = [...dirty];
        dirty.clear();
        theme = themeColors(root); // cheap, and right even if the view was drawn before it was attached
        for (const name of Object.keys(parts)) if (todo.includes(name)) parts[name]();
        paints += 1;
        root.dataset.paints = String(paints); // a marker for browser tests: bumps after every repaint
      });
    }
    for (const n of names) dirty.add(n);
  }
  const ALL = Object.keys(parts);

  // ----- toolbar
  function drawControls() {
    const options = model.get("series_options") ?? [];
    const selected = new Set(model.get("selected_series") ?? []);
    const key = JSON.stringify(options);
    if (seriesList.dataset.options !== key) {
      const titles = Object.fromEntries((model.get("panels") ?? []).map((p) => [p.key, p.title]));
      const children = [];
      let panel = null;
      options.forEach((o, k) => {
        if (o.panel !== panel) {
          panel = o.panel;
          children.push(h("h5", {}, titles[panel] ?? panel));
        }
        const box = h("input", { type: "checkbox", "data-key": o.key });
        const swatch = h("span", { style: `display:inline-block;width:10px;height:3px;background:${o.color ?? seriesColor(k)}` });
        children.push(h("label", {}, box, swatch, o.label));
      });
      seriesList.replaceChildren(...children);
      seriesList.dataset.options = key;
    }
    for (const box of seriesList.querySelectorAll("input[data-key]")) box.checked = selected.has(box.dataset.key);
    seriesSummary.textContent = `series (${selected.size} of ${options.length})`;
    logBox.checked = log();
    const p = picked();
    stepText.textContent = p === null || p === undefined ? "latest" : String(p);
    latestButton.disabled = p === null || p === undefined;
    const blocks = model.get("block_options") ?? [];
    const blockKey = JSON.stringify(blocks);
    if (blockSelect.dataset.options !== blockKey) {
      blockSelect.replaceChildren(h("option", { value: "" }, "—"), ...blocks.map((b, k) => h("option", { value: String(k) }, b)));
      blockSelect.dataset.options = blockKey;
    }
    const chosen = blocks.indexOf(model.get("selected_block"));
    blockSelect.value = chosen >= 0 ? String(chosen) : "";
    blockSelect.disabled = blocks.length === 0;
  }

  function drawStatus() {
    const source = model.get("source") === "tracker" ? "tracking" : "fixed history";
    if (!series || series.steps.data.length === 0) {
      statusLine.textContent = `${source} · waiting for the first record…`;
      root.dataset.records = "0";
      return;
    }
    const T = series.steps.data.length;
    const total = series.total === null || series.total === undefined ? "" : ` of ${series.total}`;
    const last = series.steps.data[T - 1];
    const lmax = series.values.lambda_max.data[T - 1];
    statusLine.textContent = `${source} · ${series.done}${total} records · latest step ${last} · λ_max ${formatValue(lmax)}`;
    root.dataset.records = String(T);
  }

  // Every recorded series as CSV, one line per record: the step, then each series of the series menu.
  function seriesCsv() {
    if (!series || series.steps.data.length === 0) return null;
    const T = series.steps.data.length;
    const columns = [["step", Array.from(series.steps.data)]];
    for (const o of model.get("series_options") ?? []) {
      const ys = valuesOf(o.key);
      if (ys.length === T) columns.push([o.label ?? o.key, Array.from(ys)]);
    }
    return columnsCsv(columns);
  }

  // ----- line charts
  function valuesOf(key) {
    if (key.startsWith(GRAD_NORM_PREFIX)) {
      const i = series.grad_norm_labels.indexOf(key.slice(GRAD_NORM_PREFIX.length));
      const T = series.steps.data.length;
      return i < 0 ? new Float32Array(T).fill(NaN) : matrixRow(series.grad_norms.data, T, i);
    }
    return series.values[key] ? series.values[key].data : [];
  }

  function drawCharts() {
    if (!series || series.steps.data.length === 0) {
      chartsPane.replaceChildren(h("p", { class: "tscope-hint" }, "waiting for the first record of the tracker…"));
      return;
    }
    const xs = steps();
    const options = model.get("series_options") ?? [];
    const panels = panelsOf(options, model.get("selected_series"), model.get("panels"));
    if (panels.length === 0) {
      chartsPane.replaceChildren(h("p", { class: "tscope-hint" }, "no series selected (see the series menu)"));
      return;
    }
    const p = picked();
    const drawn = panels.map((panel) => {
      const lines = optimiserLines(panel.series.map((sr) => {
        const ys = valuesOf(sr.key);
        let band;
        if (sr.key === "trace") {
          const se = series.values.trace_stderr.data;
          band = { lo: Array.from(ys, (v, k) => v - se[k]), hi: Array.from(ys, (v, k) => v + se[k]) };
        }
        // the colour Python decided for this series (figures.spectrum.series_options); the index rule as a fallback
        return { key: sr.key, label: sr.label, ys, color: options[sr.index]?.color ?? seriesColor(sr.index), band };
      }));
      return { panel, lines };
    }).filter((d) => d.lines.length > 0); // e.g. only Adam's series selected in an SGD run
    if (drawn.length === 0) {
      chartsPane.replaceChildren(h("p", { class: "tscope-hint" }, "the selected series have no values in this run"));
      return;
    }
    const charts = drawn.map(({ panel, lines }) => {
      const svg = multiLineChart({
        xs,
        series: lines,
        width: 400,
        height: 180,
        xLabel: "training step",
        yLabel: panel.yLabel,
        log: log(),
        markerX: p ?? null,
        theme,
        onHover: (k, event) => {
          if (k === null) return hideTooltip();
          showTooltip([`step ${xs[k]}`, ...lines.map((l) => `${l.label}: ${formatValue(l.ys[k])}`)], event);
        },
        onPick: (k) => save({ picked_step: xs[k] }),
      });
      return h("div", { class: "tscope-panel", "data-panel": panel.key }, h("h4", {}, panel.title), svg);
    });
    chartsPane.replaceChildren(...charts);
  }

  function drawDensity() {
    const d = decodeTree(model.get("density"));
    if (!d) {
      densityPane.replaceChildren(
        h("h4", {}, "spectral density (SLQ)"),
        h("p", { class: "tscope-hint" }, "no density recorded yet (SpectrumTracker(density_every=…))"),
      );
      delete densityPane.dataset.step;
      return;
    }
    const xs = Array.from(d.grid.data);
    const ys = log() ? floorDensity(d.values.data) : d.values.data;
    const note = d.picked !== null && d.picked !== undefined && d.picked !== d.step ? ` (nearest to the picked step ${d.picked})` : "";
    const svg = multiLineChart({
      xs,
      series: [{ label: "φ(λ)", ys, color: seriesColor(0) }],
      width: 400,
      height: 180,
      xLabel: "eigenvalue λ of ∇²L",
      yLabel: "density φ(λ)",
      log: log(),
      markerX: 0,
      theme,
      onHover: (k, event) => (k === null ? hideTooltip() : showTooltip([`λ = ${formatValue(xs[k])}`, `φ(λ) = ${formatValue(ys[k])}`], event)),
    });
    densityPane.replaceChildren(h("h4", {}, `spectral density at step ${d.step}${note}`), svg);
    densityPane.dataset.step = String(d.step);
  }

  // ----- heatmaps
  function paintMatrix(ctx, layout, values) {
    const domain = colorDomain(values, log());
    const rgba = fillRGBA(new Uint8ClampedArray(4 * values.length), values, colorIndexer(domain, { log: log() }), LUT, {
      nan: cssToRGBA(theme.nan, probe),
      nonpositive: cssToRGBA(theme.bg, probe),
    });
    paintGrid(ctx, layout, rgba, scratch);
    return domain;
  }

  function drawNorms() {
    if (!norms) {
      normsLayout = null;
      normsCanvas.style.display = "none";
      normsPane.querySelector(".tscope-hint")?.remove();
      normsPane.append(h("p", { class: "tscope-hint" }, "no block norms: widget.set_block_norms(block_norms(model, data))"));
      return;
    }
    normsPane.querySelector(".tscope-hint")?.remove();
    normsCanvas.style.display = "";
    const labels = norms.labels;
    const G = labels.length;
    const spans = groupSpans(labels);
    const grouped = hasGroups(spans);
    const margins = blockMapMargins(labels);
    normsLayout = heatmapLayout({ rows: G, cols: G, maxSize: 360, maxCell: 28, margin: margins });
    const L = normsLayout;
    const ctx = sizeCanvas(normsCanvas, L.totalWidth, Math.max(L.totalHeight, L.y + 80 + margins.bottom), theme.bg);
    const domain = paintMatrix(ctx, L, norms.frobenius.data);
    const a = labels.indexOf(model.get("selected_block"));
    if (a >= 0) outline(ctx, cellRect(L, a, a), theme);
    const name = (i) => (grouped ? memberOf(labels[i]) : labels[i]);
    drawAxes(ctx, L, { theme, xTitle: "block b", yTitle: "block a", rowLabel: name, colLabel: name });
    if (grouped) drawGroups(ctx, L, spans, margins, theme);
    drawColorbar(ctx, {
      x: L.x + L.width + 12,
      y: L.y,
      width: 12,
      height: Math.max(L.height, 80),
      lut: LUT,
      domain,
      log: log(),
      title: `‖H_ab‖_F${norms.exact ? "" : " (estimate)"}`,
      theme,
    });
    normsCanvas.dataset.rows = String(G);
    normsCanvas.dataset.plot = `${L.x},${L.y},${L.width},${L.height}`; // for browser tests: the cells' area
  }

  function drawSteps() {
    const G = series && series.block_lambda_max ? series.block_labels.length : 0;
    const T = series ? series.steps.data.length : 0;
    if (G === 0 || T === 0) {
      stepsLayout = null;
      stepsPane.style.display = "none";
      return;
    }
    stepsPane.style.display = "";
    const labels = series.block_labels;
    const margins = blockMapMargins(labels, { grouping: false });
    stepsLayout = stripLayout({
      rows: G,
      cols: T,
      width: 420,
      height: 220,
      margin: { left: margins.left, top: 8, right: 96, bottom: 70 },
    });
    const L = stepsLayout;
    const ctx = sizeCanvas(stepsCanvas, L.totalWidth, Math.max(L.totalHeight, L.y + 80 + 70), theme.bg);
    const domain = paintMatrix(ctx, L, series.block_lambda_max.data);
    const xs = series.steps.data;
    const p = picked();
    const j = p === null || p === undefined ? -1 : Array.prototype.indexOf.call(xs, p);
    if (j >= 0) outline(ctx, { x: L.x + (j * L.width) / T, y: L.y, w: L.width / T, h: L.height }, theme, 1.5);
    const a = labels.indexOf(model.get("selected_block"));
    if (a >= 0) outline(ctx, { x: L.x, y: L.y + (a * L.height) / G, w: L.width, h: L.height / G }, theme, 1.5);
    drawAxes(ctx, L, {
      theme,
      xTitle: "training step",
      yTitle: "block a",
      rowLabel: (i) => labels[i],
      colLabel: (k) => String(xs[k]),
      spacingPx: 14,
    });
    drawColorbar(ctx, {
      x: L.x + L.width + 12,
      y: L.y,
      width: 12,
      height: Math.max(L.height, 80),
      lut: LUT,
      domain,
      log: log(),
      title: "λ_max(H_aa)",
      theme,
    });
    stepsCanvas.dataset.rows = String(G);
    stepsCanvas.dataset.cols = String(T);
    stepsCanvas.dataset.plot = `${L.x},${L.y},${L.width},${L.height}`; // for browser tests: the cells' area
  }

  // Sharpness by block type over training (figures.block_types.type_steps_chart): tracked blocks of one group each.
  function drawTypeSteps() {
    const lines = series ? typeStepLines(series.type_sharpness) : [];
    if (lines.length === 0) {
      typesPane.replaceChildren();
      typesPane.style.display = "none";
      typesPane.dataset.types = "0";
      return;
    }
    typesPane.style.display = "";
    const xs = steps();
    const svg = multiLineChart({
      xs,
      series: lines,
      width: 400,
      height: 180,
      xLabel: "training step",
      yLabel: "mean λ_max(H_aa)",
      log: log(),
      markerX: picked() ?? null,
      theme,
      onHover: (k, event) => (k === null ? hideTooltip() : showTooltip([`step ${xs[k]}`, ...lines.map((l) => `${l.label}: ${formatValue(l.ys[k])}`)], event)),
      onPick: (k) => save({ picked_step: xs[k] }),
    });
    typesPane.replaceChildren(h("h4", {}, "sharpness by block type (Sharpness Disparity order)"), svg);
    typesPane.dataset.types = String(lines.length);
  }

  function pointerCell(canvas, layout, event) {
    if (!layout) return null;
    const box = canvas.getBoundingClientRect();
    const width = parseFloat(canvas.style.width) || box.width;
    const height = parseFloat(canvas.style.height) || box.height;
    return cellAt(layout, ((event.clientX - box.left) * width) / box.width, ((event.clientY - box.top) * height) / box.height);
  }

  on(normsCanvas, "mousemove", (event) => {
    const c = norms && pointerCell(normsCanvas, normsLayout, event);
    if (!c) return hideTooltip();
    const G = norms.labels.length;
    const k = c.i * G + c.j;
    const lines = [
      `a: ${norms.labels[c.i]}`,
      `b: ${norms.labels[c.j]}`,
      `‖H_ab‖_F = ${formatValue(norms.frobenius.data[k])}${norms.frobenius_stderr ? ` ± ${formatValue(norms.frobenius_stderr.data[k])}` : ""}`,
    ];
    if (c.i === c.j && norms.spectral) lines.push(`‖H_aa‖₂ = ${formatValue(norms.spectral.data[c.i])}`);
    lines.push(`click: top eigenvalues of H_aa (${norms.labels[c.i]})`);
    showTooltip(lines, event);
  });
  on(normsCanvas, "mouseleave", hideTooltip);
  on(normsCanvas, "click", (event) => {
    const c = norms && pointerCell(normsCanvas, normsLayout, event);
    if (c) save({ selected_block: norms.labels[c.i] });
  });
  on(stepsCanvas, "mousemove", (event) => {
    const c = series && pointerCell(stepsCanvas, stepsLayout, event);
    if (!c) return hideTooltip();
    const T = series.steps.data.length;
    showTooltip(
      [
        `block ${series.block_labels[c.i]}`,
        `step ${series.steps.data[c.j]}`,
        `λ_max(H_aa) = ${formatValue(series.block_lambda_max.data[c.i * T + c.j])}`,
        "click: pick this step and this block",
      ],
      event,
    );
  });
  on(stepsCanvas, "mouseleave", hideTooltip);
  on(stepsCanvas, "click", (event) => {
    const c = series && pointerCell(stepsCanvas, stepsLayout, event);
    if (c) save({ picked_step: series.steps.data[c.j], selected_block: series.block_labels[c.i] });
  });

  // ----- the selected block's eigenvalues
  function drawEigen() {
    const label = model.get("selected_block");
    const eigen = model.get("eigen");
    const job = Object.fromEntries(JOB_TRAITS.map((k) => [k.slice(4), model.get(k)]));
    const running = job.status === "running" || job.status === "pending" || job.status === "paused";
    stopButton.disabled = !running;
    recomputeButton.disabled = !label || !model.get("can_compute_blocks") || running;
    eigenStatus.textContent = job.status === "idle" ? "" : statusText(job, "Lanczos steps");
    eigenStatus.classList.toggle("tscope-error", job.status === "error");
    eigenPane.dataset.status = job.status;
    if (!label) {
      eigenBody.replaceChildren(
        h(
          "p",
          { class: "tscope-hint" },
          model.get("can_compute_blocks")
            ? "Click a block in a heatmap, or choose one in the block menu: Lanczos finds its top eigenvalues on the model's current weights, in the background."
            : "Pick a block to see its eigenvalues (needs the model and data: a tracker, or adapter= and data=).",
        ),
      );
      delete eigenPane.dataset.block;
      return;
    }
    const children = [];
    const mine = eigen && eigen.label === label ? eigen : null;
    const at = mine && mine.step !== null && mine.step !== undefined ? ` · weights of step ${mine.step}` : "";
    children.push(h("p", { class: "tscope-caption" }, `block ${label}${at}`));
    const note = weightsNote(mine ? mine.step : null, picked());
    if (note) children.push(h("p", { class: "tscope-weights-note", role: "note" }, note));
    if (mine && (mine.status === "unavailable" || (mine.status === "error" && !mine.eigenvalues))) {
      children.push(h("p", { class: "tscope-hint" }, mine.message || mine.status));
    }
    const rows = eigenRows(mine);
    if (rows.length) {
      children.push(
        h(
          "table",
          { class: "tscope-eigen" },
          h("tr", {}, h("th", {}, "k"), h("th", {}, "λ_k(H_aa)"), h("th", {}, "residual ‖Hv − λv‖"), h("th", {}, "relative")),
          ...rows.map((r) => h("tr", {}, h("td", {}, String(r.k)), h("td", {}, formatValue(r.value)), h("td", {}, formatValue(r.residual)), h("td", {}, formatValue(r.relative)))),
        ),
      );
      if (mine.converged === false && mine.status === "done") children.push(h("p", { class: "tscope-caption" }, "not converged to the tolerance within the iteration limit"));
    } else if (mine && mine.status === "running") {
      children.push(h("p", { class: "tscope-hint" }, "starting Lanczos…"));
    }
    if (norms && norms.spectral) {
      const a = norms.labels.indexOf(label);
      if (a >= 0) children.push(h("p", { class: "tscope-caption" }, `‖H_aa‖₂ from the block norms: ${formatValue(norms.spectral.data[a])}`));
    }
    eigenBody.replaceChildren(...children);
    eigenPane.dataset.block = label;
    eigenPane.dataset.values = String(rows.length);
  }

  // ----- controls
  on(seriesList, "change", () => {
    const keys = [...seriesList.querySelectorAll("input[data-key]")].filter((b) => b.checked).map((b) => b.dataset.key);
    save({ selected_series: keys });
  });
  on(logBox, "change", () => save({ log_y: logBox.checked }));
  on(latestButton, "click", () => save({ picked_step: null }));
  on(blockSelect, "change", () => {
    const blocks = model.get("block_options") ?? [];
    const value = blockSelect.value === "" ? null : blocks[Number(blockSelect.value)];
    if (value !== undefined) save({ selected_block: value });
  });
  downloads.wire(on);
  on(stopButton, "click", () => model.send({ type: "command", command: "stop" }));
  on(recomputeButton, "click", () => model.send({ type: "command", command: "recompute" }));

  // ----- model events
  function readSeries() {
    series = decodeTree(model.get("series"));
  }
  function readNorms() {
    norms = decodeTree(model.get("norms"));
  }
  listen("change:series", () => {
    readSeries();
    schedule("status", "charts", "steps", "types");
  });
  listen("change:density", () => schedule("density"));
  listen("change:norms", () => {
    readNorms();
    schedule("norms", "eigen");
  });
  listen("change:eigen", () => schedule("eigen"));
  listen("change:log_y", () => schedule("controls", "charts", "density", "norms", "steps", "types"));
  listen("change:picked_step", () => schedule("controls", "charts", "steps", "types", "eigen"));
  listen("change:selected_block", () => schedule("controls", "norms", "steps", "eigen"));
  for (const name of ["selected_series", "series_options", "panels"]) listen(`change:${name}`, () => schedule("controls", "charts"));
  listen("change:block_options", () => schedule("controls"));
  listen("change:source", () => schedule("status"));
  listen("change:can_compute_blocks", () => schedule("eigen"));
  for (const name of JOB_TRAITS) listen(`change:${name}`, () => schedule("eigen"));


  readSeries();
  readNorms();
  schedule(...ALL);

  life.repaintWhenNeeded(root, () => schedule(...ALL));
  return life.dispose;
}

export default { render };
