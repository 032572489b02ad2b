// Builds the portal with esbuild: minified, content-hashed files and index.html naming them.
// `node build.mjs` is the production bundle (dist/), the only one infra/publish-portal.sh uploads;
// `node build.mjs --local` is the local stack's (dist-local/), with the local-only sign-in.
// The local sign-in exists only where __LOCAL_SIGN_IN__ is true; in production esbuild removes it as
// dead code, and this script fails if anything of it is left (its header name).
// The QR decoder for browsers without BarcodeDetector (zxing-wasm's reader) is a chunk of its own,
// loaded only when someone scans; its WebAssembly file is copied beside it.
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { copyFile, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { basename } from "node:path";
import { gzipSync } from "node:zlib";

const local = process.argv.includes("--local");
const out = local ? "dist-local" : "dist";
const LOCAL_MARKER = "x-local-user";
const hash = (bytes) => createHash("sha256").update(bytes).digest("hex").slice(0, 10);

await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });

const wasmSource = "node_modules/zxing-wasm/dist/reader/zxing_reader.wasm";
const wasm = await readFile(wasmSource);
const wasmName = `zxing_reader-${hash(wasm)}.wasm`;
await copyFile(wasmSource, `${out}/${wasmName}`);

const result = await build({
  entryPoints: { app: "src/main.ts" },
  bundle: true,
  splitting: true,
  minify: true,
  format: "esm",
  target: ["es2022"],
  outdir: out,
  entryNames: "[name]-[hash]",
  chunkNames: "[name]-[hash]",
  metafile: true,
  legalComments: "none",
  define: {
    __LOCAL_SIGN_IN__: local ? "true" : "false",
    __ZXING_WASM__: JSON.stringify(`/${wasmName}`),
  },
});
const outputs = Object.entries(result.metafile.outputs);
const [entry] = outputs.find(([, output]) => output.entryPoint === "src/main.ts");
for (const [file] of outputs) {
  if (!local && (await readFile(file, "utf8")).includes(LOCAL_MARKER)) {
    console.error(`production bundle contains the local sign-in (${LOCAL_MARKER}) in ${file}: refusing to build`);
    process.exit(1);
  }
}
const css = (await build({ entryPoints: ["src/styles.css"], bundle: true, minify: true, write: false })).outputFiles[0]
  .contents;
const cssName = `app-${hash(css)}.css`;
await writeFile(`${out}/${cssName}`, css);
const html = (await readFile("src/index.html", "utf8")).replace("{{js}}", basename(entry)).replace("{{css}}", cssName);
await writeFile(`${out}/index.html`, html);

// What a first visit loads (the page, its script and stylesheet), and what a scan without
// BarcodeDetector adds.
const size = async (file) => {
  const bytes = await readFile(file);
  return { name: basename(file), bytes: bytes.length, gzip: gzipSync(bytes, { level: 9 }).length };
};
const first = [await size(entry), await size(`${out}/${cssName}`), await size(`${out}/index.html`)];
const later = [
  ...(await Promise.all(outputs.filter(([file]) => file !== entry && file.endsWith(".js")).map(([file]) => size(file)))),
  await size(`${out}/${wasmName}`),
];
const describe = (files) => files.map((f) => `${f.name} ${f.bytes} B (gzip ${f.gzip} B)`).join(", ");
const total = (files) => files.reduce((sum, f) => sum + f.gzip, 0);
console.log(`${out}/ first load: ${describe(first)}; gzip total ${total(first)} B`);
console.log(`${out}/ QR decoder, loaded on a scan without BarcodeDetector: ${describe(later)}; gzip total ${total(later)} B`);
