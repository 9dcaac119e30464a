/**
 * The local content store: committed blobs addressed by digest, resumable ingests with digest and
 * size verification, blob labels, and ingest locking shared by every process using a root.
 *
 * @example Write a blob through a writer, then read it back
 * ```ts
 * import { ContentStore } from "@strata/strata/content";
 * import { MetadataDb } from "@strata/strata/metadata";
 *
 * const root = await Deno.makeTempDir();
 * const db = MetadataDb.open(root);
 * const store = new ContentStore(`${root}/content`, db);
 * const writer = await store.writer({ ref: "greeting" });
 * await writer.write(new TextEncoder().encode("hello"));
 * const info = await writer.commit({ labels: { "example.com/kind": "text" } });
 * const text = new TextDecoder().decode(await store.readBlob(info.digest));
 * console.log(info.digest, text);
 * db.close();
 * ```
 *
 * @module
 */
export * from "./types.ts";
export * from "./writer.ts";
export * from "./store.ts";
