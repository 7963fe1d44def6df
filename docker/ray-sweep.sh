#!/bin/sh
# `pq-sweep` in the ray image: the sweep's driver, run inside the head's container
#     docker compose --profile ray exec head pq-sweep --config configs/thesis.yaml
# A Ray driver needs a raylet on its own node, which the head container has (a container without one
# is refused by Ray), and Ray Client (ray://head:10001) cannot carry the streaming tasks the ray
# executor uses. `--address auto` finds the head started in this container. Through the entrypoint
# beside this script, as every service: umask 0002 and a writable HOME for the caller's uid.
here=$(dirname "$(readlink -f "$0")")
exec "$here/entrypoint.sh" harness run --executor ray --address auto "$@"
