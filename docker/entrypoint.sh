#!/bin/sh
# On first start: create the node's keys and genesis (tongban init) and its CA and server
# certificate (tongban pki init). Then run tongban. Both are skipped once done: keys are never
# made again by accident, and a node whose keys do not match its store refuses to start.
set -eu
if [ ! -f "$TONGBAN_DATA_DIR/secrets/log.key" ]; then
  tongban init --admin "${TONGBAN_ADMIN_NAME:-operator}"
fi
if [ ! -f "$TONGBAN_DATA_DIR/pki/ca.pem" ]; then
  tongban pki init --node "${TONGBAN_NODE_NAME:-node}" --dns localhost "${TONGBAN_NODE_HOST:-node}" --ip 127.0.0.1
fi
exec tongban "$@"
