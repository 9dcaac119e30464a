import { join } from "node:path";
import { createHash } from "node:crypto";

const held = new Map<string, Promise<void>>();

/**
 * Runs `fn` while holding the lock for `key`: one holder per key inside this process (a chain of
 * promises) and across processes (an exclusive `flock` on `<dir>/<sha256 of key>.lock`), so
 * several unpacks of one image, in any number of processes, apply each layer once.
 */
export async function withKeyLock<T>(dir: string, key: string, fn: () => Promise<T>): Promise<T> {
  const id = createHash("sha256").update(key).digest("hex");
  const prev = held.get(id) ?? Promise.resolve();
  let release!: () => void;
  const mine = new Promise<void>((r) => (release = r));
  const chained = prev.then(() => mine);
  held.set(id, chained);
  await prev;
  try {
    await Deno.mkdir(dir, { recursive: true });
    const file = await Deno.open(join(dir, `${id}.lock`), {
      read: true,
      write: true,
      create: true,
    });
    try {
      await file.lock(true);
      return await fn();
    } finally {
      file.close(); // closing drops the flock
    }
  } finally {
    release();
    if (held.get(id) === chained) held.delete(id);
  }
}
