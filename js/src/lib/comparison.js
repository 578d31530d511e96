// Pure pieces of the comparison view (js/src/comparison_explorer.js): fading the cells that are not
// significant, the shared colour scale of the two mean maps, and the text about one tested cell.
import { colorRange, formatValue } from "./scales.js";

export const FADED_ALPHA = 0.2; // opacity of a faded cell, as figures/charts.py FADED_ALPHA
export const CORRECTIONS = Object.freeze(["fdr_bh", "bonferroni", null]);
export const CORRECTION_TITLES = Object.freeze({ fdr_bh: "Benjamini–Hochberg (FDR)", bonferroni: "Bonferroni", null: "none" });
export const SHOWN_TITLES = Object.freeze({ difference: "difference", log_ratio: "log ratio", effect_size: "effect size (g)" });

/** The colour-bar title of the diverging map: `a − b`, `ln(a / b)` or `Hedges' g (a vs b)`. */
export function shownTitle(shown, [a, b]) {
  if (shown === "log_ratio") return `ln(${a} / ${b})`;
  if (shown === "effect_size") return `Hedges' g (${a} vs ${b})`;
  return `${a} − ${b}`;
}

/**
 * Blend the RGBA bytes of every tested cell that is not significant towards the background (opacity
 * `alpha`), in place. A cell counts as tested where `values[k]` is finite (untested cells keep their
 * NaN colour).
 * @param {Uint8ClampedArray} rgba 4 bytes per cell, row-major
 * @param {ArrayLike<number>} values the drawn values (NaN: not tested)
 * @param {ArrayLike<number>} significant 1 where q < alpha, 0 elsewhere
 * @param {number[]} background RGBA of the page behind the map
 * @returns {number} the number of faded cells
 */
export function fadeRGBA(rgba, values, significant, background, alpha = FADED_ALPHA) {
  const n = values.length;
  if (rgba.length !== 4 * n) throw new RangeError(`need ${4 * n} bytes, got ${rgba.length}`);
  if (significant.length !== n) throw new RangeError(`need ${n} significance flags, got ${significant.length}`);
  let faded = 0;
  for (let k = 0; k < n; k++) {
    if (significant[k] || !Number.isFinite(values[k])) continue;
    const o = 4 * k;
    for (let c = 0; c < 3; c++) rgba[o + c] = Math.round(alpha * rgba[o + c] + (1 - alpha) * background[c]);
    faded += 1;
  }
  return faded;
}

/** Symmetric colour domain `[-m, m]` of the diverging map, `m` the largest finite |value| (1 when none). */
export function symmetricDomain(values) {
  return colorRange(values, { diverging: true }).domain;
}

/** One colour domain for both mean maps (equal colours mean equal values); positive values only for log. */
export function jointDomain(a, b, log) {
  const both = new Float64Array(a.length + b.length);
  both.set(a);
  both.set(b, a.length);
  return colorRange(both, { log }).domain;
}

/** `12 of 36 tested cells significant (q < 0.05, Benjamini–Hochberg (FDR))`. */
export function significanceText(numSignificant, numTests, alpha, correction) {
  const how = correction === null || correction === undefined ? "p" : "q";
  return `${numSignificant} of ${numTests} tested cells significant (${how} < ${alpha}, ${CORRECTION_TITLES[correction] ?? correction})`;
}

/**
 * Lines about one tested cell: both means with their counts, the difference and the Welch test.
 * @param {object} d the `detail` trait (numbers null where unknown)
 * @param {string[]} names how runs a and b are called
 */
export function cellTestLines(d, [a, b]) {
  return [
    `${a}: mean ${formatValue(d.mean_a ?? NaN)} (n = ${d.count_a})`,
    `${b}: mean ${formatValue(d.mean_b ?? NaN)} (n = ${d.count_b})`,
    `difference ${formatValue(d.difference ?? NaN)} · g = ${formatValue(d.effect_size ?? NaN)}`,
    `Welch t = ${formatValue(d.t ?? NaN)}, df = ${formatValue(d.df ?? NaN)}, p = ${formatValue(d.p ?? NaN)}, q = ${formatValue(d.q ?? NaN)}${d.significant ? " (significant)" : ""}`,
  ];
}

/** Common bins for two samples (so the two histograms compare): `{edges, countsA, countsB}`, equal widths. */
export function sharedBins(a, b, nBins = 16) {
  const all = [...Array.from(a), ...Array.from(b)].filter(Number.isFinite);
  if (all.length === 0) return { edges: [], countsA: [], countsB: [] };
  let lo = Math.min(...all);
  let hi = Math.max(...all);
  if (lo === hi) {
    const pad = Math.abs(lo) * 0.5 || 1;
    lo -= pad;
    hi += pad;
  }
  const width = (hi - lo) / nBins;
  const edges = Array.from({ length: nBins + 1 }, (_, k) => lo + k * width);
  const count = (xs) => {
    const c = new Array(nBins).fill(0);
    for (const x of xs) if (Number.isFinite(x)) c[Math.min(nBins - 1, Math.floor((x - lo) / width))] += 1;
    return c;
  };
  return { edges, countsA: count(Array.from(a)), countsB: count(Array.from(b)) };
}
