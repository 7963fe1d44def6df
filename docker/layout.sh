#!/bin/sh
# The images' filesystem layout (run by the Dockerfiles as `sh docker/layout.sh`; the tests run it under a
# scratch root: `sh docker/layout.sh /tmp/root`).
# - /data /cache /results /torch exist and are writable by any uid when no volume is mounted there (1777).
# - /workspace, the working directory, mirrors the repository: results, data and .harness-cache are links
#   to the volumes, so a relative path (configs/demo.yaml's `out_dir: results/demo`, the `results`
#   default of `harness report` and `harness compare`) lands on a mounted volume as it does in the clone,
#   never in the image (root-owned, and lost with the container). compose.yaml mounts configs/ there.
set -eu
root="${1:-}"
mkdir -p "$root/data" "$root/cache" "$root/results" "$root/torch" "$root/workspace"
chmod 1777 "$root/data" "$root/cache" "$root/results" "$root/torch"
ln -sfn "$root/results" "$root/workspace/results"
ln -sfn "$root/data" "$root/workspace/data"
ln -sfn "$root/cache" "$root/workspace/.harness-cache"
