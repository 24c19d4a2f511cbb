// Pyodide in Node.js, as build.py's steps start it (snapshot.mjs, pycompile.mjs): from the
// bundle's own copy of the runtime, so what they make matches what the page loads.

import { isAbsolute, resolve } from "node:path";
import { pathToFileURL } from "node:url";

/** Node's argv after the script, or exit 2 with `usage` when fewer than `count` are given. */
export function args(count, usage) {
  const given = process.argv.slice(2);
  if (given.length < count || given.slice(0, count).some((a) => !a)) {
    console.error(`usage: node ${usage}`);
    process.exit(2);
  }
  return given;
}

/** loadPyodide() from the Pyodide files in `indexDir` (dist/pyodide/<version>/), quiet. */
export async function startPyodide(indexDir, options = {}) {
  const index = (isAbsolute(indexDir) ? indexDir : resolve(indexDir)).replace(/\/?$/, "/");
  const { loadPyodide } = await import(pathToFileURL(`${index}pyodide.mjs`).href);
  return loadPyodide({ indexURL: index, stdout: () => {}, stderr: console.error, ...options });
}
