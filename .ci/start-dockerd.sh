#!/bin/sh
# Start dockerd for CI on a machine without a registry, unless one is already answering.
#
# --bridge=none: no docker0 and no 172.x addresses; every container uses --network=host or
#   --network=none (a container started without --network gets only its own loopback).
# --iptables=false --ip-masq=false --ip-forward=false: dockerd leaves the host's firewall,
#   NAT and ip_forward alone.
# HTTP(S)_PROXY pointing at a closed loopback port is a pull guard: an accidental pull
#   (a missing image, testcontainers' Ryuk, a "# syntax=" line) fails at once on 127.0.0.1
#   instead of reaching out. Containers and builds do not inherit dockerd's environment.
set -eu
LOG=${DOCKERD_LOG:-/var/log/dockerd.log}
if docker info >/dev/null 2>&1; then
  exit 0
fi
HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY= \
  nohup dockerd --bridge=none --iptables=false --ip-masq=false --ip-forward=false \
  >>"$LOG" 2>&1 </dev/null &
i=0
until docker info >/dev/null 2>&1; do
  i=$((i + 1))
  if [ "$i" -gt 300 ]; then
    echo "start-dockerd: dockerd not ready after 30 s; last lines of $LOG:" >&2
    tail -20 "$LOG" >&2
    exit 1
  fi
  sleep 0.1
done
