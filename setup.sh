#!/usr/bin/env bash
# One-time set-up on a fresh Debian machine with Python 3.11: the software-rendering library for
# MuJoCo (OSMesa), the Chromium browser for the web apps' browser tests (console, viewer), and a
# virtualenv at .venv with the pinned requirements. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"
APT_PACKAGES=()
if ! ldconfig -p 2>/dev/null | grep -q libOSMesa.so; then
  APT_PACKAGES+=(libosmesa6)  # MuJoCo software rendering.
fi
if ! command -v chromium >/dev/null 2>&1; then
  # Headless Chromium for the console's and the viewer's browser tests (Playwright drives this Debian build;
  # Playwright's own browser download is not used).
  APT_PACKAGES+=(chromium)
fi
if [ ${#APT_PACKAGES[@]} -gt 0 ]; then
  echo "setup: installing ${APT_PACKAGES[*]} (Debian packages)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q >/dev/null
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${APT_PACKAGES[@]}" >/dev/null
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
