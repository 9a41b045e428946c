#!/usr/bin/env bash
# make bench-ha: the high-availability measurements of issue 17 in the local cluster — every event of
# test/cluster-real/ha.test.ts under steady load (50 clients Connector-side, 10 Cluster-side) — and
# their table written into docs/ha.md (between the ha-table markers). Root, Linux; starts the local
# cluster unless one runs (test/cluster-real/run.sh). --no-docs: print the table only.
# --from FILE: write the table a run of ha.test.ts left in FILE (UNDERPASS_HA_TABLE=FILE) instead.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
docs=1 from=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --no-docs) docs=0 ;;
    --from) from="${2:?--from needs a file}"; shift ;;
    *) echo "bench-ha: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [[ -n "$from" ]]; then
  table="$from"
else
  table="$(mktemp /tmp/underpass-ha-table.XXXXXX)"
  trap 'rm -f "$table"' EXIT
  UNDERPASS_HA_TABLE="$table" bash "$ROOT/test/cluster-real/run.sh" test/cluster-real/ha.test.ts
fi
[[ -s "$table" ]] || { echo "bench-ha: the test wrote no table (was the suite skipped?)" >&2; exit 1; }
cat "$table"
if [[ $docs == 1 ]]; then
  node - "$ROOT/docs/ha.md" "$table" "$(date -u +%Y-%m-%d)" <<'JS'
const fs = require('node:fs');
const [doc, tableFile, day] = process.argv.slice(2);
const text = fs.readFileSync(doc, 'utf8');
const start = '<!-- ha-table:start -->', end = '<!-- ha-table:end -->';
const i = text.indexOf(start), j = text.indexOf(end);
if (i < 0 || j < i) { console.error(`bench-ha: ${doc} has no ${start} ... ${end} block`); process.exit(1); }
const body = `${start}\n_make bench-ha, ${day}, ${require('node:os').cpus().length} cores:_\n\n${fs.readFileSync(tableFile, 'utf8')}`;
fs.writeFileSync(doc, text.slice(0, i) + body + text.slice(j));
console.error(`bench-ha: table written into ${doc}`);
JS
fi
