#!/usr/bin/env bash
# Proves that each service's image install is self-sufficient, without a Docker engine:
# copies exactly what the Dockerfile copies into a scratch directory, runs the same
# `uv sync --locked --no-dev --no-editable --package runstream-<service>` into a fresh
# virtual environment per service, then imports every module of that service (and, for
# the CLI, runs `runstream --help`). A missing dependency shows up as the failing import.
#
#   deploy/docker/check-installs.sh [service ...]     (default: every service)
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
UV="${UV:-$(command -v uv || echo "$ROOT/.tools/bin/uv")}"
SERVICES=("$@")
[ ${#SERVICES[@]} -eq 0 ] && SERVICES=(gateway projector analysis_worker execution_worker chart_worker cli)

WORK="$(mktemp -d /tmp/rs-image-check.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
CTX="$WORK/ctx"
mkdir -p "$CTX"
# The same files the Dockerfile copies (and .dockerignore filters).
cp "$ROOT/pyproject.toml" "$ROOT/uv.lock" "$CTX/"
(cd "$ROOT" && tar -c --exclude=__pycache__ --exclude=.pytest_cache --exclude='*/tests' libs services) \
  | tar -x -C "$CTX"

failed=()
for svc in "${SERVICES[@]}"; do
  pkg="runstream-${svc//_/-}"
  venv="$WORK/venv-$svc"
  echo "== $svc ($pkg)"
  if ! (cd "$CTX" && UV_PROJECT_ENVIRONMENT="$venv" "$UV" sync --quiet --locked --no-dev \
        --no-editable --package "$pkg"); then
    failed+=("$svc: uv sync failed"); continue
  fi
  # Run from / so nothing but the virtual environment is importable.
  if ! (cd / && "$venv/bin/python" -I - "$svc" <<'PY'
import importlib, pkgutil, sys
svc = sys.argv[1]
top = importlib.import_module(f"runstream.{svc}")
names = [top.__name__] + [m.name for m in pkgutil.walk_packages(top.__path__, top.__name__ + ".")]
bad = []
for name in names:
    try:
        importlib.import_module(name)
    except ImportError as exc:  # ModuleNotFoundError included
        bad.append(f"{name}: {type(exc).__name__}: {exc}")
for line in bad:
    print("   FAIL", line)
print(f"   imported {len(names) - len(bad)}/{len(names)} modules")
sys.exit(1 if bad else 0)
PY
  ); then
    failed+=("$svc: import failed"); continue
  fi
  if [ "$svc" = cli ] && ! (cd / && "$venv/bin/runstream" --help >/dev/null); then
    failed+=("cli: runstream --help failed"); continue
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  printf 'FAILED: %s\n' "${failed[@]}"; exit 1
fi
echo "every service installs and imports on its own"
