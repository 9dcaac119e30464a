// ContentStore.stream() with `reuseBuffer`: one buffer for the whole blob, nothing read ahead.

import assert from "node:assert/strict";
import { openStore, pattern, sha256 } from "./_helpers.ts";

Deno.test("stream() with reuseBuffer reads every chunk into one buffer, only when asked", async () => {
  await using f = await openStore();
  const data = pattern(2_500_000);
  const { digest } = await f.store.writeBlob("reuse", data, {});
  const reader = f.store.stream(digest, { offset: 10, chunkSize: 1_000_000, reuseBuffer: true })
    .getReader();
  const first = await reader.read();
  assert.equal(first.done, false);
  const chunk = first.value!;
  assert.deepEqual(chunk, data.subarray(10, 1_000_010));
  // Nothing is read ahead: the chunk stays as it is until the next one is requested.
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.deepEqual(chunk, data.subarray(10, 1_000_010));
  const second = await reader.read();
  assert.equal(second.value!.buffer, chunk.buffer, "the same buffer");
  assert.deepEqual(second.value, data.subarray(1_000_010, 2_000_010));
  const third = await reader.read();
  assert.equal(third.value!.buffer, chunk.buffer, "the same buffer");
  assert.deepEqual(third.value, data.subarray(2_000_010));
  assert.equal((await reader.read()).done, true);
});

Deno.test("stream() with reuseBuffer streams a blob smaller than a chunk and an empty rest", async () => {
  await using f = await openStore();
  const data = pattern(1000);
  const { digest } = await f.store.writeBlob("small", data, {});
  const seen: Uint8Array[] = [];
  for await (const chunk of f.store.stream(digest, { reuseBuffer: true })) seen.push(chunk.slice());
  assert.deepEqual(seen, [data]);
  assert.equal(sha256(seen[0]!), digest);
  const rest = await Array.fromAsync(f.store.stream(digest, { offset: 1000, reuseBuffer: true }));
  assert.deepEqual(rest, []);
});

Deno.test("stream() without reuseBuffer gives each chunk a buffer of its own", async () => {
  await using f = await openStore();
  const data = pattern(2_100_000);
  const { digest } = await f.store.writeBlob("own", data, {});
  const chunks = await Array.fromAsync(f.store.stream(digest));
  assert.equal(chunks.length, 3);
  assert.notEqual(chunks[0]!.buffer, chunks[1]!.buffer);
  assert.deepEqual(chunks[0], data.subarray(0, 1 << 20));
});
