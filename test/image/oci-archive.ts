/**
 * TEST SUPPORT: reads an OCI image archive (oci-layout, index.json, blobs/sha256/...) the way an
 * importer does — index, manifest, config, layers, every digest checked — and gives the merged
 * file system of its layers.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { readTar, type TarEntry } from './tar.js';

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

export interface ImageConfig {
  created?: string;
  architecture: string;
  os: string;
  config: {
    User?: string;
    Env?: string[];
    Entrypoint?: string[];
    Cmd?: string[];
    WorkingDir?: string;
    Labels?: Record<string, string>;
  };
  rootfs: { type: string; diff_ids: string[] };
  history?: { created?: string; created_by?: string }[];
}

export interface Layer {
  descriptor: Descriptor;
  /** Every entry in archive order. */
  entries: TarEntry[];
  /** Ends with tar's end-of-archive blocks. */
  complete: boolean;
  uncompressedSize: number;
}

export interface OciImage {
  index: { manifests: Descriptor[] };
  manifest: { config: Descriptor; layers: Descriptor[] };
  config: ImageConfig;
  layers: Layer[];
  /** The file system a runtime unpacks: later layers win. */
  files: Map<string, TarEntry>;
}

function sha256(buf: Buffer): string {
  return `sha256:${createHash('sha256').update(buf).digest('hex')}`;
}

/** Reads ARCHIVE; `keep` names the files whose content the caller wants (e.g. etc/passwd). */
export function readOciArchive(archive: string, keep: (path: string) => boolean = () => false): OciImage {
  const outer = readTar(readFileSync(archive), (p) => p === 'index.json' || p === 'oci-layout' || p.startsWith('blobs/'));
  if (!outer.complete) throw new Error(`${archive}: truncated tar`);
  const byPath = new Map(outer.entries.map((e) => [e.path, e]));
  const blob = (d: Descriptor): Buffer => {
    const content = byPath.get(`blobs/${d.digest.replace(':', '/')}`)?.content;
    if (!content) throw new Error(`${archive}: blob ${d.digest} missing`);
    if (sha256(content) !== d.digest) throw new Error(`${archive}: blob ${d.digest} does not match its digest`);
    if (content.length !== d.size) throw new Error(`${archive}: blob ${d.digest} is ${content.length} bytes, descriptor says ${d.size}`);
    return content;
  };
  const json = <T>(buf: Buffer | undefined, what: string): T => {
    if (!buf) throw new Error(`${archive}: ${what} missing`);
    return JSON.parse(buf.toString('utf8')) as T;
  };
  const layout = json<{ imageLayoutVersion: string }>(byPath.get('oci-layout')?.content, 'oci-layout');
  if (layout.imageLayoutVersion !== '1.0.0') throw new Error(`${archive}: oci-layout ${layout.imageLayoutVersion}`);
  const index = json<OciImage['index']>(byPath.get('index.json')?.content, 'index.json');
  if (index.manifests.length !== 1) throw new Error(`${archive}: ${index.manifests.length} manifests, expected 1`);
  const manifest = json<OciImage['manifest']>(blob(index.manifests[0]!), 'manifest');
  const config = json<ImageConfig>(blob(manifest.config), 'config');
  const layers: Layer[] = manifest.layers.map((descriptor, i) => {
    const tar = gunzipSync(blob(descriptor));
    if (sha256(tar) !== config.rootfs.diff_ids[i]) throw new Error(`${archive}: layer ${i} does not match its diff_id`);
    const { entries, complete } = readTar(tar, keep);
    return { descriptor, entries, complete, uncompressedSize: tar.length };
  });
  const files = new Map<string, TarEntry>();
  for (const layer of layers) {
    for (const entry of layer.entries) {
      if (entry.path.split('/').some((part) => part.startsWith('.wh.'))) throw new Error(`${archive}: whiteout ${entry.path} (not expected in this image)`);
      files.set(entry.path, entry);
    }
  }
  return { index, manifest, config, layers, files };
}
