#!/usr/bin/env bash
# Debian packages the end-to-end tests and `gateway run` use on the host, installed when missing:
# podman + runc run the containers (see shared notes: crun fails on hybrid cgroups), busybox-static
# builds the registry-free test image, bubblewrap is the light sandbox, iproute2 (`ip`) builds the
# private network namespaces of the shim's --check test, openssl makes the TLS test certificates.
# git: the git end-to-end test serves repositories with `git http-backend` and lends git to its container.
# curl and python3-pip: the egress end-to-end test lends them to its containers (curl, pip install).
# redis-server: the shared-budget tests start their own on loopback (docs/scale-out.md).
# prometheus: the metrics test starts one that scrapes the gateway's metrics listener (docs/metrics.md).
# chromium: the live page's test drives it headless (test/ui.test.ts, through puppeteer-core).
# systemd: its systemd-analyze checks the shipped unit (test/systemd-unit.test.ts); it is not started.
# nftables: `gateway run --transport tcp` guards a container's own network with a table (test/e2e-tcp.test.ts).
# Fails when it cannot install them: the tests that need them fail rather than skip in CI.
set -euo pipefail
packages=(podman runc busybox-static bubblewrap iproute2 openssl git curl python3-pip redis-server prometheus chromium systemd nftables)
dpkg -s "${packages[@]}" >/dev/null 2>&1 && exit 0
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null; then
    echo "install-host-packages: not root and no sudo: install ${packages[*]} yourself" >&2
    exit 1
  fi
  sudo="sudo"
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${packages[@]}"
