// esbuild config of the browser bundle: the npm libraries the page imports, each bundled into
// one self-contained ES module (their sources use bare specifiers such as "lib0/encoding", which a
// browser cannot resolve), and the page's two module graphs: bridge.js with its modules
// (bridge/*.js, ring.js, files.js) and worker.js with ring.js and files.js, each bundled into one file so the page (and
// each pod's Worker) fetches one file, not a chain of imports each revalidated (no-cache). The
// page's other sources (app.js, index.html, app.css, sw.js) are copied as they are by ../build.py.
//
//   node esbuild.config.mjs OUTDIR      (run by p2pkube/browser/build.py)
//
// OUTDIR/bridge.js                bridge.js, bridge/*.js and ring.js (registered in Pyodide as
//                                 "p2pjs"); import.meta.url stays the bundle's own URL
// OUTDIR/worker.js                worker.js and ring.js; its import of ./browser_wasi_shim.mjs
//                                 stays as it is (external)
// Both: whitespace and syntax minified, names kept (readable stack traces).
// OUTDIR/dashboard/view.mjs       the cluster dashboard's view (dashboard/view.js with its HTTP
//                                 data source) and cytoscape, the graph library: imported by
//                                 dashboard/main.js (the native agent's page) and by app.js
//                                 (a browser node's Cluster tab)
// OUTDIR/yjs.mjs                  everything "yjs" exports (registered in Pyodide as module "yjs")
// OUTDIR/browser_wasi_shim.mjs    @bjorn3/browser_wasi_shim (imported by worker.js)
// OUTDIR/ed25519.mjs              @noble/ed25519 with @noble/hashes' sha512 set as its sync and
//                                 async hash (so it never needs crypto.subtle); imported by
//                                 bridge.js only on pages without WebCrypto Ed25519 (insecure
//                                 origins: plain http from a LAN address)
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
  "ed25519.mjs": [
    'import * as ed from "@noble/ed25519";',
    'import { sha512 } from "@noble/hashes/sha2.js";',
    "ed.hashes.sha512 = sha512;",
    "ed.hashes.sha512Async = (message) => Promise.resolve(sha512(message));",
    'export * from "@noble/ed25519";',
  ].join("\n"),
};

for (const [name, contents] of Object.entries(entries)) {
  await esbuild.build({
    ...common,
    stdin: { contents, resolveDir: common.absWorkingDir, sourcefile: name },
    outfile: path.join(outdir, name),
  });
}

for (const name of ["bridge.js", "worker.js"]) {
  await esbuild.build({
    ...common,
    entryPoints: [path.join(common.absWorkingDir, name)],
    outfile: path.join(outdir, name),
    external: ["./browser_wasi_shim.mjs"],
    minify: false,
    minifyWhitespace: true,
    minifySyntax: true,
  });
}

await esbuild.build({
  ...common,
  entryPoints: [path.join(common.absWorkingDir, "dashboard", "view.js")],
  outfile: path.join(outdir, "dashboard", "view.mjs"),
});
