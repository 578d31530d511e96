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
 * aligned for the element size (a misaligned view is copied once).
 * @param {{view: DataView|ArrayBufferView|ArrayBuffer, dtype: string, shape: number[]}|null} value
 * @returns {{data: ArrayLike<number>, shape: number[], dtype: string}|null}
 */
export function decode(value) {
  if (value === null || value === undefined) return null;
  if (!isWireArray(value)) throw new TypeError("expected {view, dtype, shape}");
  const { view, dtype, shape } = value;
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
