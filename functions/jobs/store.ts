/**
 * Where job results live: outside Deno KV (whose values are capped at 64 KiB), behind a small
 * interface so that object storage can stand in for the local directory.
 *
 * Keys are slash-separated relative paths (`<job>/chunk-000012.npy`). `put` is atomic: a reader sees
 * the old object or the whole new one, never a part — {@link FsResultStore} writes a temporary file
 * next to the target, optionally fsyncs it, and renames it over the target, so a crash (kill -9, power
 * loss with fsync on) never leaves a half-written file. Writing the same key twice with the same
 * bytes is harmless, which is what makes re-running a chunk idempotent.
 */
import { randomHex } from "../../core/hex.ts";

export interface StoredObject {
  key: string;
  size: number;
}

export interface ResultStore {
  /** Stores `data` under `key` atomically, replacing what was there. */
  put(key: string, data: Uint8Array): Promise<void>;
  /** The object's bytes, or null when there is none. */
  get(key: string): Promise<Uint8Array | null>;
  /** Objects whose key starts with `prefix`, in key order, `limit` at a time from after `cursor`. */
  list(prefix: string, opts?: { cursor?: string; limit?: number }): Promise<{
    items: StoredObject[];
    cursor: string | null;
  }>;
  /** Deletes `key`, or everything under `key/` when it names a folder. */
  delete(key: string): Promise<void>;
}

/** A key is a relative path of safe segments (no `..`, no leading slash, no backslashes). */
export function checkKey(key: string): void {
  if (
    key.length === 0 || key.length > 512 || key.startsWith("/") || key.includes("\\") ||
    key.split("/").some((s) => s === "" || s === "." || s === ".." || !/^[\w.-]+$/.test(s))
  ) {
    throw new Error(`invalid result key ${JSON.stringify(key)}`);
  }
}

const TEMP = /\.tmp-[0-9a-f]+$/;

/** Results in a local directory. */
export class FsResultStore implements ResultStore {
  constructor(readonly root: string, private readonly fsync = true) {}

  private path(key: string): string {
    checkKey(key);
    return `${this.root.replace(/\/+$/, "")}/${key}`;
  }

  async put(key: string, data: Uint8Array): Promise<void> {
    const target = this.path(key);
    const dir = target.slice(0, target.lastIndexOf("/"));
    await Deno.mkdir(dir, { recursive: true });
    const temp = `${target}.tmp-${randomHex(6)}`;
    const file = await Deno.open(temp, { write: true, create: true, truncate: true });
    try {
      let off = 0;
      while (off < data.byteLength) off += await file.write(data.subarray(off));
      if (this.fsync) await file.syncData();
    } catch (e) {
      file.close();
      await Deno.remove(temp).catch(() => {});
      throw e;
    }
    file.close();
    try {
      await Deno.rename(temp, target);
    } catch (e) {
      await Deno.remove(temp).catch(() => {});
      throw e;
    }
  }

  async get(key: string): Promise<Uint8Array | null> {
    try {
      return await Deno.readFile(this.path(key));
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return null;
      throw e;
    }
  }

  async list(
    prefix: string,
    opts: { cursor?: string; limit?: number } = {},
  ): Promise<{ items: StoredObject[]; cursor: string | null }> {
    const all: StoredObject[] = [];
    const base = prefix.includes("/") ? prefix.slice(0, prefix.lastIndexOf("/")) : "";
    const walk = async (rel: string) => {
      const dir = rel ? `${this.root}/${rel}` : this.root;
      let entries: Deno.DirEntry[];
      try {
        entries = await Array.fromAsync(Deno.readDir(dir));
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) return;
        throw e;
      }
      for (const e of entries) {
        const key = rel ? `${rel}/${e.name}` : e.name;
        if (e.isDirectory) {
          if (key.startsWith(prefix) || prefix.startsWith(key + "/")) await walk(key);
        } else if (e.isFile && key.startsWith(prefix) && !TEMP.test(key)) {
          all.push({ key, size: (await Deno.stat(`${dir}/${e.name}`)).size });
        }
      }
    };
    if (base) checkKey(base);
    await walk(base);
    all.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    const from = opts.cursor ? all.findIndex((o) => o.key > opts.cursor!) : 0;
    const start = from < 0 ? all.length : from;
    const limit = opts.limit ?? 1000;
    const items = all.slice(start, start + limit);
    const more = start + limit < all.length;
    return { items, cursor: more ? items[items.length - 1].key : null };
  }

  async delete(key: string): Promise<void> {
    try {
      await Deno.remove(this.path(key), { recursive: true });
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }
}
