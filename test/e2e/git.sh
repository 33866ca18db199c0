#!/bin/sh
# Runs inside the git end-to-end test's container under run.sh (as uid 1000, under the shim): the
# real git client and Node's fetch against https://github.com/... URLs, which reach the gateway only
# through the env's url.<shim>.insteadOf rewrite (no file, no token). Prints each step's output and
# exit status between `== STEP` lines, for e2e-git.test.ts to read.
set -u
exec 2>&1
export GIT_AUTHOR_NAME=agent GIT_AUTHOR_EMAIL=agent@example.com GIT_COMMITTER_NAME=agent GIT_COMMITTER_EMAIL=agent@example.com
step() { echo "== $1"; }
rc() { echo "rc=$?"; }
api() { node -e 'fetch(process.env.GITHUB_API_URL + process.argv[1], { method: process.argv[2] }).then(async (r) => console.log(r.status, await r.text()), (e) => console.log("ERR", e.cause?.code ?? e.message))' "$@"; }

step config; git config --list --show-origin; rc
step clone; git clone https://github.com/acme/widgets.git widgets; rc
cd widgets
echo "from the agent" > change.txt && git add change.txt && git commit -q -m "agent change"
step push; git push origin HEAD:main; rc
# A few MB of incompressible data: git sends the packfile chunked, the gateway streams it through.
head -c 4000000 /dev/urandom > big.bin && git add big.bin && git commit -q -m "big file"
step push-big; git push origin HEAD:main; rc
cd /tmp/work
step clone-ssh-spelling; git clone git@github.com:acme/docs.git docs; rc
cd docs
echo "not allowed" > x.txt && git add x.txt && git commit -q -m "outside push scope"
step push-outside; git push origin HEAD:main; rc
cd /tmp/work
step clone-outside; git clone https://github.com/other/secret.git secret; rc
step api-read; api /repos/acme/widgets GET; rc
step api-outside; api /repos/other/secret GET; rc
step api-write-outside; api /repos/acme/docs/issues POST; rc
step end
