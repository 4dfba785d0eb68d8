#!/bin/sh
# Build a local stand-in for debian:bookworm-slim when no registry is reachable.
#
# mmdebstrap writes a minbase root filesystem as a tarball to stdout and docker import turns
# it into an image (about 75 MB, 30-50 s). The merged-usr hook avoids installing usrmerge
# (and with it perl). The mirrors are the host's own deb822 sources, so apt inside image
# builds reaches the same mirror over plain HTTP and needs no CA.
# The project's Containerfiles say FROM debian:bookworm-slim and work unchanged for users
# who can pull the real image.
set -eu
TAG=${1:-debian:bookworm-slim}
SOURCES=${MMDEBSTRAP_SOURCES:-/etc/apt/sources.list.d/debian.sources}
if docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "make-base-image: $TAG exists; nothing to do" >&2
  exit 0
fi
if [ ! -r "$SOURCES" ]; then
  SOURCES=http://deb.debian.org/debian  # mmdebstrap then uses its default suites
fi
mmdebstrap --variant=minbase --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --aptopt='Acquire::Languages "none"' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  bookworm - "$SOURCES" \
  | docker import -c 'CMD ["bash"]' -m 'mmdebstrap minbase bookworm' - "$TAG"
