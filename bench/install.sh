#!/usr/bin/env bash
# What `make bench` needs beyond the project's own dependencies: the peers' Python clients
# (bench/requirements.txt, into the venv), Debian's nats-server and redis-server, and Ruby
# with ruby-ffi-rzmq and ruby-msgpack for the Ruby publisher's figure (only when missing,
# and only as root). Anything that cannot be installed is reported; the harness then
# skips that peer and says so. Never fails the build.
# Usage: bash bench/install.sh [PYTHON]   (default .venv/bin/python)
set -u
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}

if ! "$PY" -m pip install --quiet -r bench/requirements.txt; then
    echo "bench/install.sh: pip could not install bench/requirements.txt;" \
         "peers whose client is missing will be skipped" >&2
fi

missing=()
command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
ruby -e 'require "ffi-rzmq"; require "msgpack"' >/dev/null 2>&1 \
    || missing+=(ruby ruby-ffi-rzmq ruby-msgpack)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "bench/install.sh: ${missing[*]} not installed (not root or no apt-get):" \
         "those peers will be skipped" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1
    apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
        || echo "bench/install.sh: apt-get could not install ${missing[*]}:" \
                "those peers will be skipped" >&2
fi
exit 0
