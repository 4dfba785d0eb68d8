#!/bin/sh
# Build the tempmail sidecar image and the example Postfix image from this checkout.
#
# Works on a machine whose containers cannot reach PyPI (only the host's pip can):
#   1. the sidecar's runtime dependencies and its build backend are fetched as wheels on the
#      host into container/wheels/ (git-ignored), only when that requirement list changes;
#   2. the sidecar is built with --build-arg PIP_NO_INDEX=1, so pip inside the build uses
#      only those wheels; apt inside the build reaches Debian's mirror via --network=host.
# Idempotent and cached: a second run with no source change takes about a second.
#
# Environment: TEMPMAIL_IMAGE, TEMPMAIL_POSTFIX_IMAGE (image names; the defaults are the ones
# deploy/kubernetes and the tests use), PYTHON (default .venv/bin/python, else python3),
# BUILD_QUIET=1 (print only the image ids).
set -eu
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
VERSION=$("$PYTHON" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
SOURCE=$("$PYTHON" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["urls"]["Source"])')
# The images' OCI labels name the commit they were built from ("unknown" outside a checkout).
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
SIDECAR_IMAGE=${TEMPMAIL_IMAGE:-localhost/tempmail:$VERSION}
POSTFIX_IMAGE=${TEMPMAIL_POSTFIX_IMAGE:-localhost/tempmail-postfix:$VERSION}

# --- 1. wheels ---------------------------------------------------------------------------
WHEELS=container/wheels
REQUIREMENTS=$("$PYTHON" -c '
import tomllib
data = tomllib.load(open("pyproject.toml", "rb"))
print("\n".join(data["project"]["dependencies"] + data["build-system"]["requires"]))')
if [ "$(cat "$WHEELS/.requirements" 2>/dev/null || true)" != "$REQUIREMENTS" ]; then
  find "$WHEELS" -name '*.whl' -delete
  printf '%s\n' "$REQUIREMENTS" > "$WHEELS/.requirements.in"
  # --only-binary: every dependency must come as a wheel; nothing is compiled on the host.
  "$PYTHON" -m pip wheel --quiet --disable-pip-version-check --only-binary=:all: \
    --wheel-dir "$WHEELS" -r "$WHEELS/.requirements.in"
  printf '%s\n' "$REQUIREMENTS" > "$WHEELS/.requirements"
fi

# --- 2. images -----------------------------------------------------------------------------
# The classic builder: BuildKit needs buildx with newer clients, and nothing here needs it.
# --network=host: there is no bridge network; --force-rm: no containers left after a failure.
build() {
  if [ "${BUILD_QUIET:-}" = 1 ]; then
    DOCKER_BUILDKIT=0 docker build --quiet --network=host --force-rm "$@"
  else
    DOCKER_BUILDKIT=0 docker build --network=host --force-rm "$@"
  fi
}
# Both images carry the version, source and commit as OCI labels (see the Containerfiles).
labelled_build() {
  build --build-arg "TEMPMAIL_VERSION=$VERSION" --build-arg "TEMPMAIL_SOURCE=$SOURCE" \
    --build-arg "TEMPMAIL_REVISION=$REVISION" "$@"
}
labelled_build --build-arg PIP_NO_INDEX=1 -t "$SIDECAR_IMAGE" -f container/Containerfile .
labelled_build -t "$POSTFIX_IMAGE" -f container/postfix/Containerfile container/postfix
# A plain Debian 12 mail host (Debian's Postfix, systemd; nothing of tempmail) for the tests that
# run the README's host and systemd sections verbatim (tests/integration/debian_host.py).
HOST_IMAGE=${TEMPMAIL_HOST_IMAGE:-localhost/tempmail-test-host:$VERSION}
build -t "$HOST_IMAGE" -f tests/integration/images/debian-host/Containerfile \
  tests/integration/images/debian-host
