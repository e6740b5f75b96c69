#!/usr/bin/env bash
# Validate docker-compose.yml without a Docker engine (`config` only parses and interpolates):
#   1. with .env.example as the .env (every profile): must pass;
#   2. with any one secret missing: must FAIL and name it (secrets have no defaults).
# Uses `docker compose` (v2 plugin) or `docker-compose`; installs Debian's docker-compose when
# neither exists and we are root on a Debian/Ubuntu machine. Runs under `env -i` so that variables
# of the calling shell (which compose would prefer over the env file) cannot hide a missing one.
set -euo pipefail
cd "$(dirname "$0")/.."

find_compose() {
    if docker compose version >/dev/null 2>&1; then
        echo "docker compose"
    elif command -v docker-compose >/dev/null 2>&1; then
        echo "docker-compose"
    fi
}

compose=$(find_compose)
if [ -z "$compose" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "check-compose: installing Debian's docker-compose" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
        compose=$(find_compose)
    fi
    if [ -z "$compose" ]; then
        echo "check-compose: need 'docker compose' or 'docker-compose' (apt-get install docker-compose)" >&2
        exit 1
    fi
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp .env.example "$tmp/.env"
run() { env -i PATH="$PATH" HOME="$tmp" $compose -f docker-compose.yml "$@"; }

for profile in "" cpu; do
    run --env-file "$tmp/.env" ${profile:+--profile "$profile"} config -q
done
echo "check-compose: docker-compose.yml is valid ($compose, profiles: default, cpu)"

# each secret is required: drop it from the env file and compose must refuse
for secret in POSTGRES_PASSWORD REDIS_PASSWORD REPROTRAIN_API_TOKENS; do
    grep -v "^$secret=" "$tmp/.env" >"$tmp/missing.env"
    if run --env-file "$tmp/missing.env" config -q 2>"$tmp/err"; then
        echo "check-compose: FAIL: compose accepted a configuration without $secret" >&2
        exit 1
    fi
    grep -q "$secret" "$tmp/err" || { cat "$tmp/err" >&2; echo "check-compose: FAIL: error does not name $secret" >&2; exit 1; }
done
echo "check-compose: without POSTGRES_PASSWORD, REDIS_PASSWORD or REPROTRAIN_API_TOKENS compose refuses to run"
