#!/usr/bin/env bash
# Plants, one at a time, the security bugs issue 19 found unguarded (plus the CIDR and TLS-verify
# ones it asked for) and runs the tests that must catch each; prints which tests failed per mutant.
# A mutant that fails no test is a gap. Works in a throwaway git worktree of HEAD, so a checkout
# with uncommitted changes is never touched. About 6 minutes on 2 cores.
#   test/mutation/security-mutants.sh
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WT="$(mktemp -d /tmp/underpass-mutants.XXXXXX)"
git -C "$ROOT" worktree add -q --detach "$WT" HEAD
trap 'git -C "$ROOT" worktree remove --force "$WT"' EXIT
ln -s "$ROOT/node_modules" "$WT/node_modules"
cd "$WT" || exit 1
eval "$(bash image/node.sh --env)"
gaps=0
JEST="node --experimental-vm-modules --no-warnings=ExperimentalWarning node_modules/jest/bin/jest.js"
mutate() { # name file python-replace-old python-replace-new tests...
  local name="$1" file="$2" old="$3" new="$4"; shift 4
  python3 - "$file" "$old" "$new" <<'PY'
import sys; p,o,n=sys.argv[1:4]; s=open(p).read()
assert o in s, f"pattern not found in {p}: {o}"
open(p,'w').write(s.replace(o,n,1))
PY
  npx tsc -p tsconfig.build.json >/dev/null 2>&1
  local out; out=$($JEST "$@" 2>&1)
  local res; res=$(grep -E "^Tests:" <<<"$out")
  echo "== $name: $res"
  grep -qE "[0-9]+ failed" <<<"$res" || { echo "   GAP: no test failed"; gaps=$((gaps + 1)); }
  grep -E "^\s+● " <<<"$out" | head -8
  git checkout -q -- "$file"
}
mutate "sameConnection ignores namespace" tunnel/identity.ts "return a.namespace === b.namespace && a.name === b.name;" "return a.name === b.name;" tunnel/identity.test.ts operator/report-server.test.ts test/e2e/worker-identity.test.ts test/e2e/refusals.test.ts
mutate "worker allowedSources (Cluster-side) disabled" worker/worker.ts "if (!sourceAllowed(mapping, sourceHost)) {" "if (false && !sourceAllowed(mapping, sourceHost)) {" test/e2e/refusals.test.ts
mutate "MAX_FRAME 2^53-1" tunnel/limits.ts "export const WS_MAX_FRAME = 16 * MiB;" "export const WS_MAX_FRAME = Number.MAX_SAFE_INTEGER;" test/e2e/limits.test.ts
mutate "CIDR one bit too wide" tunnel/cidr.ts "for (const c of parsed) this.#blocks.addSubnet(c.address, c.prefix," "for (const c of parsed) this.#blocks.addSubnet(c.address, Math.max(0, c.prefix - 1)," tunnel/cidr.test.ts
mutate "connector stops verifying the worker" tunnel/transport/websocket.ts "      ca: o.ca,
      minVersion: 'TLSv1.2'," "      ca: o.ca, rejectUnauthorized: false,
      minVersion: 'TLSv1.2'," test/e2e/worker-identity.test.ts test/e2e/refusals.test.ts
mutate "RBAC grows: pods, pods/exec" charts/underpass-operator/templates/rbac.yaml "  - apiGroups: [apps]
    resources: [deployments]" "  - apiGroups: [\"\"]
    resources: [pods, pods/exec]
    verbs: [get, create]
  - apiGroups: [apps]
    resources: [deployments]" test/charts/rbac.test.ts
echo "mutants not caught: $gaps"
exit $((gaps > 0))
