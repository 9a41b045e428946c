/**
 * TEST SUPPORT: a minimal tar reader (ustar and GNU long names), enough to list an image layer
 * exactly as a container runtime would unpack it: path, type, mode, owner, link target.
 */

export type TarType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'other';

export interface TarEntry {
  path: string;
  type: TarType;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  linkname: string;
  /** The file's bytes, only for paths the caller asked to keep. */
  content?: Buffer;
}

export interface TarListing {
  entries: TarEntry[];
  /** The archive ends with the two zero blocks tar requires (GNU tar and scanners reject it otherwise). */
  complete: boolean;
}

const BLOCK = 512;

function text(buf: Buffer, start: number, length: number): string {
  const raw = buf.subarray(start, start + length);
  const end = raw.indexOf(0);
  return raw.subarray(0, end < 0 ? raw.length : end).toString('utf8');
}

function octal(buf: Buffer, start: number, length: number): number {
  const s = text(buf, start, length).trim();
  return s === '' ? 0 : parseInt(s, 8);
}

function typeOf(flag: string): TarType {
  if (flag === '0' || flag === '\0' || flag === '') return 'file';
  if (flag === '5') return 'dir';
  if (flag === '2') return 'symlink';
  if (flag === '1') return 'hardlink';
  return 'other';
}

/** Paths without a leading `./` or `/` and without a trailing `/` (`opt/underpass/bin`). */
export function normalizePath(p: string): string {
  return p.replace(/^\.?\/+/, '').replace(/\/+$/, '');
}

export function readTar(buf: Buffer, keep: (path: string) => boolean = () => false): TarListing {
  const entries: TarEntry[] = [];
  let offset = 0;
  let longName: string | undefined;
  let longLink: string | undefined;
  while (offset + BLOCK <= buf.length) {
    const header = buf.subarray(offset, offset + BLOCK);
    if (header.every((b) => b === 0)) {
      const next = buf.subarray(offset + BLOCK, offset + 2 * BLOCK);
      return { entries, complete: next.length === BLOCK && next.every((b) => b === 0) };
    }
    const flag = String.fromCharCode(header[156]!);
    const size = octal(header, 124, 12);
    const dataStart = offset + BLOCK;
    const data = buf.subarray(dataStart, dataStart + size);
    offset = dataStart + Math.ceil(size / BLOCK) * BLOCK;
    if (flag === 'L') { longName = text(data, 0, data.length); continue; }
    if (flag === 'K') { longLink = text(data, 0, data.length); continue; }
    if (flag === 'x' || flag === 'g') throw new Error('pax headers are not supported by this reader');
    const prefix = text(header, 345, 155);
    const name = longName ?? (prefix ? `${prefix}/${text(header, 0, 100)}` : text(header, 0, 100));
    const path = normalizePath(name);
    const entry: TarEntry = {
      path,
      type: typeOf(flag),
      mode: octal(header, 100, 8),
      uid: octal(header, 108, 8),
      gid: octal(header, 116, 8),
      size,
      linkname: longLink ?? text(header, 157, 100),
    };
    if (entry.type === 'file' && keep(path)) entry.content = Buffer.from(data);
    entries.push(entry);
    longName = undefined;
    longLink = undefined;
  }
  return { entries, complete: false };
}
