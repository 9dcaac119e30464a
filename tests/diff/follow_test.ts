// readFileChunks(): a file read while it is written (a layer applied as it downloads) gives
// exactly its bytes, waits at its end, and fails when the writer stops or ends short.

import assert from "node:assert/strict";
import { join } from "node:path";
import { readFileChunks } from "../../diff/_follow.ts";
import { FOLLOW_DONE, newFollowState } from "../../diff/follow.ts";
import { FailedPrecondition } from "../../errors.ts";
import { makeTempDir } from "../_peers.ts";
import { growFile } from "./_grow.ts";
import { concatList } from "./_helpers.ts";

function pattern(size: number): Uint8Array {
  return Uint8Array.from({ length: size }, (_, i) => (i * 7 + (i >> 8)) & 0xff);
}

async function readAll(
  path: string,
  options: Parameters<typeof readFileChunks>[1],
  onChunk?: () => void,
): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const chunk of readFileChunks(path, options)) {
    parts.push(chunk.slice());
    onChunk?.();
  }
  return concatList(parts);
}

Deno.test("readFileChunks() follows a file while it is written and gives exactly its bytes", async () => {
  await using tmp = await makeTempDir();
  const path = join(tmp.path, "growing");
  const data = pattern(50_000);
  const grow = await growFile(path, data, { piece: 3_000, delayMs: 5 });
  // Chunks that arrived while the writer was still writing.
  let early = 0;
  const got = await readAll(path, { chunkSize: 4_096, follow: grow.follow }, () => {
    if (grow.written() < data.length) early++;
  });
  await grow.done;
  assert.deepEqual(got, data);
  assert.ok(early > 3, `read while the file grew (${early} chunks)`);
});

Deno.test("readFileChunks() without follow stops at the end of the file; with it at its size", async () => {
  await using tmp = await makeTempDir();
  const path = join(tmp.path, "file");
  const data = pattern(10_000);
  await Deno.writeFile(path, data);
  assert.deepEqual(await readAll(path, { chunkSize: 3_000 }), data);
  // A file longer than the size it was announced with: only that many bytes are read.
  const state = newFollowState();
  assert.deepEqual(
    await readAll(path, { chunkSize: 3_000, follow: { size: 7_000, state } }),
    data.subarray(0, 7_000),
  );
});

Deno.test("readFileChunks() fails when the writer stops before the end", async () => {
  await using tmp = await makeTempDir();
  const path = join(tmp.path, "stopped");
  const grow = await growFile(path, pattern(40_000), { piece: 5_000, delayMs: 2, stopAt: 15_000 });
  await assert.rejects(
    readAll(path, { chunkSize: 4_096, follow: grow.follow }),
    (err) =>
      err instanceof FailedPrecondition &&
      err.message.includes("writer stopped after 15000 of its 40000 bytes"),
  );
  await grow.done;
});

Deno.test("readFileChunks() fails when the writer is done but the file is shorter", async () => {
  await using tmp = await makeTempDir();
  const path = join(tmp.path, "short");
  await Deno.writeFile(path, pattern(1_000));
  const state = newFollowState();
  Atomics.store(state, 0, FOLLOW_DONE);
  await assert.rejects(
    readAll(path, { chunkSize: 4_096, follow: { size: 2_000, state } }),
    (err) =>
      err instanceof FailedPrecondition && err.message.includes("ended after 1000 of its 2000"),
  );
});
