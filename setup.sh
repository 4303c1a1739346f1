#!/usr/bin/env bash
# One-time set-up on a fresh Debian machine with Python 3.11: the software-rendering library for
# MuJoCo (OSMesa) and a virtualenv at .venv with the pinned requirements. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"
if ! ldconfig -p 2>/dev/null | grep -q libOSMesa.so; then
  echo "setup: installing libosmesa6 (MuJoCo software rendering)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q libosmesa6 >/dev/null
fi
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  echo "setup: installing chromium (the viewer's browser tests drive it through Playwright)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q chromium >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
if ! cmp -s requirements.txt .venv/.requirements-installed; then
  echo "setup: installing requirements into .venv (about 3 GB, a few minutes the first time)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  cp requirements.txt .venv/.requirements-installed
fi
