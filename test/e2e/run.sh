#!/bin/sh
# Runs inside the end-to-end test's container, as uid 1000, under the gateway shim:
#   node /run/gateway/shim.mjs -- sh /opt/clients/e2e/run.sh CLIENT-COMMAND...
# Runs one client command with a fresh writable HOME, then prints one JSON report (report.mjs) of
# what the test checks: the client's output and status, the environment, a scan of the visible
# filesystem for the real keys, and a direct connection attempt to the stand-in's host port.
set -u
mkdir -p "$HOME" "${CODEX_HOME:-$HOME/.codex}" /tmp/work /tmp/e2e-out
# The scan must find this (proof that it reads $HOME); its SHA-256 is among the needles.
printf 'e2e-canary-1b9d6f3a0c\n' > "$HOME/canary.txt"
# Codex reads its provider from $CODEX_HOME/config.toml: use the one the agent image ships.
if [ -n "${E2E_CODEX_CONFIG:-}" ]; then cp "$E2E_CODEX_CONFIG" "${CODEX_HOME:-$HOME/.codex}/config.toml"; fi
cd /tmp/work
start=$(date +%s)
"$@" >/tmp/e2e-out/stdout 2>/tmp/e2e-out/stderr </dev/null
echo $? >/tmp/e2e-out/rc
echo $(( $(date +%s) - start )) >/tmp/e2e-out/seconds
env >/tmp/e2e-out/env
exec node /opt/clients/e2e/report.mjs
