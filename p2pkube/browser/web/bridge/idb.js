// idb.js — one job: what the node keeps across page loads: the IndexedDB key-value stores
// (database "p2pkube"; stores "identity", "state", "blobs", "logs"), and the Web Lock that keeps
// a second tab (same IndexedDB, hence same identity) from running a node too
// (conventions: ../bridge.js).
//
//   kvGet(store, key) -> Promise<Uint8Array | null>
//   kvPut(store, key, bytes) -> Promise<void>        committed with strict durability
//   kvPutMany(store, [[key, bytes], ...]) -> Promise<void>   one transaction, all or nothing
//   kvDelete(store, key) -> Promise<void>
//   kvKeys(store) -> Promise<string[]>               sorted
//   kvClear(store) -> Promise<void>
//   acquireNodeLock(name = "p2pkube-node") -> Promise<bool>   a Web Lock held for the page's
//       life: false when another tab of this origin (sharing this IndexedDB, hence the node
//       identity) already runs a node.

import { errorText, fromPython, toBytes } from "./interop.js";

const DB_NAME = "p2pkube";
const STORES = ["identity", "state", "blobs", "logs"];
let dbPromise = null;

/** Open the database at whatever version it has; add missing stores with a version bump. */
function openDatabase(version) {
  return new Promise((resolve, reject) => {
    const req = version === undefined ? indexedDB.open(DB_NAME) : indexedDB.open(DB_NAME, version);
    req.onupgradeneeded = () => {
      const db = req.result;
      for (const name of STORES) if (!db.objectStoreNames.contains(name)) db.createObjectStore(name);
    };
    req.onblocked = () => console.warn("p2pjs: IndexedDB upgrade waits for another tab to close it");
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(new Error(`IndexedDB ${DB_NAME}: ${errorText(req.error)}`));
  });
}

async function database() {
  if (!dbPromise) {
    dbPromise = (async () => {
      let db = await openDatabase();
      if (STORES.some((name) => !db.objectStoreNames.contains(name))) {
        const next = db.version + 1;
        db.close();
        db = await openDatabase(next);
      }
      db.onversionchange = () => {
        db.close(); // let another tab upgrade; we reopen on the next call
        dbPromise = null;
      };
      db.onclose = () => {
        dbPromise = null;
      };
      return db;
    })();
    dbPromise.catch(() => {
      dbPromise = null;
    });
  }
  return dbPromise;
}

async function transact(store, mode, work) {
  if (!STORES.includes(store)) throw new Error(`unknown store ${JSON.stringify(store)} (one of ${STORES.join(", ")})`);
  const db = await database();
  return new Promise((resolve, reject) => {
    const tx = db.transaction(store, mode, mode === "readwrite" ? { durability: "strict" } : undefined);
    let result;
    const req = work(tx.objectStore(store));
    if (req) req.onsuccess = () => (result = req.result);
    tx.oncomplete = () => resolve(result);
    tx.onerror = () => reject(new Error(`IndexedDB ${store}: ${errorText(tx.error)}`));
    tx.onabort = () => reject(new Error(`IndexedDB ${store}: aborted: ${errorText(tx.error)}`));
  });
}

export async function kvGet(store, key) {
  const value = await transact(String(store), "readonly", (s) => s.get(String(key)));
  if (value == null) return null;
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer || ArrayBuffer.isView(value)) return toBytes(value);
  return toBytes(String(value));
}

export async function kvPut(store, key, value) {
  const bytes = toBytes(value, "kvPut value");
  await transact(String(store), "readwrite", (s) => s.put(bytes, String(key)));
}

export async function kvPutMany(store, entries) {
  const list = fromPython(entries).map(([key, value]) => [String(key), toBytes(value, "kvPutMany value")]);
  await transact(String(store), "readwrite", (s) => {
    for (const [key, value] of list) s.put(value, key);
    return null;
  });
}

export async function kvDelete(store, key) {
  await transact(String(store), "readwrite", (s) => s.delete(String(key)));
}

export async function kvKeys(store) {
  const keys = await transact(String(store), "readonly", (s) => s.getAllKeys());
  return keys.map(String).sort();
}

export async function kvClear(store) {
  await transact(String(store), "readwrite", (s) => s.clear());
}

const heldLocks = new Set();

export async function acquireNodeLock(name = "p2pkube-node") {
  name = String(name);
  if (heldLocks.has(name)) return true;
  if (!navigator.locks) return true; // no Web Locks: cannot tell, assume alone
  return new Promise((resolve) => {
    navigator.locks
      .request(name, { ifAvailable: true }, (lock) => {
        if (!lock) {
          resolve(false);
          return undefined;
        }
        heldLocks.add(name);
        resolve(true);
        return new Promise(() => {}); // held until the page goes
      })
      .catch((e) => {
        console.warn("p2pjs: Web Lock failed:", e);
        resolve(true);
      });
  });
}
