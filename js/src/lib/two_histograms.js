// Two samples of one cell (run a and run b) as overlaid histograms on common bins, an SVG chart.
import { scaleLinear } from "d3-scale";
import { s } from "./dom.js";
import { appendAxes } from "./histogram.js";
import { sharedBins } from "./comparison.js";
import { formatValue } from "./scales.js";

export const RUN_COLORS = Object.freeze(["#d6604d", "#4393c3"]); // run a (red: a > b in rdbu), run b (blue)

/**
 * Histograms of `a` and `b` on the same bins, half-transparent bars, dashed lines at `means`, a legend.
 * @param {ArrayLike<number>} a values of run a; `b` likewise
 * @param {{names: string[], means?: (number|null)[], xLabel?: string, theme: object}} options
 */
export function twoHistogramChart(a, b, { names, means = [null, null], xLabel = "", width = 300, height = 150, theme }) {
  const m = { left: 42, right: 10, top: 18, bottom: 30 };
  const svg = s("svg", { width, height, class: "tscope-chart tscope-two-histograms" });
  const { edges, countsA, countsB } = sharedBins(a, b);
  svg.dataset.samples = `${a.length},${b.length}`;
  if (edges.length === 0) {
    svg.append(s("text", { x: width / 2, y: height / 2, "text-anchor": "middle", fill: theme.fg }, "no samples in the reservoirs"));
    return svg;
  }
  const x = scaleLinear().domain([edges[0], edges[edges.length - 1]]).range([m.left, width - m.right]);
  const top = Math.max(1, ...countsA, ...countsB);
  const y = scaleLinear().domain([0, top]).nice().range([height - m.bottom, m.top]);
  [countsA, countsB].forEach((counts, r) => {
    counts.forEach((c, k) => {
      if (c === 0) return;
      const x0 = x(edges[k]);
      const x1 = x(edges[k + 1]);
      svg.append(
        s("rect", { x: x0 + 0.5, y: y(c), width: Math.max(1, x1 - x0 - 1), height: y(0) - y(c), fill: RUN_COLORS[r], opacity: 0.5 },
          s("title", {}, `${names[r]}: ${formatValue(edges[k])} – ${formatValue(edges[k + 1])}: ${c}`)),
      );
    });
  });
  means.forEach((mean, r) => {
    if (mean === null || mean === undefined || !Number.isFinite(mean)) return;
    svg.append(s("line", { x1: x(mean), x2: x(mean), y1: m.top, y2: height - m.bottom, stroke: RUN_COLORS[r], "stroke-width": 1.5, "stroke-dasharray": "4 2" }));
  });
  names.forEach((name, r) => {
    const lx = m.left + r * 120;
    svg.append(s("rect", { x: lx, y: 3, width: 10, height: 10, fill: RUN_COLORS[r], opacity: 0.7 }));
    svg.append(s("text", { x: lx + 14, y: 12, fill: theme.fg, "font-size": 10 }, `${name} (${r === 0 ? a.length : b.length})`));
  });
  appendAxes(svg, x, y, { width, height, m, xLabel, yLabel: "samples", theme });
  return svg;
}
