#!/usr/bin/env bash
# Make sure the Debian packages libpb needs are present.  As root it
# installs what is missing; otherwise it prints the exact apt-get line and
# fails.  Usage: scripts/deps.sh [--fuzz]
set -euo pipefail
pkgs=(build-essential cmake pkg-config clang libuv1-dev libssl-dev libsqlite3-dev
      python3-twisted python3-openssl python3-service-identity twisted-doc valgrind doxygen
      libarchive-dev buildbot buildbot-worker)
if [ "${1:-}" = "--fuzz" ] || [ "${PB_WITH_FUZZ:-0}" = 1 ]; then pkgs+=(libclang-rt-14-dev); fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
else
  echo "deps: missing Debian packages; run as root:" >&2
  echo "  sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
