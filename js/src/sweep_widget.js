// Front end of tscope_widgets.widgets.SweepWidget (anywidget ESM module).
//
// Python owns the data: `chart` (tscope_widgets/widgets/_sweep_state.py chart_wire: ranges, groups with runs,
// means over seeds, error bars and fits, guides, marker), the choices `x_options` / `summary_options`, and
// the job's status. This view draws them as an SVG log-log chart (the same elements as the notebook picture,
// tscope_widgets/figures/svg_sweep.py) and writes back only view state: x_axis, summary, fit_range; pause /
// resume / stop go as custom messages. Every render() returns a cleanup, so a widget can be shown twice.
//
// Markers for browser tests: `.tscope-sweep[data-status][data-runs][data-paints]`, and on the chart
// `svg.tscope-sweep-chart[data-groups][data-means]`.
import { baseCss } from "./lib/style.js";
import { viewLifecycle } from "./lib/view.js";
import { h, s, fillSelect } from "./lib/dom.js";
import { pictureHidingCSS } from "./lib/picture.js";
import { jobControls } from "./lib/job_controls.js";
import { formatValue } from "./lib/scales.js";
import { themeColors } from "./lib/theme.js";
import { downloadButtons } from "./lib/download.js";
import { sweepCsv, sweepGeometry } from "./lib/sweep_chart.js";

const WIDTH = 560;
const HEIGHT = 320;

const CSS = `${baseCss(".tscope-sweep")}
.tscope-sweep { position: relative; }
.tscope-sweep input.tscope-range { width: 6em; font: inherit; }
.tscope-sweep svg.tscope-sweep-chart { display: block; overflow: visible; }
.tscope-sweep table.tscope-fits { border-collapse: collapse; font-size: 12px; font-variant-numeric: tabular-nums; margin-top: 4px; }
.tscope-sweep table.tscope-fits th, .tscope-sweep table.tscope-fits td { padding: 1px 8px; text-align: right;
  border-bottom: 1px solid var(--jp-border-color2, #e0e0e0); }
.tscope-sweep table.tscope-fits td:first-child { text-align: left; }
.tscope-sweep .tscope-caption { color: var(--jp-ui-font-color2, #616161); font-size: 11px; margin: 4px 0; }
`;

/** A number from a text box: positive and finite, or null (empty or not a number). */
function positiveOrNull(text) {
  const v = Number(text);
  return text.trim() !== "" && Number.isFinite(v) && v > 0 ? v : null;
}

function render({ model, el }) {
  const life = viewLifecycle(model);
  const { on, listen } = life;
  let theme = null;
  let paints = 0;

  const xSelect = h("select", { "aria-label": "x axis" });
  const ySelect = h("select", { "aria-label": "summary" });
  const fitLo = h("input", { class: "tscope-range", type: "text", "aria-label": "fit from x", placeholder: "from" });
  const fitHi = h("input", { class: "tscope-range", type: "text", "aria-label": "fit to x", placeholder: "to" });
  const fitAll = h("button", { type: "button", title: "fit every run" }, "all");
  const job = jobControls({ unit: "run", keeps: "the runs done", counted: "runs" });
  const chartHost = h("div", { class: "tscope-plot" });
  const downloads = downloadButtons({
    container: () => chartHost,
    theme: () => theme,
    name: () => ["sweep", model.get("summary") ?? "", model.get("x_axis") ?? ""],
    csv: () => sweepCsv(model.get("chart")),
  });
  const fitsTable = h("table", { class: "tscope-fits" });
  const caption = h("p", { class: "tscope-caption" });
  const root = h(
    "div",
    { class: "tscope-sweep tscope-root" },
    h("style", {}, CSS + pictureHidingCSS(model.get("picture_id"))),
    h("div", { class: "tscope-toolbar" },
      h("label", {}, "y", ySelect),
      h("label", {}, "x", xSelect),
      h("label", {}, "fit on x in", fitLo, "–", fitHi, fitAll),
      job.buttons,
      downloads.element),
    job.statusLine,
    chartHost,
    fitsTable,
    caption,
  );
  el.append(root);

  // ----- writes back (view state only)
  on(xSelect, "change", () => {
    const v = model.get("x_options")[Number(xSelect.value)];
    if (v !== undefined) { model.set("x_axis", v); model.save_changes(); }
  });
  on(ySelect, "change", () => {
    const v = model.get("summary_options")[Number(ySelect.value)];
    if (v !== undefined) { model.set("summary", v); model.save_changes(); }
  });
  const sendRange = () => {
    const lo = positiveOrNull(fitLo.value);
    const hi = positiveOrNull(fitHi.value);
    if (lo === null || hi === null || !(lo < hi)) return; // Python checks it again
    model.set("fit_range", [lo, hi]);
    model.save_changes();
  };
  on(fitLo, "change", sendRange);
  on(fitHi, "change", sendRange);
  on(fitAll, "click", () => { model.set("fit_range", null); model.save_changes(); });
  job.wire(model, life, () => job.draw(model, root));
  downloads.wire(on);

  // ----- drawing
  function drawControls() {
    fillSelect(xSelect, model.get("x_options"), model.get("x_axis"), String);
    fillSelect(ySelect, model.get("summary_options"), model.get("summary"), String);
    const range = model.get("fit_range");
    fitLo.value = range ? String(range[0]) : "";
    fitHi.value = range ? String(range[1]) : "";
  }

  function drawChart() {
    theme = themeColors(root);
    const chart = model.get("chart");
    const svg = s("svg", { class: "tscope-sweep-chart", width: WIDTH, height: HEIGHT });
    const geo = sweepGeometry(chart, WIDTH, HEIGHT);
    let means = 0;
    if (chart) svg.append(s("text", { x: 60, y: 12, fill: theme.fg, "font-weight": 600, "font-size": 11 }, chart.title));
    if (geo === null) {
      svg.append(s("text", { x: WIDTH / 2, y: HEIGHT / 2, "text-anchor": "middle", fill: theme.fg2 }, "waiting for the first finished run…"));
    } else {
      const { plot } = geo;
      const bottom = plot.y + plot.h;
      svg.append(s("path", { d: `M${plot.x},${plot.y}V${bottom}H${plot.x + plot.w}`, fill: "none", stroke: theme.border }));
      for (const [v, px] of geo.xTicks) {
        svg.append(s("line", { x1: px, x2: px, y1: bottom, y2: bottom + 4, stroke: theme.border }),
          s("text", { x: px, y: bottom + 14, "text-anchor": "middle", fill: theme.fg, "font-size": 10 }, formatValue(v)));
      }
      for (const [v, py] of geo.yTicks) {
        svg.append(s("line", { x1: plot.x - 4, x2: plot.x, y1: py, y2: py, stroke: theme.border }),
          s("text", { x: plot.x - 6, y: py + 3, "text-anchor": "end", fill: theme.fg, "font-size": 10 }, formatValue(v)));
      }
      svg.append(s("text", { x: plot.x + plot.w / 2, y: bottom + 30, "text-anchor": "middle", fill: theme.fg, "font-size": 11 }, `${chart.x_label} (log)`),
        s("text", { transform: `translate(12,${plot.y + plot.h / 2}) rotate(-90)`, "text-anchor": "middle", fill: theme.fg, "font-size": 11 }, `${chart.y_label} (log)`));
      if (geo.marker !== null) svg.append(s("line", { class: "tscope-marker", x1: geo.marker, x2: geo.marker, y1: plot.y, y2: bottom, stroke: theme.fg2, "stroke-dasharray": "3 2" }));
      for (const g of geo.guides) svg.append(s("line", { class: "tscope-guide", ...g, label: null, color: null, stroke: g.color, "stroke-dasharray": "5 3" }));
      for (const g of geo.groups) {
        const group = s("g", { class: "tscope-group", "data-key": g.key });
        for (const [cx, cy] of g.runs) group.append(s("circle", { class: "tscope-run", cx, cy, r: 1.8, fill: "none", stroke: g.color, "stroke-opacity": 0.6 }));
        if (g.bars.length) group.append(s("path", { class: "tscope-errorbars", d: g.bars.map(([x, lo, hi]) => `M${x},${lo}V${hi}`).join(""), stroke: g.color, fill: "none" }));
        for (const [cx, cy] of g.means) group.append(s("circle", { class: "tscope-mean", cx, cy, r: 3, fill: g.color }));
        if (g.fit) group.append(s("path", { class: "tscope-fit", d: g.fit, stroke: g.color, "stroke-width": 1.5, fill: "none" }));
        means += g.means.length;
        svg.append(group);
      }
      const legend = s("g", { class: "tscope-legend" });
      [...geo.groups, ...geo.guides].forEach((g, k) => {
        const y = plot.y + 10 + 12 * k;
        legend.append(s("rect", { x: plot.x + 6, y: y - 5, width: 10, height: 3, fill: g.color }),
          s("text", { x: plot.x + 20, y, fill: theme.fg, "font-size": 10 }, g.label));
      });
      svg.append(legend);
    }
    svg.dataset.groups = String(geo ? geo.groups.length : 0);
    svg.dataset.means = String(means);
    chartHost.replaceChildren(svg);
    drawFits(chart);
    root.dataset.runs = String(model.get("runs") ?? 0);
    root.dataset.paints = String(++paints);
  }

  function drawFits(chart) {
    const fmt = (v) => (v === null || v === undefined ? "–" : formatValue(v));
    const level = chart ? `${Math.round(100 * chart.confidence)}%` : "";
    const rows = (chart?.groups ?? []).map((g) => h("tr", {},
      h("td", {}, g.key), h("td", {}, g.fit ? fmt(g.fit.exponent) : "–"),
      h("td", {}, g.fit ? `[${fmt(g.fit.ci_low)}, ${fmt(g.fit.ci_high)}]` : "–"),
      h("td", {}, g.fit ? fmt(g.fit.r_squared) : "–"), h("td", {}, String(g.points_x.length))));
    fitsTable.replaceChildren(h("tr", {}, h("th", {}, "group"), h("th", {}, "exponent a"), h("th", {}, `${level} interval`),
      h("th", {}, "R²"), h("th", {}, "runs")), ...rows);
    caption.textContent = chart && chart.dropped ? `${chart.dropped} runs left out (values not positive: no place on a log axis)` : "";
  }

  listen("change:chart", drawChart);
  listen("change:runs", drawChart);
  for (const name of ["x_options", "summary_options", "x_axis", "summary", "fit_range"]) listen(`change:${name}`, drawControls);
  drawControls();
  job.draw(model, root);
  drawChart();
  life.repaintWhenNeeded(root, drawChart);
  return life.dispose;
}

export default { render };
