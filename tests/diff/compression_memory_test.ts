// The memory contracts of decompress(): it is done with an input chunk before it asks for the
// next (so a source may read every chunk into one buffer), and with `releaseChunks` it frees each
// output chunk once the next one is requested.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { decompress } from "../../diff/compression.ts";
import { createTar, readTar, type TarHeader } from "../../diff/tar/mod.ts";
import { concat, gzip, sha256, zstd } from "./_helpers.ts";

function sample(size: number): Uint8Array {
  const out = new Uint8Array(size);
  let x = 987654;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = (x >>> 24) % 32;
  }
  return out;
}

/** Yields `data` through one buffer of `size` bytes, overwritten for every chunk. */
async function* throughOneBuffer(
  data: Uint8Array,
  size: number,
): AsyncGenerator<Uint8Array, void, undefined> {
  const buf = new Uint8Array(size);
  for (let pos = 0; pos < data.length; pos += size) {
    const part = data.subarray(pos, pos + size);
    buf.set(part);
    yield buf.subarray(0, part.length);
    // What the consumer did not take from the chunk is gone now.
    buf.fill(0xee);
  }
}

/** sha256 and size of a stream, hashed chunk by chunk as they come. */
async function digestOf(source: AsyncIterable<Uint8Array>): Promise<[string, number]> {
  const hash = createHash("sha256");
  let size = 0;
  for await (const chunk of source) {
    hash.update(chunk);
    size += chunk.length;
  }
  return [`sha256:${hash.digest("hex")}`, size];
}

Deno.test("decompress() consumes each input chunk before asking for the next, so a source may reuse one buffer", async () => {
  const data = sample(3 << 20);
  const second = sample(1 << 20).reverse();
  const cases: [string, Uint8Array, Uint8Array][] = [
    ["gzip", gzip(data), data],
    ["zstd", zstd(data), data],
    ["multi-member gzip", concat(gzip(data), gzip(second)), concat(data, second)],
    ["two zstd frames", concat(zstd(data), zstd(second)), concat(data, second)],
  ];
  // Small chunks are the ones a transform may queue without back-pressure.
  for (const size of [1000, 4096, 1 << 20]) {
    for (const [name, packed, plain] of cases) {
      const [digest, length] = await digestOf(decompress(throughOneBuffer(packed, size)));
      assert.equal(length, plain.length, `${name} in ${size}-byte chunks`);
      assert.equal(digest, sha256(plain), `${name} in ${size}-byte chunks`);
    }
  }
});

Deno.test("decompress() with releaseChunks frees each full chunk once the next is requested", async () => {
  const data = sample(5 << 20);
  for (const [name, packed] of [["gzip", gzip(data)], ["zstd", zstd(data)]] as const) {
    const hash = createHash("sha256");
    let previous: Uint8Array | null = null;
    let freed = 0;
    let size = 0;
    for await (
      const chunk of decompress(throughOneBuffer(packed, 1 << 20), { releaseChunks: true })
    ) {
      if (previous !== null && previous.buffer.byteLength === 0) freed++;
      hash.update(chunk);
      size += chunk.length;
      previous = chunk;
    }
    assert.equal(size, data.length, name);
    assert.equal(`sha256:${hash.digest("hex")}`, sha256(data), name);
    // 5 MiB comes out in full 1 MiB buffers: at least the first four are freed as the stream goes.
    assert.ok(freed >= 4, `${name}: ${freed} chunks freed`);
  }
});

Deno.test("decompress() keeps its chunks without releaseChunks, and never frees a plain stream's", async () => {
  const data = sample(3 << 20);
  async function* once(bytes: Uint8Array): AsyncGenerator<Uint8Array> {
    yield bytes;
  }
  const kept: Uint8Array[] = [];
  for await (const chunk of decompress(once(gzip(data)))) kept.push(chunk);
  assert.deepEqual(concat(...kept), data);

  const plain: Uint8Array[] = [];
  async function* source(): AsyncGenerator<Uint8Array> {
    for (let pos = 0; pos < data.length; pos += 1 << 20) yield data.slice(pos, pos + (1 << 20));
  }
  for await (const chunk of decompress(source(), { releaseChunks: true })) plain.push(chunk);
  assert.deepEqual(concat(...plain), data, "a plain stream's chunks are the source's, untouched");
});

Deno.test("readTar() keeps PAX records and xattr values intact when the decompressor frees or a source reuses its chunks", async () => {
  // Each entry's header is read from one chunk and its xattrs are used after its body, which
  // spans the next chunks: what the header gave must not view the chunk it came from.
  const names = ["a", "long-" + "é".repeat(80), "c"];
  const entries = names.map((name, i) => ({
    header: {
      name,
      type: "file" as const,
      xattrs: { "user.k": new Uint8Array([1, 2, 3, i]), "security.capability": sample(20 + i) },
      pax: { "STRATA.test": `value-${i}` },
    },
    body: sample((1 << 20) + 1000 * (i + 1)),
  }));
  const archive = await createTar(entries);
  const sources: [string, () => AsyncIterable<Uint8Array>][] = [
    [
      "gzip, chunks freed",
      () => decompress(throughOneBuffer(gzip(archive), 1 << 16), { releaseChunks: true }),
    ],
    ["plain, one reused 700-byte buffer", () => throughOneBuffer(archive, 700)],
    ["plain, one reused 1 MiB buffer", () => throughOneBuffer(archive, 1 << 20)],
  ];
  for (const [what, source] of sources) {
    const seen: TarHeader[] = [];
    for await (const entry of readTar(source())) {
      let size = 0;
      for await (const chunk of entry.body) size += chunk.length;
      assert.equal(size, entry.header.size, what);
      seen.push(entry.header);
    }
    // Checked after every body was read and every chunk freed or overwritten.
    assert.deepEqual(seen.map((h) => h.name), names, what);
    seen.forEach((h, i) => {
      assert.deepEqual(h.xattrs, entries[i]!.header.xattrs, `${what}: ${h.name}`);
      assert.equal(h.pax["STRATA.test"], `value-${i}`, `${what}: ${h.name}`);
    });
  }
});
