#!/usr/bin/env bash
# Installs Debian's chromium for the report's browser test when it is missing (make test runs this).
# Needs root or password-less sudo; without either it says so and the browser test is skipped.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
  echo "install-browser: chromium is missing and this user cannot apt-get install it; the browser test will be skipped" >&2
  exit 0
fi
echo "install-browser: apt-get install chromium (for the report's browser test)"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
command -v chromium
