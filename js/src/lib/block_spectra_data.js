// Pure helpers of the block-spectra widget (tscope_widgets/widgets/block_spectra.py): which density lines
// to draw and in which colour, the shared y range of charts side by side, the sharpness-by-type points in
// the Sharpness Disparity order and the rows of its table. They follow tscope_widgets/figures/block_spectra.py
// and figures/block_types.py (TYPE_ORDER, TYPE_NAMES, colours by index). No DOM: runs under `node --test`.
import { seriesColor } from "./multiline.js";
import { floorDensity, jointExtent, matrixRow } from "./spectrum_data.js";

// The Sharpness Disparity order (Wang et al. 2025), then the output head (figures/block_types.py TYPE_ORDER).
export const TYPE_ORDER = ["embed", "qk", "mlp", "vo", "norm", "head"];
export const TYPE_NAMES = { embed: "Emb", qk: "QK", mlp: "FFN", vo: "VO", norm: "Norm", head: "head" };

/**
 * The density lines of the selected blocks, in block order, each in its block's colour (its index among
 * all blocks), floored at 1e-6 of its peak on a log axis (figures.block_spectra.block_density_chart).
 * @param {string[]} labels all blocks (G)
 * @param {ArrayLike<number>} densities row-major [G, X]
 * @param {string[]} selected
 * @param {boolean} log
 * @returns {{label: string, index: number, ys: ArrayLike<number>, color: string}[]}
 */
export function densityLines(labels, densities, selected, log) {
  const G = labels.length;
  if (G === 0) return [];
  if (densities.length % G !== 0) throw new RangeError(`${densities.length} density values for ${G} blocks`);
  const X = densities.length / G;
  const chosen = new Set(selected ?? []);
  const out = [];
  labels.forEach((label, index) => {
    if (!chosen.has(label)) return;
    const row = matrixRow(densities, X, index);
    out.push({ label, index, ys: log ? floorDensity(row) : row, color: seriesColor(index) });
  });
  return out;
}

/** One y range for charts side by side: the joint extent of every line (null when nothing is drawable). */
export function sharedDomain(lines, log) {
  return jointExtent(lines.map((l) => l.ys), log);
}

/**
 * Sharpness by type as points: the types present in the Sharpness Disparity order at x = 0, 1, ...,
 * each a series of one point in its fixed colour (figures.block_types.type_points_chart).
 * @param {{types: string[], values: number[]}} t
 * @returns {{xs: number[], names: string[], series: {key: string, label: string, ys: number[], color: string}[]}}
 */
export function typePoints(t) {
  if (!t || !Array.isArray(t.types)) return { xs: [], names: [], series: [] };
  if (t.values.length !== t.types.length) throw new RangeError(`${t.values.length} values for ${t.types.length} types`);
  const present = TYPE_ORDER.filter((name) => t.types.includes(name));
  const xs = present.map((_, k) => k);
  const series = present.map((name, k) => {
    const ys = present.map(() => NaN);
    ys[k] = t.values[t.types.indexOf(name)];
    return { key: `type:${name}`, label: `S(${TYPE_NAMES[name]})`, ys, color: seriesColor(TYPE_ORDER.indexOf(name)) };
  });
  return { xs, names: present.map((name) => TYPE_NAMES[name]), series };
}

/**
 * Rows of the type table: type, blocks, S(t), the ratio to the previous type present in the order
 * (figures.block_types.type_table_html), and the verdict.
 * @param {{types: string[], values: number[], counts: number[], ratios: Object<string, number>, follows: boolean}} t
 */
export function typeRows(t) {
  if (!t) return { rows: [], follows: null };
  const present = TYPE_ORDER.filter((name) => t.types.includes(name));
  const rows = present.map((name) => {
    const k = t.types.indexOf(name);
    const key = Object.keys(t.ratios ?? {}).find((r) => r.split("/")[0] === name);
    return { type: name, name: TYPE_NAMES[name], count: t.counts[k], value: t.values[k], ratio: key === undefined ? null : t.ratios[key] };
  });
  return { rows, follows: Boolean(t.follows) };
}

/** Hover text of a cell of the distance matrix. */
export function distanceText(labels, distances, i, j) {
  const G = labels.length;
  return [`a: ${labels[i]}`, `b: ${labels[j]}`, `JS(a, b) = ${Number(distances[i * G + j]).toPrecision(3)}`];
}

/**
 * The sharpness by block type over training steps as line series (figures.block_types.type_steps_chart):
 * one line per type, in the order given (Python sends the Sharpness Disparity order), in the type's colour.
 * @param {{types: string[], values: {data: ArrayLike<number>, shape: number[]}}|null} t values [Ty, T]
 * @returns {{key: string, label: string, ys: number[], color: string}[]}
 */
export function typeStepLines(t) {
  if (!t || !t.values) return [];
  const [Ty, T] = t.values.shape;
  if (Ty !== t.types.length) throw new RangeError(`${Ty} rows of values for ${t.types.length} types`);
  return t.types.map((name, k) => ({
    key: `type:${name}`,
    label: `S(${TYPE_NAMES[name] ?? name})`,
    ys: matrixRow(t.values.data, T, k),
    color: seriesColor(Math.max(0, TYPE_ORDER.indexOf(name))),
  }));
}
