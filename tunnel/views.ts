/**
 * When a received chunk may be kept as a view of the buffer it arrived in, and when it must be
 * copied first.
 *
 * A view keeps its whole ArrayBuffer alive, while every budget (stream windows, the session's stream
 * buffer) counts only the view's bytes. So a small view held for long must be copied, or a peer
 * could make a few counted bytes pin far more memory. The bound is how much memory a kept view may
 * pin per byte it counts.
 *
 * Why two bounds: from Node 24 on, a TLS socket's cleartext arrives as views into a 64 KiB read slab
 * shared by the process (four records of at most 16 KiB each), not as one exact-size buffer per
 * record (Node 20). A full record's payload — 16 KiB less the WebSocket and yamux headers — pins 4×
 * its bytes; with a bound of 2 every one of them was copied whenever it was queued (a fresh 16 KiB
 * allocation and a memcpy per record, on top of the slab): Node 24 bulk transfers ran at 0.61–0.87×
 * `ssh -L` against 0.96–1.17× without the copy (docs/benchmarks.md). So while the session's streams
 * hold at most a quarter of their budget (`streamBufferBytes`), a view may pin 5× its bytes, which
 * keeps full and three-quarter records; beyond that, 2×. With the default 32 MiB budget a session's
 * held bytes pin at most 5 × 8 + 2 × 24 = 88 MiB (docs/security.md).
 */
export const MAX_PIN_RATIO = 5;
/** The bound once the session holds more than a quarter of its stream buffer budget. */
export const FULL_PIN_RATIO = 2;

/** True when holding `chunk` itself pins no more than the bound allows for a session holding `buffered`. */
export function keepAsView(chunk: Buffer, buffered?: { readonly held: number; readonly limit: number }): boolean {
  const ratio = buffered === undefined || buffered.held <= buffered.limit / 4 ? MAX_PIN_RATIO : FULL_PIN_RATIO;
  return chunk.length * ratio >= chunk.buffer.byteLength;
}
