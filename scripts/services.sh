#!/usr/bin/env bash
# Make sure the real services the tests use are available, installing only what is missing.
# Services are started by the test fixtures on free loopback ports and stopped after the run:
#   - S3: moto in server mode (Python package, installed by `pip install -e .[test]`).
set -euo pipefail
echo "services: S3 via moto server (started by the test fixtures on 127.0.0.1)"
