#!/bin/sh
# Entrypoint of the PQ Harness containers (compose.yaml). Runs as the caller's uid:gid (compose
# `user:`), so files on the mounted volumes belong to the caller; umask 0002 keeps them writable for
# the group (several users share the cache). Then the NGC entrypoint, which enables CUDA forward
# compatibility on older data-center drivers, runs the command, with its banner on stderr: stdout is
# the command's alone (`docker compose run --rm hw --json > hw.json` is JSON).
#
# Test hooks (never set in the images): HARNESS_NGC_ENTRYPOINT replaces the NGC entrypoint's path,
# HARNESS_VOLUMES the list of directories checked for writability.
umask "${HARNESS_UMASK:-0002}"

fail() {
  echo "pq-harness: $*" >&2
  exit 2
}

# A uid without a passwd entry gets HOME=/ (not writable): give libraries a writable HOME.
if [ -z "${HOME:-}" ] || [ "$HOME" = "/" ] || [ ! -w "$HOME" ]; then
  HOME=/tmp/pq-home
  export HOME
  mkdir -p "$HOME"
fi

# Ray's token authentication (RAY_AUTH_MODE=token, set by the compose `ray` profile) with no token
# would start nothing useful: say so here, where Ray starts, not in every compose command.
if [ "${RAY_AUTH_MODE:-}" = "token" ] && [ -z "${RAY_AUTH_TOKEN:-}" ]; then
  fail "HARNESS_RAY_TOKEN is not set: export HARNESS_RAY_TOKEN=\$(openssl rand -hex 32) (the same on every Ray host) and start again"
fi

# A bind-mounted volume hides the image's writable directory; a host directory owned by another uid
# (or created by dockerd as root) would fail the first cell deep inside a run. Read-only mounts are
# the caller's choice (e.g. a shared dataset directory) and are left alone.
read_only_mount() {
  [ -r /proc/self/mounts ] && awk -v d="$1" '$2 == d { split($4, o, ","); ro = (o[1] == "ro") } END { exit !ro }' /proc/self/mounts
}
for dir in ${HARNESS_VOLUMES:-/data /cache /results /torch}; do
  [ -d "$dir" ] || continue
  read_only_mount "$dir" && continue
  if [ ! -w "$dir" ] || [ ! -x "$dir" ]; then
    case "$dir" in
      /data) host='${HARNESS_DATA_DIR:-./data}' ;;
      /cache) host='${HARNESS_CACHE_HOST_DIR:-./.harness-cache/harness}' ;;
      /results) host='${HARNESS_RESULTS_DIR:-./results}' ;;
      /torch) host='${HARNESS_TORCH_CACHE:-./.harness-cache/torch}' ;;
      *) host="the host directory mounted at $dir" ;;
    esac
    fail "$dir is not writable by uid $(id -u) (owner $(stat -c %u:%g "$dir")): on the host, export HARNESS_UID=\$(id -u) HARNESS_GID=\$(id -g) if you own $host, else sudo chown -R $(id -u):$(id -g) $host"
  fi
done

ngc="${HARNESS_NGC_ENTRYPOINT:-/opt/nvidia/nvidia_entrypoint.sh}"
if [ ! -x "$ngc" ]; then
  exec "$@"
fi
# The NGC entrypoint sources /opt/nvidia/entrypoint.d/* (forward compatibility, environment), prints
# its banner to stdout and execs its arguments. Run it with stdout on stderr and the real stdout kept
# on fd 3; the command it execs gets fd 3 back as stdout. The environment it set up is kept (one exec
# chain, no subshell).
exec 3>&1 1>&2
exec "$ngc" /bin/sh -c 'exec "$@" 1>&3 3>&-' pq-harness "$@"
