// The worker side of off-thread decompression (`_inflate.ts`): reads a compressed layer file,
// decompresses and hashes it on its own thread, and hands the plain bytes to the main thread in
// 1 MiB buffers that travel back and forth (transferred, never copied across threads), so that the
// main thread only parses the tar and writes files, as GNU tar leaves gunzip to another process.

import { createHash } from "node:crypto";
import { serializeError } from "../errors.ts";
import { decompress } from "./compression.ts";
import type { FromInflater, ToInflater } from "./_inflate.ts";
import { readFileChunks } from "./_follow.ts";
import type { Follow } from "./follow.ts";

const READ_CHUNK = 1 << 20;

/**
 * The worker's global scope, typed here rather than with a `deno.worker` lib directive (JSR does
 * not allow directives that change globals).
 */
const scope = globalThis as unknown as {
  postMessage(message: FromInflater, transfer?: Transferable[]): void;
  onmessage: ((event: MessageEvent<ToInflater>) => void) | null;
};

/** Output buffers the main thread has handed back, and who waits for one. */
const free: ArrayBuffer[] = [];
let waiting: ((buffer: ArrayBuffer) => void) | null = null;

function takeBuffer(): Promise<ArrayBuffer> | ArrayBuffer {
  const buffer = free.pop();
  if (buffer !== undefined) return buffer;
  return new Promise((resolve) => (waiting = resolve));
}

async function inflate(path: string, slots: number, follow: Follow | undefined): Promise<void> {
  // A worker kept for another file has every buffer back already (the main thread returned them
  // before it sent this file).
  while (free.length < slots) free.push(new ArrayBuffer(READ_CHUNK));
  const compressedHash = createHash("sha256");
  let compressedSize = 0;
  let size = 0;
  const input = readFileChunks(path, {
    chunkSize: READ_CHUNK,
    follow,
    onChunk: (chunk) => {
      compressedHash.update(chunk);
      compressedSize += chunk.length;
    },
  });
  let out = new Uint8Array(await takeBuffer());
  let fill = 0;
  for await (const chunk of decompress(input, { releaseChunks: true })) {
    size += chunk.length;
    let pos = 0;
    while (pos < chunk.length) {
      const take = Math.min(chunk.length - pos, out.length - fill);
      out.set(chunk.subarray(pos, pos + take), fill);
      fill += take;
      pos += take;
      if (fill === out.length) {
        scope.postMessage({ type: "output", buffer: out.buffer, length: fill }, [out.buffer]);
        out = new Uint8Array(await takeBuffer());
        fill = 0;
      }
    }
  }
  if (fill > 0) {
    scope.postMessage({ type: "output", buffer: out.buffer, length: fill }, [out.buffer]);
  }
  scope.postMessage({
    type: "done",
    compressedDigest: `sha256:${compressedHash.digest("hex")}`,
    compressedSize,
    size,
  });
}

scope.onmessage = (event: MessageEvent<ToInflater>) => {
  const message = event.data;
  if (message.type === "start") {
    inflate(message.path, message.slots, message.follow).catch((err) => {
      scope.postMessage({ type: "error", error: serializeError(err) });
    });
  } else if (message.type === "give") {
    if (waiting !== null) {
      const wake = waiting;
      waiting = null;
      wake(message.buffer);
    } else {
      free.push(message.buffer);
    }
  }
};
