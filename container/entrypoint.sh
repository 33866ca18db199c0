#!/bin/sh
# Agent image entrypoint: start the gateway shim in the background, wait until its port answers,
# then run the agent command. Holds no credential: the mounted socket is the only identity.
#
#   GATEWAY_SHIM_PORT   loopback port of the shim (default 9460)
#   GATEWAY_SOCKET      gateway socket (default /run/gateway/gateway.sock, the runner's mount)
#   GATEWAY_SHIM_WAIT   seconds to wait for the shim (default 10)
set -eu

# The gateway ships its shim next to the socket; a copy in the image is the fallback, so an old
# image still works with a newer gateway and vice versa.
shim=/run/gateway/shim.mjs
[ -f "$shim" ] || shim=/opt/gateway/shim.mjs

port="${GATEWAY_SHIM_PORT:-9460}"
wait_s="${GATEWAY_SHIM_WAIT:-10}"
export GATEWAY_SHIM_PORT="$port"
# Point the clients at the shim unless the runner already did.
export ANTHROPIC_BASE_URL="${ANTHROPIC_BASE_URL:-http://127.0.0.1:$port}"
export OPENAI_BASE_URL="${OPENAI_BASE_URL:-http://127.0.0.1:$port/v1}"

node "$shim" --port "$port" &
shim_pid=$!

# One node process polls the port every 50 ms until the deadline (no curl/nc in slim images).
if ! node -e '
  const net = require("net");
  const [port, seconds] = process.argv.slice(1).map(Number);
  const deadline = Date.now() + seconds * 1000;
  (function attempt() {
    net.connect(port, "127.0.0.1")
      .on("connect", function () { this.destroy(); process.exit(0); })
      .on("error", () => (Date.now() < deadline ? setTimeout(attempt, 50) : process.exit(1)));
  })();
' "$port" "$wait_s"; then
  if kill -0 "$shim_pid" 2>/dev/null; then
    echo "entrypoint: shim ($shim) did not answer on 127.0.0.1:$port within ${wait_s}s" >&2
  else
    echo "entrypoint: shim ($shim) exited before listening on 127.0.0.1:$port (see its message above)" >&2
  fi
  exit 1
fi

if [ "$#" -eq 0 ]; then
  echo "entrypoint: no command given" >&2
  exit 2
fi
# The shim stays behind as a child of the agent process; it dies with the container.
exec "$@"
