// Colour scales: a lookup table from a d3 colour map, value -> table index (linear or log, NaN
// aware), domains from data (full, or clamped by percentiles or values), the "auto" log rule, and
// colour-bar ticks. The same rules as tscope_widgets/figures/charts.py (color_scale, auto_log).
import { rgb } from "d3-color";
import { format } from "d3-format";
import { scaleLinear, scaleLog } from "d3-scale";
import { interpolateMagma, interpolateRdBu, interpolateViridis } from "d3-scale-chromatic";

// rdbu: blue (low) - white - red (high), diverging, for differences (d3's RdBu runs red to blue).
export const INTERPOLATORS = Object.freeze({
  viridis: interpolateViridis,
  magma: interpolateMagma,
  rdbu: (t) => interpolateRdBu(1 - t),
});
/** The maps a view offers (the first is the default) and the diverging ones (centred on zero). */
export const COLORMAPS = Object.freeze(["viridis", "magma", "rdbu"]);
export const DIVERGING = Object.freeze(new Set(["rdbu"]));
/** "auto": a log scale when the positive values span at least this many decades (AUTO_LOG_DECADES). */
export const AUTO_LOG_DECADES = 2;

/** Index codes for values without a colour. */
export const NAN_INDEX = -1; // NaN: no data (padding, never observed)
export const NONPOSITIVE_INDEX = -2; // <= 0 on a log scale

/**
 * An `n`-entry RGB lookup table of a colour map.
 * @returns {Uint8Array} `n * 3` bytes, r g b per entry, from low to high
 */
export function colormapLUT(name = "viridis", n = 256) {
  const interpolate = INTERPOLATORS[name];
  if (!interpolate) throw new TypeError(`unknown colour map ${name}`);
  const lut = new Uint8Array(n * 3);
  for (let k = 0; k < n; k++) {
    const c = rgb(interpolate(n === 1 ? 0.5 : k / (n - 1)));
    lut.set([c.r, c.g, c.b], 3 * k);
  }
  return lut;
}

/**
 * Colour domain of the finite values of `data` (positive ones only for a log scale).
 * A constant map gets a domain that ends at its value (so it shows the top colour), an empty one a
 * default domain.
 * @returns {[number, number]} lo < hi
 */
export function colorDomain(data, log = false) {
  let lo = Infinity;
  let hi = -Infinity;
  for (let k = 0; k < data.length; k++) {
    const v = data[k];
    if (!Number.isFinite(v) || (log && v <= 0)) continue;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (lo > hi) return log ? [0.1, 1] : [0, 1];
  if (lo < hi) return [lo, hi];
  if (log) return [lo / 10, hi];
  return lo === 0 ? [0, 1] : [Math.min(0, lo), Math.max(0, hi)];
}

/**
 * The "auto" scale rule: log when the finite positive values span at least AUTO_LOG_DECADES decades;
 * never for counts.
 */
export function autoLog(data, { count = false } = {}) {
  if (count) return false;
  let lo = Infinity;
  let hi = -Infinity;
  for (let k = 0; k < data.length; k++) {
    const v = data[k];
    if (!(Number.isFinite(v) && v > 0)) continue;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return lo <= hi && hi >= lo * 10 ** AUTO_LOG_DECADES;
}

/** `setting` ("auto", true or false) as a boolean for `data`. */
export function resolveLog(setting, data, { count = false } = {}) {
  if (count) return false;
  return setting === "auto" ? autoLog(data) : Boolean(setting);
}

/** Percentile `p` (0..100) of ascending `sorted` values, linear interpolation (NumPy's default). */
export function percentile(sorted, p) {
  const n = sorted.length;
  if (n === 0) return NaN;
  const pos = ((n - 1) * p) / 100;
  const i = Math.floor(pos);
  return i + 1 < n ? sorted[i] + (sorted[i + 1] - sorted[i]) * (pos - i) : sorted[n - 1];
}

/**
 * The colour range of `data`, as `color_scale` in figures/charts.py: the full domain (colorDomain)
 * unless clamped by `percentiles` ([p_lo, p_hi] of the finite values, positive ones for log) or
 * `limits` ([lo, hi], either may be null; they win). A diverging map gets [-m, m] with m the largest
 * |value| (or its p_hi percentile). `clipped`: values below the low end are real data (the lowest colour).
 * @returns {{domain: [number, number], clipped: boolean}}
 */
export function colorRange(data, { log = false, percentiles = null, limits = null, diverging = false } = {}) {
  let [limLo, limHi] = limits ?? [null, null];
  if (log && limLo !== null && limLo !== undefined && !(limLo > 0)) limLo = null; // dropped on a log scale
  if (diverging) {
    const abs = [];
    for (let k = 0; k < data.length; k++) if (Number.isFinite(data[k])) abs.push(Math.abs(data[k]));
    abs.sort((a, b) => a - b);
    let m = abs.length ? (percentiles ? percentile(abs, percentiles[1]) : abs[abs.length - 1]) : 0;
    if (!(m > 0)) m = 1;
    return { domain: [limLo ?? -m, limHi ?? m], clipped: true };
  }
  let [lo, hi] = colorDomain(data, log);
  let clipped = limLo !== null && limLo !== undefined;
  if (percentiles) {
    const v = [];
    for (let k = 0; k < data.length; k++) {
      const x = data[k];
      if (Number.isFinite(x) && (!log || x > 0)) v.push(x);
    }
    v.sort((a, b) => a - b);
    if (v.length) {
      const pLo = percentile(v, percentiles[0]);
      const pHi = percentile(v, percentiles[1]);
      if (pHi > pLo) {
        hi = pHi;
        if (percentiles[0] > 0) {
          lo = pLo;
          clipped = true;
        }
      }
    }
  }
  if (limLo !== null && limLo !== undefined) lo = limLo;
  if (limHi !== null && limHi !== undefined) hi = limHi;
  if (log && !(lo > 0)) lo = hi / 10;
  if (!(hi > lo)) hi = log ? lo * (1 + 1e-9) : lo + (Math.abs(lo) || 1) * 1e-9;
  return { domain: [lo, hi], clipped };
}

/**
 * Map values to lookup-table indices.
 * @param {[number, number]} domain lo < hi (both > 0 for log)
 * @returns {(v: number) => number} index in [0, n-1], or NAN_INDEX / NONPOSITIVE_INDEX
 */
export function colorIndexer(domain, { log = false, n = 256 } = {}) {
  const [lo, hi] = domain;
  if (!(hi > lo) || (log && !(lo > 0))) throw new RangeError(`bad colour domain [${domain}]`);
  const a = log ? Math.log(lo) : lo;
  const scale = n / ((log ? Math.log(hi) : hi) - a);
  return (v) => {
    if (Number.isNaN(v)) return NAN_INDEX;
    if (log && v <= 0) return NONPOSITIVE_INDEX;
    const k = Math.floor(((log ? Math.log(v) : v) - a) * scale);
    return k < 0 ? 0 : k >= n ? n - 1 : k;
  };
}

const fixed = format(".3~g");
const exponent = format(".2~e");

/** Short text for a value: `1.23`, `0.05`, `1.2e-5`, `3.4e+6`; NaN as `–`. */
export function formatValue(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (v === 0) return "0";
  const a = Math.abs(v);
  return a >= 1e4 || a < 1e-3 ? exponent(v) : fixed(v);
}

/**
 * Labels of `values` by `formatValue`, with as many more significant digits (up to 12) as it takes for
 * each label to read back as its value (to 1e-9 relative): round ticks 2.405, 2.41, 2.415 read so, not
 * "2.4", "2.41", "2.42".
 * @param {number[]} values
 * @returns {string[]}
 */
export function distinctLabels(values) {
  const faithful = (labels) =>
    labels.every((label, k) => {
      const v = values[k];
      const back = Number(label.replace(/\u2212/g, "-"));
      return !Number.isFinite(v) || Math.abs(back - v) <= 1e-9 * Math.abs(v);
    });
  let labels = values.map(formatValue);
  for (let digits = 4; digits <= 12 && !faithful(labels); digits++) {
    const fmt = format(`.${digits}~g`);
    labels = values.map((v) => (v === 0 ? "0" : fmt(v)));
  }
  return labels;
}

/**
 * Ticks of a colour bar (labels by `distinctLabels`).
 * @returns {{value: number, t: number, label: string}[]} `t` in [0, 1] from the low end
 */
export function colorbarTicks(domain, log = false, count = 5) {
  const [lo, hi] = domain;
  const scale = (log ? scaleLog() : scaleLinear()).domain([lo, hi]).range([0, 1]);
  let ticks = scale.ticks(count).filter((v) => v >= lo && v <= hi);
  if (log && ticks.length > count) {
    const decades = ticks.filter((v) => Math.abs(Math.log10(v) - Math.round(Math.log10(v))) < 1e-9);
    ticks = decades.length >= 2 ? decades : [ticks[0], ticks[ticks.length - 1]];
  }
  if (ticks.length > count + 1) {
    const step = Math.ceil(ticks.length / count);
    ticks = ticks.filter((_, k) => k % step === 0);
  }
  const labels = distinctLabels(ticks);
  return ticks.map((value, k) => ({ value, t: scale(value), label: labels[k] }));
}
