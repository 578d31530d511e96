// Bundle one ESM module per widget into ../tscope_widgets/static/ (anywidget's `_esm`).
//   node build.mjs          minified bundles
//   node build.mjs --watch  rebuild on change, inline source maps (use with ANYWIDGET_HMR=1)
import * as esbuild from "esbuild";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const ENTRIES = [
  "sensitivity_explorer",
  "landscape_widget",
  "landscape_surface",
  "spectrum_widget",
  "attention_explorer",
  "sweep_widget",
  "comparison_explorer",
  "block_spectra_widget",
];
const watch = process.argv.includes("--watch");

const options = {
  entryPoints: ENTRIES.map((name) => path.join(here, "src", `${name}.js`)),
  outdir: path.join(here, "..", "tscope_widgets", "static"),
  bundle: true,
  format: "esm",
  target: "es2020",
  minify: !watch,
  sourcemap: watch ? "inline" : false,
  legalComments: "eof",
  logLevel: "info",
};

if (watch) {
  const ctx = await esbuild.context(options);
  await ctx.watch();
} else {
  await esbuild.build(options);
}
