#!/usr/bin/env bash
# Create (or reuse) the virtualenv at .venv in the repository root and install clipva into it.
# Usage: scripts/setup.sh [--test]   (--test adds the test tools)
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
# torch and torchvision first, pinned together (other versions download gigabytes or fail to import together)
.venv/bin/pip install --quiet --disable-pip-version-check torch==2.14.1 torchvision==0.29.1 2> >(grep -v "^WARNING: Location" >&2)
.venv/bin/pip install --quiet --disable-pip-version-check -e ".${extras}" 2> >(grep -v "^WARNING: Location" >&2)
