#!/bin/sh
# Entrypoint of the PQ Harness containers (compose.yaml). Runs as the caller's uid:gid (compose
# `user:`), so files on the mounted volumes belong to the caller; umask 0002 keeps them writable for
# the group (several users share the cache). Then the NGC entrypoint, which enables CUDA forward
# compatibility on older data-center drivers, runs the command, with its banner on stderr: stdout is
# the command's alone (`docker compose run --rm hw --json > hw.json` is JSON).
#
# Test hooks (never set in the images): HARNESS_NGC_ENTRYPOINT replaces the NGC entrypoint's path,
# HARNESS_VOLUMES the list of directories checked for writability, HARNESS_READ_VOLUMES the list of
# directories checked for readability.
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
  fail "HARNESS_RAY_TOKEN is not set: on the host, echo \"HARNESS_RAY_TOKEN=\$(openssl rand -hex 32)\" >> .env (the same on every Ray host) and start again"
fi

# A bind-mounted volume hides the image's writable directory; a host directory owned by another uid
# (or created by dockerd as root) would fail the first cell deep inside a run. /cache, /results and
# /torch are written; /data is only read (datasets; `harness data fetch` is the one writer and says
# so itself), so a shared dataset directory owned by someone else, or mounted read-only, is fine.
# Read-only mounts of the others are the caller's choice and are left alone.
read_only_mount() {
  [ -r /proc/self/mounts ] && awk -v d="$1" '$2 == d { split($4, o, ","); ro = (o[1] == "ro") } END { exit !ro }' /proc/self/mounts
}
host_dir() {
  case "$1" in
    /data) echo '${HARNESS_DATA_DIR:-./data}' ;;
    /cache) echo '${HARNESS_CACHE_HOST_DIR:-./.harness-cache/harness}' ;;
    /results) echo '${HARNESS_RESULTS_DIR:-./results}' ;;
    /torch) echo '${HARNESS_TORCH_CACHE:-./.harness-cache/torch}' ;;
    *) echo "the host directory mounted at $1" ;;
  esac
}
for dir in ${HARNESS_VOLUMES:-/cache /results /torch}; do
  [ -d "$dir" ] || continue
  read_only_mount "$dir" && continue
  if [ ! -w "$dir" ] || [ ! -x "$dir" ]; then
    fail "$dir is not writable by uid $(id -u) (owner $(stat -c %u:%g "$dir")): on the host, put HARNESS_UID=\$(id -u) and HARNESS_GID=\$(id -g) in .env if you own $(host_dir "$dir"), else sudo chown -R $(id -u):$(id -g) $(host_dir "$dir")"
  fi
done
for dir in ${HARNESS_READ_VOLUMES:-/data}; do
  [ -d "$dir" ] || continue
  if [ ! -r "$dir" ] || [ ! -x "$dir" ]; then
    fail "$dir is not readable by uid $(id -u) (owner $(stat -c %u:%g "$dir"), mode $(stat -c %a "$dir")): on the host, make $(host_dir "$dir") readable for uid $(id -u) (e.g. chmod -R a+rX), or set HARNESS_UID/HARNESS_GID in .env to its owner's"
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
