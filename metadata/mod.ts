/**
 * The metadata database of a Strata root (SQLite through `node:sqlite`) and containerd-style
 * filters used to select records.
 *
 * @example Open a root's database
 * ```ts
 * import { MetadataDb } from "@strata/strata/metadata";
 * const db = MetadataDb.open(await Deno.makeTempDir());
 * db.close();
 * ```
 *
 * @module
 */
export * from "./db.ts";
export * from "./filters.ts";
export * from "./labels.ts";
