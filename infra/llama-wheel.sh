#!/usr/bin/env bash
# Builds and installs llama-cpp-python for any x86-64 CPU with AVX2: no native tuning, no AVX-512,
# no AMX (ggml's AMX path crashes on some CPUs of this machine kind), whatever the build host has.
#   infra/llama-wheel.sh install   build the wheel once (about 7 minutes on 2 cores), install it
#   infra/llama-wheel.sh path      print the wheel's folder
#   infra/llama-wheel.sh flags     print the CMake flags the wheel is built with
# The wheel lives in a folder named by the version and a hash of the flags, so a wheel built with
# other flags (pip's own cache keys on the sdist alone) is never picked up. FUSION_WHEELS moves the
# folder (default ~/.cache/fusion/wheels, shared by every clone on the machine).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
python=${FUSION_PYTHON:-$root/.venv/bin/python}
version=0.3.36
flags="-DGGML_NATIVE=OFF -DGGML_CPU_ALL_VARIANTS=OFF -DGGML_BACKEND_DL=OFF \
-DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
-DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF \
-DGGML_AVX512_BF16=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
key=$(printf '%s %s' "$version" "$flags" | sha256sum | cut -c1-16)
dir=${FUSION_WHEELS:-${XDG_CACHE_HOME:-$HOME/.cache}/fusion/wheels}/llama-cpp-python-$version-$key

log() { echo "llama-cpp-python: $*" >&2; }

wheel() { compgen -G "$dir/llama_cpp_python-$version-*.whl" | head -1; }

build() {
  mkdir -p "$dir"
  log "building $version for AVX2 x86-64 (no native tuning, no AVX-512, no AMX) into $dir"
  log "this takes about 7 minutes on 2 cores, once per machine"
  # --no-cache-dir: pip's wheel cache would hand back a wheel built with other flags.
  CMAKE_ARGS="$flags" CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
    "$python" -m pip wheel --no-deps --no-cache-dir --no-binary llama-cpp-python \
    --wheel-dir "$dir.partial" "llama-cpp-python==$version"
  mv "$dir.partial"/llama_cpp_python-*.whl "$dir/"
  rmdir "$dir.partial"
  echo "$flags" > "$dir/flags.txt"
}

install() {
  [[ -n $(wheel) ]] || build
  local file; file=$(wheel)
  log "installing $(basename "$file")"
  "$python" -m pip install --quiet --force-reinstall --no-deps "$file"
  "$python" -m pip install --quiet "$file[server]"
}

case "${1:-}" in
  install) install ;;
  path) echo "$dir" ;;
  flags) echo "$flags" ;;
  *) echo "usage: $0 install|path|flags" >&2; exit 2 ;;
esac
