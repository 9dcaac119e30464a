/**
 * The image model: OCI and Docker media types and documents, validation, references, platforms,
 * manifest selection, chain IDs, the image store, and archive import and export.
 *
 * @example Normalise a reference and compute a chain ID
 * ```ts
 * import { chainId, normalizeReference } from "@strata/strata/images";
 * console.log(normalizeReference("alpine"));
 * console.log(chainId(["sha256:" + "a".repeat(64)]));
 * ```
 *
 * @module
 */
export * from "./types.ts";
export * from "./digest.ts";
export * from "./media_types.ts";
export * from "./validate.ts";
export * from "./reference.ts";
export * from "./platforms.ts";
export * from "./manifest.ts";
export * from "./store.ts";
export * from "./archive/mod.ts";
