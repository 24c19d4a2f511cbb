// The bytecode of the agent's Python sources, compiled by the page's own interpreter
// (build.py runs this with Node.js):
//
//     node pycompile.mjs <pyodide index dir> <sources zip> <output zip>
//
// The page unpacks python/p2pkube.zip and imports ~120 modules from it; without bytecode, Pyodide
// compiles every one at each page load (~1.4 s here). The bytecode must come from Pyodide's
// CPython (3.14; the build machine's is another version), so Pyodide compiles it here, as
// unchecked hash-based .pyc files (PEP 552: used without comparing the source's mtime, which
// the zip's fixed 1980 timestamps would make meaningless). The output zip holds only the .pyc
// files, by their paths in the sources zip (each package's __pycache__); build.py adds them to
// the sources in its own reproducible zip.

import { readFileSync, writeFileSync } from "node:fs";

import { args, startPyodide } from "./node-pyodide.mjs";

const [indexDir, sources, output] = args(3, "pycompile.mjs <pyodide index dir> <sources zip> <output zip>");
const pyodide = await startPyodide(indexDir);
pyodide.unpackArchive(new Uint8Array(readFileSync(sources)), "zip", { extractDir: "/src" });
const count = pyodide.runPython(`
import compileall, os, py_compile, zipfile

if not compileall.compile_dir(
    "/src", quiet=1, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH
):
    raise SystemExit("compileall failed")
compiled = [
    os.path.join(root, name)
    for root, _, files in os.walk("/src")
    for name in files
    if name.endswith(".pyc")
]
with zipfile.ZipFile("/out.zip", "w") as archive:
    for path in compiled:
        archive.write(path, os.path.relpath(path, "/src"))
len(compiled)
`);
writeFileSync(output, pyodide.FS.readFile("/out.zip"));
console.log(`bytecode: ${count} modules compiled by Pyodide's Python ${pyodide.runPython("import sys; sys.version.split()[0]")}`);
