// Builds the portal with esbuild: one minified, hashed script and stylesheet, and index.html naming
// them. `node build.mjs` is the production bundle (dist/), the only one infra/publish-portal.sh
// uploads; `node build.mjs --local` is the local stack's (dist-local/), with the local-only sign-in.
// The local sign-in exists only where __LOCAL_SIGN_IN__ is true; in production esbuild removes it as
// dead code, and this script fails if anything of it is left (its header name).
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { gzipSync } from "node:zlib";

const local = process.argv.includes("--local");
const out = local ? "dist-local" : "dist";
const LOCAL_MARKER = "x-local-user";

await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });

const result = await build({
  entryPoints: ["src/main.ts"],
  bundle: true,
  minify: true,
  format: "esm",
  target: ["es2022"],
  write: false,
  legalComments: "none",
  define: { __LOCAL_SIGN_IN__: local ? "true" : "false" },
});
const js = result.outputFiles[0].contents;
if (!local && Buffer.from(js).toString("utf8").includes(LOCAL_MARKER)) {
  console.error(`production bundle contains the local sign-in (${LOCAL_MARKER}): refusing to build`);
  process.exit(1);
}
const css = (await build({ entryPoints: ["src/styles.css"], bundle: true, minify: true, write: false })).outputFiles[0]
  .contents;

const hashed = (name, ext, bytes) => `${name}-${createHash("sha256").update(bytes).digest("hex").slice(0, 10)}.${ext}`;
const jsName = hashed("app", "js", js);
const cssName = hashed("app", "css", css);
const html = (await readFile("src/index.html", "utf8")).replace("{{js}}", jsName).replace("{{css}}", cssName);
await writeFile(`${out}/${jsName}`, js);
await writeFile(`${out}/${cssName}`, css);
await writeFile(`${out}/index.html`, html);

const sizes = [
  [jsName, js],
  [cssName, css],
  ["index.html", Buffer.from(html)],
].map(([name, bytes]) => ({ name, bytes: bytes.length, gzip: gzipSync(bytes, { level: 9 }).length }));
const total = sizes.reduce((sum, file) => sum + file.gzip, 0);
console.log(`${out}/: ${sizes.map((f) => `${f.name} ${f.bytes} B (gzip ${f.gzip} B)`).join(", ")}; gzip total ${total} B`);
