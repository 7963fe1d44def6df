#!/bin/sh
# Entrypoint of the PQ Harness containers (compose.yaml). Runs as the caller's uid:gid (compose
# `user:`), so files on the mounted volumes belong to the caller; umask 0002 keeps them writable for
# the group (several users share the cache). Then the NGC entrypoint, which enables CUDA forward
# compatibility on older data-center drivers, runs the command.
umask "${HARNESS_UMASK:-0002}"
# A uid without a passwd entry gets HOME=/ (not writable): give libraries a writable HOME.
if [ -z "${HOME:-}" ] || [ "$HOME" = "/" ] || [ ! -w "$HOME" ]; then
  HOME=/tmp/pq-home
  export HOME
  mkdir -p "$HOME"
fi
exec /opt/nvidia/nvidia_entrypoint.sh "$@"
