#!/usr/bin/env bash
# Sets up everything uwmbench needs on a fresh Debian machine, offline apart from the package
# registries: a virtual environment with the project (editable) and its pinned dependencies,
# and the system libraries for headless MuJoCo rendering. Idempotent: a second run with an
# unchanged pyproject.toml does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}

# UWMBENCH_BROWSER=1 (the test command sets it): also Debian's Chromium and ChromeDriver, for the
# report's browser check (tests/test_report_browser.py)
apt_pkgs=(libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6)
[ "${UWMBENCH_BROWSER:-0}" = 1 ] && apt_pkgs+=(chromium chromium-driver)
need_apt=()
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  for pkg in "${apt_pkgs[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
  done
  if [ ${#need_apt[@]} -gt 0 ]; then
    echo "[setup] apt-get install ${need_apt[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  fi
fi

stamp="$VENV/.uwmbench-setup"
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VENV/bin/python" -c "import uwmbench.methods" 2>/dev/null; then
  echo "[setup] environment up to date ($VENV)"
  exit 0
fi
[ -x "$VENV/bin/python" ] || { echo "[setup] creating $VENV"; "$PY" -m venv "$VENV"; }
# pip's own notes that say nothing to a user (a machine-wide find-links folder that is absent here,
# setuptools' editable-install banner) are dropped; errors and everything else pass through
quiet() { { grep -v -e "is ignored: it is neither a file nor a directory" -e "BuildBackendWarning: Editable installation" \
            -e "name as your package as they may take precedence" -e "Please be careful with folders in your working" \
            -e "^ *\*\*\*\**$" -e "^ *!!$" -e "^ *$" -e "with strategy, WheelFile" || true; } >&2; }
"$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel 2> >(quiet)
echo "[setup] installing uwmbench and its dependencies into $VENV (first time: a few minutes)"
"$VENV/bin/python" -m pip install -q -e ".[dev]" 2> >(quiet)
echo "$want" > "$stamp"
echo "[setup] done: $("$VENV/bin/python" -c 'import torch, libero.libero; print("torch", torch.__version__)') "
