// The agent's Python sources with their bytecode, compiled by the page's own interpreter
// (build.py runs this with Node.js):
//
//     node pycompile.mjs <pyodide index dir> <sources zip> <output zip>
//
// The page unpacks python/p2pkube.zip and imports ~120 modules from it; without bytecode, Pyodide
// compiles every one at each page load (~1.4 s here). The bytecode must come from Pyodide's
// CPython (3.14; the build machine's is another version), so Pyodide compiles it here, as
// unchecked hash-based .pyc files (PEP 552: used without comparing the source's mtime, which
// the zip's fixed 1980 timestamps would make meaningless). The output holds the same sources
// and a __pycache__ beside each package, in a byte-for-byte reproducible zip.

import { readFileSync, writeFileSync } from "node:fs";
import { isAbsolute, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const [indexDir, sources, output] = process.argv.slice(2);
if (!indexDir || !sources || !output) {
  console.error("usage: node pycompile.mjs <pyodide index dir> <sources zip> <output zip>");
  process.exit(2);
}
const index = (isAbsolute(indexDir) ? indexDir : resolve(indexDir)).replace(/\/?$/, "/");
const { loadPyodide } = await import(pathToFileURL(`${index}pyodide.mjs`).href);
const pyodide = await loadPyodide({ indexURL: index, stdout: () => {}, stderr: console.error });
pyodide.unpackArchive(new Uint8Array(readFileSync(sources)), "zip", { extractDir: "/src" });
const count = pyodide.runPython(`
import compileall, os, py_compile, zipfile

ok = compileall.compile_dir(
    "/src", quiet=1, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH
)
if not ok:
    raise SystemExit("compileall failed")
names = []
for root, dirs, files in os.walk("/src"):
    dirs.sort()
    names += [os.path.join(root, name) for name in sorted(files)]
with zipfile.ZipFile("/out.zip", "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
    for path in sorted(names):
        info = zipfile.ZipInfo(os.path.relpath(path, "/src"), date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        with open(path, "rb") as f:
            archive.writestr(info, f.read())
sum(name.endswith(".pyc") for name in names)
`);
writeFileSync(output, pyodide.FS.readFile("/out.zip"));
console.log(`bytecode: ${count} modules compiled by Pyodide's Python ${pyodide.runPython("import sys; sys.version.split()[0]")}`);
