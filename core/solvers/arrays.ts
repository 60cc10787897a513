/**
 * Short-lived float64 arrays (evaluation requests, guided batches), carved from shared slabs.
 *
 * A typed array with a buffer of its own costs V8 several µs to create (about 5 µs for 784 numbers,
 * more than a solver step's arithmetic on them), while a view on an existing buffer costs about
 * 0.1 µs. Each request of every step needs such arrays, so they come from 256 KiB slabs instead:
 *
 * - arrays never share memory: a slab is carved forward only, never reused, and each array starts at
 *   zero like a new one;
 * - a slab is freed by the garbage collector once no array on it is reachable, so an array kept alive
 *   keeps its slab (at most 256 KiB) alive too: use it for arrays that live a step or a request, not
 *   for long-lived state;
 * - arrays of more than a quarter of a slab get a buffer of their own (at that size the creation cost
 *   is small next to the work on the numbers);
 * - `.buffer` is the slab: use `byteOffset` and `byteLength` with it (every reader here does).
 */

const SLAB_BYTES = 256 * 1024;
const LARGEST_CARVED = SLAB_BYTES / 4;

let slab = new ArrayBuffer(SLAB_BYTES);
let used = 0;

/** A zeroed Float64Array of length n (see the module comment for where its memory comes from). */
export function float64Array(n: number): Float64Array {
  const bytes = n * 8;
  if (bytes > LARGEST_CARVED) return new Float64Array(n);
  if (used + bytes > SLAB_BYTES) {
    slab = new ArrayBuffer(SLAB_BYTES);
    used = 0;
  }
  const out = new Float64Array(slab, used, n);
  used += bytes;
  return out;
}
