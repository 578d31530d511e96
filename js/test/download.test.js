import assert from "node:assert/strict";
import { test } from "node:test";
import { columnsCsv, csvField, csvText, fileName, matrixCsv } from "../src/lib/download.js";

test("CSV fields: full precision, empty non-finite numbers, quoted text", () => {
  assert.equal(csvField(0.1 + 0.2), "0.30000000000000004");
  assert.equal(csvField(Math.fround(0.1)), "0.10000000149011612");
  assert.equal(csvField(NaN), "");
  assert.equal(csvField(Infinity), "");
  assert.equal(csvField(null), "");
  assert.equal(csvField(-3), "-3");
  assert.equal(csvField("plain"), "plain");
  assert.equal(csvField("a,b"), '"a,b"');
  assert.equal(csvField('say "hi"'), '"say ""hi"""');
  assert.equal(csvField("two\nlines"), '"two\nlines"');
});

test("CSV text ends every line with CRLF", () => {
  assert.equal(csvText(["x", "y"], [[1, 2], [3, NaN]]), "x,y\r\n1,2\r\n3,\r\n");
});

test("a matrix: column names after the corner, each row starts with its name", () => {
  const values = Float32Array.from([1, 0, 0.5, 2]);
  const text = matrixCsv(values, 2, 2, { rowName: (i) => `${i}:r${i}`, colName: (j) => `${j}:c,${j}`, corner: "i\\j" });
  assert.equal(text, 'i\\j,"0:c,0","1:c,1"\r\n0:r0,1,0\r\n1:r1,0.5,2\r\n');
  assert.throws(() => matrixCsv([1, 2, 3], 2, 2), /3 values for a 2 x 2 matrix/);
});

test("columns of equal length, one line per index", () => {
  assert.equal(columnsCsv([["step", [0, 1]], ["λ_max", [2.5, NaN]]]), "step,λ_max\r\n0,2.5\r\n1,\r\n");
  assert.throws(() => columnsCsv([["a", [1, 2]], ["b", [1]]]), /column b has 1 values, the first 2/);
});

test("file names from parts", () => {
  assert.equal(fileName(["sensitivity", "layer 1", "mean", "matrix"], "csv"), "sensitivity-layer-1-mean-matrix.csv");
  assert.equal(fileName(["Spectrum", "", null, "λ max"], "svg"), "spectrum-max.svg");
  assert.equal(fileName([], "png"), "tscope.png");
});
