// Shared by the content tests and the child process they spawn.
import { createHash } from "node:crypto";
import { join } from "node:path";
import { ContentStore } from "../../content/mod.ts";
import { MetadataDb } from "../../metadata/db.ts";

/** Deterministic test bytes: the same `n` gives the same bytes in every process. */
export function pattern(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 31 + (i >> 9) * 7 + 11) & 0xff;
  return out;
}

export function sha256(data: Uint8Array): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

export interface Fixture {
  root: string;
  db: MetadataDb;
  store: ContentStore;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Opens a content store on a Strata root (a new temporary one unless given). */
export async function openStore(root?: string): Promise<Fixture> {
  const dir = root ?? await Deno.makeTempDir({ prefix: "strata-content-" });
  const db = MetadataDb.open(dir);
  const store = new ContentStore(join(dir, "content"), db);
  return {
    root: dir,
    db,
    store,
    async [Symbol.asyncDispose]() {
      db.close();
      if (root === undefined) await Deno.remove(dir, { recursive: true });
    },
  };
}
