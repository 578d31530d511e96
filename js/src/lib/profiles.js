// One-dimensional summaries of an S x S map (row-major): a row, a column, and the relative-offset
// profile (the map averaged along each diagonal i - j = k).

/** Row `i` of a `rows x cols` map. */
export function rowProfile(values, cols, i) {
  return Float64Array.from({ length: cols }, (_, j) => values[i * cols + j]);
}

/** Column `j` of a `rows x cols` map. */
export function columnProfile(values, rows, cols, j) {
  const out = new Float64Array(rows);
  for (let i = 0; i < rows; i++) out[i] = values[i * cols + j];
  return out;
}

/**
 * Count-weighted average of a square `S x S` map along each diagonal `k = i - j`:
 * `sum_{i-j=k} n_ij v_ij / sum_{i-j=k} n_ij` over cells with a finite value and `n_ij > 0`
 * (all weights 1 without counts). For the mean this is the pooled mean of all per-sample values
 * at offset `k`.
 * @returns {{offsets: Int32Array, values: Float64Array, weights: Float64Array}} offsets
 *   `-(S-1) .. S-1`; NaN where a diagonal has no data
 */
export function offsetProfile(values, counts, S) {
  const m = 2 * S - 1;
  const sum = new Float64Array(m);
  const weights = new Float64Array(m);
  for (let i = 0; i < S; i++) {
    for (let j = 0; j < S; j++) {
      const v = values[i * S + j];
      const w = counts ? counts[i * S + j] : 1;
      if (!Number.isFinite(v) || !(w > 0)) continue;
      const k = i - j + S - 1;
      sum[k] += w * v;
      weights[k] += w;
    }
  }
  const offsets = new Int32Array(m);
  const out = new Float64Array(m);
  for (let k = 0; k < m; k++) {
    offsets[k] = k - (S - 1);
    out[k] = weights[k] > 0 ? sum[k] / weights[k] : NaN;
  }
  return { offsets, values: out, weights };
}

/**
 * The offsets worth an x axis: `offsetProfile` output without the leading negative offsets (input after
 * output, j > i) that hold no data or only exact zeros, as in causal models, where s_ij = 0 for j > i; the
 * axis then starts at 0 instead of running over -(S-1)..-1 where nothing can be seen.
 * @returns {{offsets: Int32Array, values: Float64Array, weights: Float64Array}}
 */
export function visibleOffsets({ offsets, values, weights }) {
  let start = 0;
  while (start < offsets.length && offsets[start] < 0 && !(Number.isFinite(values[start]) && values[start] !== 0)) start++;
  return { offsets: offsets.slice(start), values: values.slice(start), weights: weights.slice(start) };
}
