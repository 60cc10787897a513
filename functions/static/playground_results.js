// The playground's results: images drawn from PNGs or tensors, the downloads (a PNG grid, .npy), and the
// lines of numbers and progress. A module of playground.js.
import { $ } from "./playground_api.js";

/** "edm ρ=7" for a grid and its ρ. */
export function gridText(grid, rho) {
  return `${grid}${rho !== undefined && rho !== null ? ` ρ=${rho}` : ""}`;
}

/** Base64 of bytes. */
export function toBase64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

function fromBase64(text) {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

/** Sample `i` of planar float32 images [n, C, H, W] in [−1, 1] drawn into a canvas context at (x, y). */
function drawSample(ctx, values, shape, i, x, y) {
  const [, c, h, w] = shape;
  const image = ctx.createImageData(w, h);
  const base = i * c * h * w;
  for (let p = 0; p < h * w; p++) {
    for (let k = 0; k < 3; k++) {
      const v = values[base + (c === 3 ? k : 0) * h * w + p];
      image.data[4 * p + k] = Math.max(0, Math.min(255, Math.round((v + 1) * 127.5)));
    }
    image.data[4 * p + 3] = 255;
  }
  ctx.putImageData(image, x, y);
}

/** The images of a result as image URLs: its PNGs, or its tensor drawn (image shapes [n, C, H, W]). */
function imageUrls(result) {
  if (result.images) return result.images.map((im) => "data:image/png;base64," + im.png);
  const { shape, data } = result.tensor;
  const values = new Float32Array(fromBase64(data).buffer);
  const canvas = document.createElement("canvas");
  [canvas.width, canvas.height] = [shape[3], shape[2]];
  const ctx = canvas.getContext("2d");
  return result.seeds.map((_, i) => {
    drawSample(ctx, values, shape, i, 0, 0);
    return canvas.toDataURL("image/png");
  });
}

export function figures(result, container) {
  const urls = imageUrls(result);
  const img2img = result.strength !== undefined;
  container.replaceChildren(...urls.map((url, i) => {
    const seed = result.seeds[i];
    const fig = document.createElement("figure");
    const img = document.createElement("img");
    img.alt = img2img ? `image ${i}` : `seed ${seed}`;
    img.src = url;
    const cap = document.createElement("figcaption");
    cap.textContent = img2img ? `strength ${result.strength}` : String(seed);
    fig.append(img, cap);
    return fig;
  }));
}

/** Object URLs of the current downloads, released when replaced. */
let downloadUrls = [];

export function clearDownloads() {
  for (const u of downloadUrls) URL.revokeObjectURL(u);
  downloadUrls = [];
  $("downloads").classList.add("hidden");
  $("download-npy").classList.add("hidden");
  for (const id of ["download-png", "download-npy"]) {
    $(id).removeAttribute("href");
    delete $(id).dataset.bytes;
  }
  $("seed-used").textContent = "";
}

function offer(id, blob, label) {
  const url = URL.createObjectURL(blob);
  downloadUrls.push(url);
  const a = $(id);
  a.href = url;
  a.dataset.bytes = String(blob.size);
  a.title = `${label}, ${blob.size} bytes`;
  a.classList.remove("hidden");
}

/** A .npy file (format 1.0, little-endian float32, C order) of a tensor of `shape`. */
function npyBlob(shape, bytes) {
  const dims = shape.length === 1 ? `${shape[0]},` : shape.join(", ");
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${dims}), }`;
  const total = 10 + header.length + 1;
  header += " ".repeat((64 - (total % 64)) % 64) + "\n";
  const head = new Uint8Array(10 + header.length);
  head.set([0x93, 78, 85, 77, 80, 89, 1, 0]);
  new DataView(head.buffer).setUint16(8, header.length, true);
  head.set(Array.from(header, (ch) => ch.charCodeAt(0)), 10);
  return new Blob([head, bytes], { type: "application/octet-stream" });
}

/**
 * The result's downloads: the samples as one PNG grid (tiled as the server tiles them: near-square,
 * 2-px black padding) and, for a tensor output, the tensor as .npy; and the seed that was used.
 */
export async function showDownloads(result) {
  clearDownloads();
  const imgs = [...$("samples").querySelectorAll("img")];
  await Promise.all(imgs.map((im) => im.decode().catch(() => {})));
  if (imgs.length > 0) {
    const [w, h] = [imgs[0].naturalWidth, imgs[0].naturalHeight];
    const cols = Math.ceil(Math.sqrt(imgs.length)), rows = Math.ceil(imgs.length / cols);
    const canvas = document.createElement("canvas");
    [canvas.width, canvas.height] = [cols * (w + 2) + 2, rows * (h + 2) + 2];
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    imgs.forEach((im, i) => ctx.drawImage(im, 2 + (i % cols) * (w + 2), 2 + Math.floor(i / cols) * (h + 2)));
    const png = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
    if (png) offer("download-png", png, `${canvas.width}×${canvas.height} PNG`);
  }
  if (result.tensor) {
    offer("download-npy", npyBlob(result.tensor.shape, fromBase64(result.tensor.data)), ".npy");
  }
  $("seed-used").textContent = result.strength !== undefined
    ? ""
    : result.seeds.length > 1
    ? `seeds ${result.seeds[0]}…${result.seeds.at(-1)}`
    : `seed ${result.seeds[0]}`;
  $("downloads").classList.remove("hidden");
}

/**
 * One line of a result's numbers: nfe (ε evaluations), steps, calls (graph calls of every kind) and cost
 * (forward-pass equivalents, "est." when a ratio is a fallback), each per sample; the grid; timings.
 */
export function stats(r) {
  const t = r.timings || {};
  const parts = [`nfe ${r.nfe}`, `steps ${r.steps}`];
  if (r.calls !== undefined) parts.push(`calls ${r.calls}`);
  if (r.cost !== undefined) {
    parts.push(`cost ${Number(r.cost.toFixed(2))}${r.cost_estimated ? " (est.)" : ""}`);
  }
  if (r.grid !== undefined) parts.push(`grid ${gridText(r.grid, r.rho)}`);
  parts.push(
    `queue ${Math.round(t.queue_ms)} ms`,
    `compute ${Math.round(t.compute_ms)} ms`,
    `total ${Math.round(t.total_ms)} ms`,
  );
  return parts.join(" · ");
}

/** "12/40 steps · 30% · ETA 3.1 s" from a progress event and the run's start time. */
export function progressText(p, started) {
  const total = p.steps_total ?? p.n, done = p.steps_done ?? p.done;
  const pct = total > 0 ? Math.floor((100 * done) / total) : 0;
  const elapsed = (performance.now() - started) / 1000;
  const eta = done >= total
    ? "done"
    : done > 0
    ? `ETA ${((elapsed / done) * (total - done)).toFixed(1)} s`
    : "ETA ?";
  return `${p.phase === "queued" ? "queued · " : ""}${done}/${total} ${
    p.steps_total !== undefined ? "steps" : "samples"
  } · ${pct}% · ${eta}`;
}
