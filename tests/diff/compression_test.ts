import assert from "node:assert/strict";
import * as zlib from "node:zlib";
import { compress, decompress, detectCompression } from "../../diff/compression.ts";
import { InvalidArgument } from "../../errors.ts";
import { bytes, chunks, concat, gzip, zstd } from "./_helpers.ts";

async function collect(source: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const chunk of source) parts.push(new Uint8Array(chunk));
  return concat(...parts);
}

function sample(size: number): Uint8Array {
  const out = new Uint8Array(size);
  let x = 12345;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = (x >>> 24) % 16; // compressible but not trivial
  }
  return out;
}

Deno.test("detectCompression() reads gzip, zstd and skippable-frame magics", () => {
  assert.equal(detectCompression(new Uint8Array([0x1f, 0x8b, 0x08, 0, 0])), "gzip");
  assert.equal(detectCompression(new Uint8Array([0x1f, 0x8b, 0x07])), "none");
  assert.equal(detectCompression(new Uint8Array([0x28, 0xb5, 0x2f, 0xfd])), "zstd");
  // A skippable frame (magic 0x184D2A5?) needs 8 bytes.
  const skippable = new Uint8Array([0x5e, 0x2a, 0x4d, 0x18, 4, 0, 0, 0]);
  assert.equal(detectCompression(skippable), "zstd");
  assert.equal(detectCompression(skippable.subarray(0, 7)), "none");
  assert.equal(detectCompression(new Uint8Array([0x5e, 0x2a, 0x4d, 0x19, 4, 0, 0, 0])), "none");
  assert.equal(detectCompression(new Uint8Array(0)), "none");
  assert.equal(detectCompression(bytes("ustar")), "none");
  assert.equal(detectCompression(zstd(bytes("x"))), "zstd");
  assert.equal(detectCompression(gzip(bytes("x"))), "gzip");
});

Deno.test("decompress() detects the algorithm even from one-byte chunks", async () => {
  const data = sample(3 << 20);
  const cases: [string, Uint8Array][] = [["gzip", gzip(data)], ["zstd", zstd(data)], [
    "none",
    data,
  ]];
  for (const [name, packed] of cases) {
    assert.deepEqual(await collect(decompress(chunks(packed, 1 << 16))), data, name);
    const head = async function* () {
      for (let i = 0; i < 12; i++) yield packed.subarray(i, i + 1);
      yield* chunks(packed.subarray(12));
    };
    assert.deepEqual(await collect(decompress(head())), data, `${name} byte by byte`);
  }
});

Deno.test("decompress() yields chunks of at most 1 MiB", async () => {
  const data = new Uint8Array(5 << 20);
  let max = 0;
  for await (const chunk of decompress(chunks(gzip(data)))) max = Math.max(max, chunk.length);
  assert.equal(max, 1 << 20);
});

Deno.test("decompress() reads multi-member gzip and a zstd skippable frame", async () => {
  const a = sample(1000);
  const b = sample(2000);
  assert.deepEqual(await collect(decompress(chunks(concat(gzip(a), gzip(b))))), concat(a, b));
  const skip = new Uint8Array([0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 1, 2, 3]);
  assert.deepEqual(await collect(decompress(chunks(concat(skip, zstd(a))))), a);
  // Several frames (zstd:chunked layers have many, and a skippable frame at the end).
  const frames = concat(zstd(a), skip, zstd(b), zstd(new Uint8Array(0)), zstd(a), skip);
  assert.deepEqual(await collect(decompress(chunks(frames, 7))), concat(a, b, a));
});

Deno.test("decompress() throws InvalidArgument for corrupt, truncated or mislabelled data", async () => {
  const gz = gzip(sample(100_000));
  const cases: [string, Uint8Array, "gzip" | "zstd" | undefined][] = [
    ["truncated gzip", gz.subarray(0, gz.length - 8), undefined],
    ["gzip cut mid-deflate", gz.subarray(0, gz.length >> 1), undefined],
    ["plain data declared gzip", bytes("not gzip at all"), "gzip"],
    ["empty stream declared gzip", new Uint8Array(0), "gzip"],
    ["gzip declared zstd", gz, "zstd"],
    ["gzip with trailing garbage", concat(gz, bytes("garbage!!")), undefined],
    ["truncated zstd", zstd(sample(100_000)).subarray(0, 3000), undefined],
    ["zstd with trailing garbage", concat(zstd(sample(1000)), bytes("garbage!!")), undefined],
  ];
  for (const [what, data, compression] of cases) {
    await assert.rejects(
      collect(decompress(chunks(data), compression ? { compression } : {})),
      (err: unknown) => {
        assert.ok(err instanceof InvalidArgument, `${what}: ${err}`);
        assert.match((err as Error).message, /^Cannot decompress (gzip|zstd) stream: /);
        return true;
      },
      what,
    );
  }
});

Deno.test("decompress() passes source errors through and closes the source when stopped", async () => {
  const failing = async function* () {
    yield gzip(sample(10)).subarray(0, 5);
    throw new Error("network went away");
  };
  await assert.rejects(collect(decompress(failing())), /network went away/);

  let closed = false;
  const endless = async function* () {
    try {
      const packed = gzip(sample(4 << 20));
      for (;;) yield* chunks(packed, 4096);
    } finally {
      closed = true;
    }
  };
  for await (const _ of decompress(endless())) break;
  // The pump closes the source once it is idle.
  for (let i = 0; i < 1000 && !closed; i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(closed);
});

Deno.test("compress() round-trips gzip and zstd at chosen levels", async () => {
  const data = bytes(
    "Layers are tar archives, usually compressed with gzip or zstd. ".repeat(40000),
  );
  for (const compression of ["gzip", "zstd"] as const) {
    const fast = await collect(compress(chunks(data), compression, { level: 1 }));
    const best = await collect(compress(chunks(data), compression, { level: 9 }));
    assert.equal(detectCompression(fast), compression);
    assert.ok(best.length <= fast.length, `${compression}: level 9 is not larger than level 1`);
    assert.deepEqual(await collect(decompress(chunks(fast))), data);
    assert.deepEqual(await collect(decompress(chunks(best), { compression })), data);
  }
  assert.deepEqual(
    new Uint8Array(zlib.gunzipSync(await collect(compress(chunks(data), "gzip")))),
    data,
  );
  assert.deepEqual(await collect(compress(chunks(data), "none")), data);
});

Deno.test("compress() rejects unknown algorithms and levels out of range", () => {
  assert.throws(() => compress(chunks(new Uint8Array(1)), "gzip", { level: 10 }), InvalidArgument);
  assert.throws(() => compress(chunks(new Uint8Array(1)), "zstd", { level: 23 }), InvalidArgument);
  assert.throws(
    () => compress(chunks(new Uint8Array(1)), "xz" as "gzip"),
    /Cannot compress with "xz"/,
  );
});
