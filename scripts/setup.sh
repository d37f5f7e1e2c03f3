#!/usr/bin/env bash
# Sets up everything Lucent needs on Debian 12 (root, no display): system packages
# (DCMTK, Orthanc, PostgreSQL, Xvfb, Mesa) and the project's virtual environment.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3

# python3 + python3-venv (ensurepip) + ca-certificates: the .venv step below; a minimal
# Debian 12 has none of them, and "python3 -m venv" fails without ensurepip.
SYSTEM_PACKAGES=(python3 python3-venv ca-certificates dcmtk dicom3tools orthanc postgresql ffmpeg xvfb xauth libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libxcb-cursor0 chromium libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-xkb1 rsyslog rsyslog-gnutls)

missing=()
for p in "${SYSTEM_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The Debian packages start services we do not want running: tests start their own.
  for svc in orthanc postgresql; do
    (command -v systemctl >/dev/null && systemctl stop "$svc" 2>/dev/null) || true
    service "$svc" stop >/dev/null 2>&1 || true
  done
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $PY"
  "$PY" -m venv .venv
fi
stamp=.venv/.lucent-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing the project into .venv"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".[dev]"
  touch "$stamp"
fi
# Byte-compile our own packages (an editable install leaves them as source): with
# PYTHONDONTWRITEBYTECODE set, as in many containers, every server, DICOM worker and CLI
# process otherwise compiled ~40,000 lines again at start (0.6-0.8 s each). Quick when
# nothing changed.
.venv/bin/python -m compileall -q -j 0 lucent server workstation admin_console tests bench >/dev/null
echo "setup: ready"
