#!/usr/bin/env bash
# Build libpb and run the main demo: the seed chapter's chat server in C,
# on localhost:8800 (Ctrl-C stops it).  Its user store is build/chat.db
# (alice/1234, bob/secret, carol/fido, created on first run).
# Usage: scripts/demo.sh [chatserver options, e.g. --port 8801]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
echo "demo: talk to it from another terminal with"
echo "  build/bin/chatclient --user bob --password secret"
echo "  /usr/bin/python3 tests/interop/cred_run_listing.py /usr/share/doc/twisted-doc/howto/listings/pb/chatclient.py --port 8800"
exec build/bin/chatserver --db build/chat.db "$@"
