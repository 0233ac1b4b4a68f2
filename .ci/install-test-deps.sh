#!/usr/bin/env bash
# Installs the real client SDKs that crates/cli/tests/clients.rs drives against a local
# `portrait serve`: the pinned Python packages of tests/clients/requirements.txt (into the
# `python3` on the PATH, the one the tests run) and the npm packages of
# tests/clients/package-lock.json (into tests/clients/node_modules).
# Idempotent: safe to run again; a second run changes nothing.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
clients="$root/tests/clients"

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    -r "$clients/requirements.txt"

# `npm ci` installs exactly the lock file; skip it when node_modules already matches it.
cd "$clients"
if [ -f node_modules/.package-lock.json ] \
    && node -e '
        const fs = require("fs");
        const want = JSON.parse(fs.readFileSync("package-lock.json")).packages;
        const have = JSON.parse(fs.readFileSync("node_modules/.package-lock.json")).packages;
        for (const [path, p] of Object.entries(want)) {
            if (path === "" || p.optional) continue;
            if (!have[path] || have[path].version !== p.version) process.exit(1);
        }
    ' 2>/dev/null; then
    :
else
    npm ci --no-audit --no-fund --loglevel=error
fi
