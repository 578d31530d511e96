import assert from "node:assert/strict";
import { test } from "node:test";
import { decode, decodeTree } from "../src/lib/codec.js";

function wire(typed, shape, dtype, offset = 0) {
  const bytes = new Uint8Array(offset + typed.byteLength);
  bytes.set(new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength), offset);
  return { view: new DataView(bytes.buffer, offset, typed.byteLength), dtype, shape };
}

test("decode wraps the buffer without copying", () => {
  const src = Float32Array.from([1, 2, NaN, 4, 5, 6]);
  const value = wire(src, [2, 3], "float32");
  const out = decode(value);
  assert.equal(out.data.constructor, Float32Array);
  assert.deepEqual(out.shape, [2, 3]);
  assert.equal(out.data.buffer, value.view.buffer); // same memory
  assert.ok(Number.isNaN(out.data[2]));
  assert.deepEqual(Array.from(out.data).filter((v) => !Number.isNaN(v)), [1, 2, 4, 5, 6]);
  new DataView(value.view.buffer).setFloat32(0, 7, true);
  assert.equal(out.data[0], 7);
});

test("decode handles every wire dtype, offsets and misalignment", () => {
  const aligned = decode(wire(Int32Array.from([-1, 2, 3]), [3], "int32", 8));
  assert.deepEqual(Array.from(aligned.data), [-1, 2, 3]);
  const misaligned = decode(wire(Float32Array.from([1.5, -2.5]), [2], "float32", 2));
  assert.deepEqual(Array.from(misaligned.data), [1.5, -2.5]);
  assert.deepEqual(Array.from(decode(wire(Uint8Array.from([0, 255]), [2], "uint8")).data), [0, 255]);
  assert.deepEqual(Array.from(decode(wire(Float64Array.from([0.1]), [1], "float64")).data), [0.1]);
  assert.equal(decode(wire(new Float32Array(0), [0, 5], "float32")).data.length, 0);
});

test("decode refuses inconsistent values", () => {
  const v = wire(Float32Array.from([1, 2, 3]), [2, 2], "float32");
  assert.throws(() => decode(v), RangeError);
  assert.throws(() => decode({ ...v, dtype: "int64" }), TypeError);
  assert.throws(() => decode({ ...v, shape: [3, -1] }), TypeError);
  assert.throws(() => decode({ view: [1, 2, 3], dtype: "float32", shape: [3] }), TypeError);
  assert.throws(() => decode({ dtype: "float32" }), TypeError);
  assert.equal(decode(null), null);
});

test("decodeTree decodes nested arrays and keeps the rest", () => {
  const tree = decodeTree({
    cell: [1, 2],
    mean: 0.5,
    std: null,
    samples: wire(Float32Array.from([0.25, 0.75]), [2], "float32"),
  });
  assert.deepEqual(tree.cell, [1, 2]);
  assert.equal(tree.mean, 0.5);
  assert.equal(tree.std, null);
  assert.deepEqual(Array.from(tree.samples.data), [0.25, 0.75]);
});

test("float16 maps are decoded with their scale", async () => {
  const { decodeHalf, halfTable } = await import("../src/lib/codec.js");
  const t = halfTable();
  assert.equal(t[0x3c00], 1);
  assert.equal(t[0xc000], -2);
  assert.equal(t[0x7bff], 65504);
  assert.equal(t[0x0001], 2 ** -24);
  assert.equal(t[0x0400], 2 ** -14);
  assert.equal(t[0x3555], 0.333251953125);
  assert.equal(t[0x7c00], Infinity);
  assert.ok(Number.isNaN(t[0x7e00]));
  assert.ok(Object.is(t[0x8000], -0));
  const bits = Uint16Array.from([0x3c00, 0x4000, 0x7e00, 0x0000]);
  assert.deepEqual(Array.from(decodeHalf(bits, 2 ** -20)).slice(0, 2), [2 ** -20, 2 ** -19]);
  const value = wire(bits, [2, 2], "float16");
  value.scale = 2 ** 10;
  const out = decode(value);
  assert.equal(out.dtype, "float32");
  assert.deepEqual(out.shape, [2, 2]);
  assert.equal(out.data[0], 1024);
  assert.equal(out.data[1], 2048);
  assert.ok(Number.isNaN(out.data[2]));
  assert.equal(out.data[3], 0);
  assert.throws(() => decode({ ...wire(bits, [4], "float16"), scale: -1 }), TypeError);
  assert.throws(() => decode({ ...wire(bits, [5], "float16"), scale: 1 }), RangeError);
});
