// Binary arrays from Python: {view: DataView, dtype, shape} (see tscope_widgets/widgets/_codec.py).
// Bytes are C-ordered and little-endian, as on every platform browsers run on.

export const TYPED_ARRAYS = Object.freeze({
  float32: Float32Array,
  float64: Float64Array,
  int8: Int8Array,
  uint8: Uint8Array,
  int16: Int16Array,
  uint16: Uint16Array,
  int32: Int32Array,
  uint32: Uint32Array,
});

let HALF_TABLE = null; // float16 bit pattern -> value, built on first use (256 KiB)

/** The value of every float16 bit pattern (IEEE 754 binary16: 1 sign, 5 exponent, 10 fraction bits). */
export function halfTable() {
  if (HALF_TABLE) return HALF_TABLE;
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    if (exp === 0) table[h] = sign * frac * 2 ** -24; // zero and subnormals
    else if (exp === 31) table[h] = frac ? NaN : sign * Infinity;
    else table[h] = sign * (1 + frac / 1024) * 2 ** (exp - 15);
  }
  HALF_TABLE = table;
  return table;
}

/**
 * float16 values (`bits`, their bit patterns) times `scale`, as float32: how large maps travel
 * (`map_to_json` in tscope_widgets/widgets/_codec.py, `scale` a power of two, so the product is exact).
 * @returns {Float32Array}
 */
export function decodeHalf(bits, scale = 1) {
  const table = halfTable();
  const out = new Float32Array(bits.length);
  if (scale === 1) for (let k = 0; k < bits.length; k++) out[k] = table[bits[k]];
  else for (let k = 0; k < bits.length; k++) out[k] = table[bits[k]] * scale;
  return out;
}

function isWireArray(value) {
  return (
    value !== null &&
    typeof value === "object" &&
    "view" in value &&
    "dtype" in value &&
    "shape" in value
  );
}

/**
 * Wrap a binary widget value in the matching typed array, without copying when the bytes are
 * aligned for the element size (a misaligned view is copied once). `float16` values (with a `scale`)
 * are decoded into a new Float32Array (dtype "float32").
 * @param {{view: DataView|ArrayBufferView|ArrayBuffer, dtype: string, shape: number[], scale?: number}|null} value
 * @returns {{data: ArrayLike<number>, shape: number[], dtype: string}|null}
 */
export function decode(value) {
  if (value === null || value === undefined) return null;
  if (!isWireArray(value)) throw new TypeError("expected {view, dtype, shape}");
  const { view, dtype, shape } = value;
  if (dtype === "float16") {
    const scale = value.scale ?? 1;
    if (!(typeof scale === "number" && Number.isFinite(scale) && scale > 0)) {
      throw new TypeError(`a float16 array needs a positive finite scale, got ${JSON.stringify(value.scale)}`);
    }
    const bits = decode({ view, dtype: "uint16", shape });
    return { data: decodeHalf(bits.data, scale), shape: bits.shape, dtype: "float32" };
  }
  const Typed = TYPED_ARRAYS[dtype];
  if (!Typed) throw new TypeError(`unknown dtype ${JSON.stringify(dtype)}`);
  if (!Array.isArray(shape) || !shape.every((n) => Number.isInteger(n) && n >= 0)) {
    throw new TypeError(`shape must be a list of non-negative integers, got ${JSON.stringify(shape)}`);
  }
  let buffer, byteOffset, byteLength;
  if (view instanceof ArrayBuffer) {
    [buffer, byteOffset, byteLength] = [view, 0, view.byteLength];
  } else if (ArrayBuffer.isView(view)) {
    [buffer, byteOffset, byteLength] = [view.buffer, view.byteOffset, view.byteLength];
  } else {
    throw new TypeError("view must be a DataView, typed array or ArrayBuffer");
  }
  const length = shape.reduce((a, b) => a * b, 1);
  if (byteLength !== length * Typed.BYTES_PER_ELEMENT) {
    throw new RangeError(
      `${byteLength} bytes do not hold a ${dtype} array of shape [${shape}]`,
    );
  }
  const data =
    byteOffset % Typed.BYTES_PER_ELEMENT === 0
      ? new Typed(buffer, byteOffset, length)
      : new Typed(buffer.slice(byteOffset, byteOffset + byteLength));
  return { data, shape: shape.slice(), dtype };
}

/** Decode every {view, dtype, shape} inside a JSON value (objects and arrays are rebuilt). */
export function decodeTree(value) {
  if (value === null || typeof value !== "object") return value;
  if (isWireArray(value)) return decode(value);
  if (Array.isArray(value)) return value.map(decodeTree);
  const out = {};
  for (const [k, v] of Object.entries(value)) out[k] = decodeTree(v);
  return out;
}
