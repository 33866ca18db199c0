# Every target runs with the project's own Node 22 (the `node` devDependency) first on PATH,
# so a machine that only has an older system Node works unchanged.
export PATH := $(CURDIR)/node_modules/.bin:$(PATH)

.PHONY: install host-packages build typecheck test demo clean

install: node_modules/.install-stamp

node_modules/.install-stamp: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

# podman, runc, busybox-static, bubblewrap, iproute2, git: for the real-container tests.
host-packages:
	container/install-host-packages.sh

build: install
	tsc -p tsconfig.json

typecheck: install
	tsc -p test/tsconfig.json

test: host-packages build typecheck
	node --test --test-reporter=spec test/*.test.ts

demo: build
	node dist/cli.js demo --standin

clean:
	rm -rf dist node_modules
