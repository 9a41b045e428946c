/**
 * The Prometheus Operator's real ServiceMonitor CRD, so the chart's optional ServiceMonitor is
 * validated by the API server against its real schema. It comes from the prometheus-operator Go
 * module at a pinned version (the Go module proxy, like everything test/env builds), downloaded
 * once into the Go module cache; nothing of it is written into the repository.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const MODULE = 'github.com/prometheus-operator/prometheus-operator';
const VERSION = 'v0.85.0';
const FILE = 'example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml';
export const SERVICE_MONITOR_CRD = 'servicemonitors.monitoring.coreos.com';

/** Path of the CRD file in the Go module cache (downloads the module the first time, ~30 MB). */
export async function serviceMonitorCrdFile(): Promise<string> {
  const out = await new Promise<string>((resolve, reject) => {
    execFile('go', ['mod', 'download', '-json', `${MODULE}@${VERSION}`], {
      cwd: os.tmpdir(), // outside any module: a plain download
      env: { ...process.env, GOTOOLCHAIN: 'local', GOFLAGS: '', GOWORK: 'off' },
      maxBuffer: 1 << 20,
      timeout: 10 * 60_000,
    }, (err, stdout, stderr) => (err ? reject(new Error(`go mod download ${MODULE}@${VERSION} failed: ${stderr || err.message}${stdout}`)) : resolve(stdout)));
  });
  const info = JSON.parse(out) as { Dir?: string; Error?: string };
  if (!info.Dir) throw new Error(`go mod download ${MODULE}@${VERSION}: ${info.Error ?? 'no Dir in its answer'}`);
  const file = path.join(info.Dir, FILE);
  if (!fs.existsSync(file)) throw new Error(`${MODULE}@${VERSION} has no ${FILE}`);
  return file;
}
