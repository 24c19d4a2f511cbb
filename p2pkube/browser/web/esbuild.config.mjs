// esbuild config of the browser bundle: the two npm libraries the page imports, each bundled into
// one self-contained ES module (their sources use bare specifiers such as "lib0/encoding", which a
// browser cannot resolve). The page's own sources (app.js, bridge.js, worker.js) are plain ES
// modules copied as they are by ../build.py.
//
//   node esbuild.config.mjs OUTDIR      (run by p2pkube/browser/build.py)
//
// OUTDIR/yjs.mjs                  everything "yjs" exports (registered in Pyodide as module "yjs")
// OUTDIR/browser_wasi_shim.mjs    @bjorn3/browser_wasi_shim (imported by worker.js)
import * as esbuild from "esbuild";
import path from "node:path";

const outdir = process.argv[2];
if (!outdir) {
  console.error("usage: node esbuild.config.mjs OUTDIR");
  process.exit(2);
}

const common = {
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["chrome120", "firefox120", "safari17"],
  minify: true,
  legalComments: "eof",
  logLevel: "warning",
  absWorkingDir: path.dirname(new URL(import.meta.url).pathname),
};

const entries = {
  "yjs.mjs": 'export * from "yjs";',
  "browser_wasi_shim.mjs": 'export * from "@bjorn3/browser_wasi_shim";',
};

for (const [name, contents] of Object.entries(entries)) {
  await esbuild.build({
    ...common,
    stdin: { contents, resolveDir: common.absWorkingDir, sourcefile: name },
    outfile: path.join(outdir, name),
  });
}
