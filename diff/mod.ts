/**
 * Layers: the tar codec, compression, and applying a layer to a directory or a snapshot's
 * mounts with containerd's semantics (whiteout policies, root confinement by the kernel,
 * nanosecond metadata, diffID verification).
 *
 * @example Apply a layer to a directory
 * ```ts
 * import { applyLayer } from "@strata/strata/diff";
 *
 * const root = await Deno.makeTempDir();
 * await using file = await Deno.open("layer.tar.gz");
 * const { diffId, skipped } = await applyLayer(file.readable, root);
 * console.log(diffId, skipped);
 * ```
 *
 * @module
 */

export * from "./tar/mod.ts";
export * from "./compression.ts";
export * from "./apply.ts";
export * from "./follow.ts";
export type { Mount } from "../mount/types.ts";
export * from "./compare.ts";
