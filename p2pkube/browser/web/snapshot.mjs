// Pyodide's memory snapshot for the browser node (build.py runs this with Node.js):
//
//     node snapshot.mjs <pyodide index dir> <output file>
//
// A page that starts Pyodide from scratch spends ~3 s of CPU (on the 2-core test machine) in
// the interpreter's own start-up and the standard library's imports before any of our code
// runs. loadPyodide({_loadSnapshot}) restores the wasm memory written here instead: ~0.3 s.
//
// The snapshot holds the interpreter with the standard library modules the agent imports,
// and nothing else: no wheel (msgpack's C extension lives outside the wasm memory), no
// p2pkube source (they change with every commit) and no JavaScript object (the snapshot is
// made in Node.js and restored in a browser: Python must hold no reference into either's
// globals). Pyodide checks that the snapshot matches the runtime that restores it; the page
// loads without it when anything about it fails.

import { writeFileSync } from "node:fs";

import { args, startPyodide } from "./node-pyodide.mjs";

/** What the agent imports from the standard library (missing ones load later, as usual). */
const STDLIB = [
  "asyncio", "ast", "base64", "bisect", "bz2", "calendar", "collections.abc",
  "concurrent.futures", "contextlib", "contextvars", "copy", "dataclasses", "datetime", "dis",
  "email", "enum", "fnmatch", "fractions", "functools", "glob", "hashlib", "heapq", "hmac",
  "http", "importlib.metadata", "importlib.util", "inspect", "ipaddress", "itertools", "json",
  "logging", "lzma", "math", "numbers", "pathlib", "random", "re", "secrets", "shutil",
  "socket", "ssl", "string", "struct", "subprocess", "tarfile", "tempfile", "textwrap",
  "threading", "time", "tokenize", "traceback", "typing", "urllib.parse", "weakref",
  "zipfile", "zlib", "zoneinfo",
];

const [indexDir, output] = args(2, "snapshot.mjs <pyodide index dir> <output file>");
const pyodide = await startPyodide(indexDir, { _makeSnapshot: true });
pyodide.runPython(STDLIB.map((name) => `import ${name}`).join("\n"));
const snapshot = pyodide.makeMemorySnapshot();
writeFileSync(output, snapshot);
console.log(`snapshot: ${STDLIB.length} standard library imports, ${(snapshot.length / 1e6).toFixed(1)} MB`);
