# Every target runs with the project's own Node 22 (the `node` devDependency) first on PATH,
# so a machine that only has an older system Node works unchanged.
export PATH := $(CURDIR)/node_modules/.bin:$(PATH)

.PHONY: install host-packages build typecheck test demo bench clean

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
	node --test --test-reporter=spec test/*.test.ts test/adversary/*.test.ts

demo: build
	node dist/cli/main.js demo --standin

# Gateway overhead side by side with direct, the shim path and Portkey (README.md, "Performance").
# 10,000 live keys need more than 10,000 descriptors: raise the soft limit (to 65536, or to the
# hard limit where that is lower). BENCH_ARGS: --quick, --profile, --duration MS.
bench: build
	ulimit -n 65536 2>/dev/null || ulimit -n $$(ulimit -Hn); node bench/run.mjs $(BENCH_ARGS)

clean:
	rm -rf dist node_modules
