/**
 * A POSIX ustar archive as a stream: 512-byte header per file, the data padded to 512 bytes, two zero
 * blocks at the end. Regular files only; names up to 255 bytes (split into prefix and name at a
 * slash when longer than 100). Entries are pulled one at a time, so an archive of a large job streams
 * without holding it in memory.
 */

export interface TarEntry {
  /** Path inside the archive (ASCII, `/`-separated). */
  name: string;
  data: Uint8Array;
  /** Modification time, ms since epoch (default: now). */
  mtime?: number;
}

const BLOCK = 512;
const enc = new TextEncoder();

function writeString(buf: Uint8Array, offset: number, length: number, text: string): void {
  const bytes = enc.encode(text);
  if (bytes.byteLength > length) throw new Error(`tar: ${JSON.stringify(text)} does not fit ${length} bytes`);
  buf.set(bytes, offset);
}

/** An octal field: digits zero-padded to length − 1, then NUL. */
function writeOctal(buf: Uint8Array, offset: number, length: number, value: number): void {
  const text = Math.floor(value).toString(8).padStart(length - 1, "0");
  if (text.length > length - 1) throw new Error(`tar: ${value} does not fit an octal field of ${length}`);
  writeString(buf, offset, length, text + "\0");
}

/** Splits a long name into (prefix, name) at a slash so that prefix ≤ 155 and name ≤ 100 bytes. */
function splitName(name: string): [string, string] {
  if (enc.encode(name).byteLength <= 100) return ["", name];
  for (let i = name.length - 1; i > 0; i--) {
    if (name[i] !== "/") continue;
    const prefix = name.slice(0, i), rest = name.slice(i + 1);
    if (enc.encode(prefix).byteLength <= 155 && enc.encode(rest).byteLength <= 100 && rest) {
      return [prefix, rest];
    }
  }
  throw new Error(`tar: name too long: ${name}`);
}

/** The 512-byte ustar header of a regular file. */
export function tarHeader(name: string, size: number, mtime = Date.now()): Uint8Array {
  if (!/^[\x20-\x7e]+$/.test(name)) throw new Error(`tar: name must be printable ASCII: ${name}`);
  const h = new Uint8Array(BLOCK);
  const [prefix, short] = splitName(name);
  writeString(h, 0, 100, short);
  writeOctal(h, 100, 8, 0o644); // mode
  writeOctal(h, 108, 8, 0); // uid
  writeOctal(h, 116, 8, 0); // gid
  writeOctal(h, 124, 12, size);
  writeOctal(h, 136, 12, mtime / 1000);
  h.fill(0x20, 148, 156); // checksum field counts as spaces while summing
  h[156] = 0x30; // typeflag '0': regular file
  writeString(h, 257, 6, "ustar\0");
  writeString(h, 263, 2, "00");
  writeString(h, 265, 32, "genie");
  writeString(h, 297, 32, "genie");
  writeString(h, 345, 155, prefix);
  let sum = 0;
  for (const b of h) sum += b;
  writeString(h, 148, 8, sum.toString(8).padStart(6, "0") + "\0 ");
  return h;
}

/** Zero bytes that pad `size` bytes of data to a whole block. */
function padding(size: number): Uint8Array {
  return new Uint8Array((BLOCK - (size % BLOCK)) % BLOCK);
}

/** A tar stream of `entries`, produced as the consumer reads. */
export function tarStream(entries: AsyncIterable<TarEntry> | Iterable<TarEntry>): ReadableStream<Uint8Array> {
  const it = Symbol.asyncIterator in entries
    ? (entries as AsyncIterable<TarEntry>)[Symbol.asyncIterator]()
    : (async function* () {
      yield* entries as Iterable<TarEntry>;
    })();
  let finished = false;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (finished) return;
      const next = await it.next();
      if (next.done) {
        finished = true;
        controller.enqueue(new Uint8Array(2 * BLOCK));
        controller.close();
        return;
      }
      const { name, data, mtime } = next.value;
      controller.enqueue(tarHeader(name, data.byteLength, mtime));
      if (data.byteLength > 0) controller.enqueue(data);
      const pad = padding(data.byteLength);
      if (pad.byteLength > 0) controller.enqueue(pad);
    },
    async cancel() {
      finished = true;
      await it.return?.();
    },
  });
}

/** Reads a ustar archive back (regular files only): the inverse of {@link tarStream}, for tests and the CLI. */
export function untar(bytes: Uint8Array): { name: string; data: Uint8Array }[] {
  const out: { name: string; data: Uint8Array }[] = [];
  const dec = new TextDecoder();
  const str = (o: number, n: number) => dec.decode(bytes.subarray(o, o + n)).replace(/\0.*$/s, "");
  let off = 0;
  while (off + BLOCK <= bytes.byteLength) {
    const h = bytes.subarray(off, off + BLOCK);
    if (h.every((b) => b === 0)) break;
    let sum = 0;
    for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i];
    const stored = parseInt(str(off + 148, 8).trim(), 8);
    if (stored !== sum) throw new Error(`tar: bad header checksum at ${off}`);
    const size = parseInt(str(off + 124, 12).trim(), 8);
    const prefix = str(off + 345, 155);
    const name = (prefix ? prefix + "/" : "") + str(off, 100);
    off += BLOCK;
    if (off + size > bytes.byteLength) throw new Error(`tar: ${name} is truncated`);
    out.push({ name, data: bytes.slice(off, off + size) });
    off += size + padding(size).byteLength;
  }
  return out;
}
