#!/usr/bin/env bash
# Create (or reuse) the virtualenv at .venv in the repository root and install clipva into it, with the exact
# set of packages it is tested with (requirements.lock; pyproject.toml only declares ranges).
# Usage: scripts/setup.sh [--test]   (--test adds the test tools: requirements-test.lock)
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
lock=requirements.lock
[ "${1:-}" = "--test" ] && lock=requirements-test.lock
.venv/bin/pip install --quiet --disable-pip-version-check -r "$lock" 2> >(grep -v "^WARNING: Location" >&2)
.venv/bin/pip install --quiet --disable-pip-version-check --no-deps -e . 2> >(grep -v "^WARNING: Location" >&2)
