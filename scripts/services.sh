#!/usr/bin/env bash
# Make sure the real services the tests use are available, installing only what is missing.
# Services are started by the test fixtures on free loopback ports and stopped after the run:
#   - S3: moto in server mode (Python package, installed by `pip install -e .[test]`).
# System tools (Debian packages, installed here when missing; never fatal if apt is unavailable):
#   - gdcmanon (libgdcm-tools): reference de-identifier for benchmarks/bench_deidentify.py.
#   - storescu, echoscu (dcmtk): the DICOM senders tests/test_receiver.py pushes studies with.
set -euo pipefail
[ "${1:-}" = "ocr" ] || echo "services: S3 via moto server (started by the test fixtures on 127.0.0.1)"

APT_UPDATED=0

# ensure_pkg CMD PACKAGE: install Debian PACKAGE when command CMD is not on PATH.
# Runs `apt-get update` at most once per run. Never fails the build: when apt-get is
# missing, we are not root, or the install fails, it prints a warning and returns 0.
ensure_pkg() {
    local cmd=$1 pkg=$2
    if command -v "$cmd" >/dev/null 2>&1; then
        echo "services: $cmd found ($(command -v "$cmd"))"
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "services: WARNING: $cmd is missing and apt-get is not available; install package '$pkg' by hand" >&2
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "services: WARNING: $cmd is missing; run as root (or: sudo apt-get install -y $pkg) to install it" >&2
        return 0
    fi
    export DEBIAN_FRONTEND=noninteractive
    if [ "$APT_UPDATED" -eq 0 ]; then
        echo "services: apt-get update"
        if ! apt-get update -qq >/dev/null; then
            echo "services: WARNING: apt-get update failed; trying to install $pkg from the current lists" >&2
        fi
        APT_UPDATED=1
    fi
    echo "services: installing $pkg (for $cmd)"
    if ! apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null; then
        echo "services: WARNING: apt-get install $pkg failed; $cmd stays unavailable" >&2
        return 0
    fi
    if command -v "$cmd" >/dev/null 2>&1; then
        echo "services: $cmd installed ($(command -v "$cmd"))"
    else
        echo "services: WARNING: $pkg installed but $cmd is still not on PATH" >&2
    fi
    return 0
}

# OCR of burned-in text (extra `ocr`; pixel clean's text detection): the tesseract program
ensure_pkg tesseract tesseract-ocr
# `services.sh ocr`: only tesseract (what `make demo` needs)
if [ "${1:-}" = "ocr" ]; then
    exit 0
fi
ensure_pkg gdcmanon libgdcm-tools
# the DICOM receiver's tests send with dcmtk's storescu and echoscu, as a site would
ensure_pkg storescu dcmtk

# Azure Blob: Azurite (npm), installed into .services/ (git-ignored) when node and npm exist.
# The test fixture starts `azurite-blob` on a free loopback port and stops it after the run.
if [ -x .services/node_modules/.bin/azurite-blob ] || command -v azurite-blob >/dev/null 2>&1; then
    echo "services: azurite found"
elif command -v npm >/dev/null 2>&1; then
    echo "services: installing azurite (npm) into .services/"
    if ! npm install --silent --no-audit --no-fund --prefix .services azurite >/dev/null 2>&1; then
        echo "services: WARNING: npm install azurite failed; the Azure Blob tests will be skipped" >&2
    fi
else
    echo "services: WARNING: node/npm not found; the Azure Blob tests will be skipped" >&2
fi
