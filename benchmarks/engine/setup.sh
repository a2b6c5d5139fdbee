#!/usr/bin/env bash
# Builds what benchmarks/engine/run.py compares against; safe to run again (skips what is there).
#   llama-server   llama.cpp's own HTTP server, built from the sources vendored in the
#                  llama-cpp-python sdist (the same llama.cpp the embedded engine runs), into
#                  benchmarks/engine/.work/llama-server
#   llama-cpp-python's own server: its [server] extra's packages that Switchgear's venv lacks
#                  (fastapi, starlette, sse-starlette, starlette-context, pydantic-settings) go
#                  into benchmarks/engine/.work/server-libs (pip --target, no dependencies, so
#                  nothing in the venv is shadowed); run.py puts that folder on its PYTHONPATH.
# llama-server gets the same cmake flags as the embedded engine (scripts/llama-cmake-args), so
# both run the same kernels. Only PyPI is reached. The build takes a long while on 2 cores (JOBS=2 by default).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="$HERE/.work"
PYTHON="${BENCH_PYTHON:-python3}"
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
JOBS="${JOBS:-2}"
mkdir -p "$WORK"

build_llama_server() {
  if [ -x "$WORK/llama-server" ]; then
    echo "setup: llama-server already built"
    return
  fi
  local sdist="$WORK/sdist"
  mkdir -p "$sdist"
  if [ ! -d "$sdist/llama_cpp_python-$VERSION" ]; then
    echo "setup: downloading the llama-cpp-python $VERSION sdist"
    "$PYTHON" -m pip download -q --no-binary :all: --no-deps -d "$sdist" \
      "llama-cpp-python==$VERSION"
    tar -xzf "$sdist"/llama_cpp_python-"$VERSION".tar.gz -C "$sdist"
  fi
  local src="$sdist/llama_cpp_python-$VERSION/vendor/llama.cpp"
  echo "setup: building llama-server from $src (-j$JOBS)"
  cmake -S "$src" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=ON $("$HERE/../../scripts/llama-cmake-args") >"$WORK/cmake.log"
  cmake --build "$WORK/build" --target llama-server -j "$JOBS" >"$WORK/build.log"
  cp "$WORK/build/bin/llama-server" "$WORK/llama-server"
}

install_server_libs() {
  local libs="$WORK/server-libs"
  if PYTHONPATH="$libs" "$PYTHON" -c "import llama_cpp.server.app" 2>/dev/null; then
    echo "setup: llama-cpp-python's server is importable"
    return
  fi
  echo "setup: llama-cpp-python's server packages into $libs"
  "$PYTHON" -m pip install -q --no-deps --target "$libs" "fastapi>=0.100" "starlette" \
    "sse-starlette>=1.6.1" "starlette-context>=0.3.6,<0.4" "pydantic-settings>=2.0.1" \
    annotated-doc python-dotenv
}

install_server_libs
build_llama_server
echo "setup: done"
