// Pure helpers of the attention explorer (js/src/attention_explorer.js): names of maps and measures, the
// correlation caption, the linked tooltip of the two maps, the colour rule of the head grid, the spectra of a
// head as chart series, and click toggling. Python: tscope_widgets/widgets/_attention_state.py and
// tscope_widgets/figures/attention.py (same names and rules).
import { formatValue } from "./scales.js";
import { positionLabel } from "./axes.js";

/** "head2" -> "head 2"; "head mean" and "rollout" as they are (figures.attention.map_title). */
export function mapTitle(label) {
  const m = /^head(\d+)$/.exec(String(label));
  return m ? `head ${m[1]}` : String(label);
}

/** Short names of the rank measures (titles come from Python's `measure_titles`). */
export function measureName(measure) {
  return String(measure).replace(/_/g, " ");
}

/** "W_QK" for "qk". */
export function kindTitle(kind) {
  return `W_${String(kind).toUpperCase()}`;
}

/** The correlation line of a pane: ρ, its interval and what it is over. */
export function correlationText(pane) {
  if (!pane) return "";
  const f = (x) => (Number.isFinite(x) ? x.toFixed(3) : "–");
  const pct = Number.isFinite(pane.confidence) ? `${+(100 * pane.confidence).toFixed(1)}%` : "";
  return (
    `Spearman ρ(${mapTitle(pane.map)}, sensitivity) = ${f(pane.rho)} [${f(pane.low)}, ${f(pane.high)}] ` +
    `over ${pane.cells} off-diagonal cells of ${pane.samples} sequences (${pct} bootstrap interval)`
  );
}

/**
 * Tooltip lines of cell (i, j): both maps' values, whichever map the pointer is over.
 * @param {number} i query (output) position
 * @param {number} j key (input) position
 * @param {{attention: ArrayLike<number>, sensitivity: ArrayLike<number>}} maps decoded [S, S] arrays (row-major)
 * @param {number} S positions
 * @param {string} label the attention map's name
 * @param {string[]} tokens position labels
 */
export function cellLines(i, j, maps, S, label, tokens) {
  const k = i * S + j;
  const what = label === "rollout" ? "rollout" : `${mapTitle(label)} attention`;
  return [
    `query ${positionLabel(i, tokens, 24)}`,
    `key   ${positionLabel(j, tokens, 24)}`,
    `${what}: ${formatValue(maps.attention[k])}`,
    `sensitivity s_ij: ${formatValue(maps.sensitivity[k])}`,
  ];
}

/** Log colours for the condition number (it spans decades), linear for the effective ranks. */
export function gridLog(measure, values) {
  if (measure !== "condition_number") return false;
  for (const v of values) if (Number.isFinite(v) && v > 0) return true;
  return false;
}

/**
 * A head's singular values as series for a multi-line chart: x = 1..r, one series per kind in `kinds`.
 * @param {{kinds: string[], singular_values: Object<string, {data: ArrayLike<number>}>}} head decoded detail
 * @param {(k: number) => string} color series colour by index
 */
export function spectraSeries(head, color) {
  if (!head || !head.singular_values) return { xs: [], series: [] };
  const kinds = head.kinds.filter((k) => head.singular_values[k]);
  const r = Math.max(0, ...kinds.map((k) => head.singular_values[k].data.length));
  const xs = Array.from({ length: r }, (_, k) => k + 1);
  const series = kinds.map((k, n) => ({
    label: kindTitle(k),
    ys: Array.from(head.singular_values[k].data),
    color: color(n),
  }));
  return { xs, series };
}

/** The new selection after clicking `next`: null when it is already selected (a second click clears). */
export function toggled(current, next) {
  if (!next) return current ?? null;
  const same = Array.isArray(current) && current.length === next.length && current.every((c, k) => c === next[k]);
  return same ? null : next;
}
