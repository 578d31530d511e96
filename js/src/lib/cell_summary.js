// The one-line summary of a clicked sensitivity cell (mean, spread, range, count).
import { formatValue } from "./scales.js";

/**
 * `mean 1.2 · std 0.3 · min 0.5 · max 2 · n = 16`; a Hutchinson mean is an estimate and reads
 * `mean 1.2 ± 0.08 (s.e.)` with the cell's standard error of the mean (std / sqrt(n) over the per-sample
 * estimates, which covers the probes' noise and the data's spread).
 * @param {{mean: number, std: number, sem?: number, min: number, max: number, count?: number}} info
 * @param {string} method "exact", "hutchinson" or "full"
 */
export function cellSummary(info, method) {
  const mean =
    method === "hutchinson"
      ? `mean ${formatValue(info.mean)} ± ${formatValue(info.sem)} (s.e.)`
      : `mean ${formatValue(info.mean)}`;
  const rest = `std ${formatValue(info.std)} · min ${formatValue(info.min)} · max ${formatValue(info.max)}`;
  return `${mean} · ${rest} · n = ${info.count ?? 0}`;
}
