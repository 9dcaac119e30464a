/**
 * Progress events of a pull or a push, one shape for every consumer: the terminal renderer, the
 * plain-line printer and `--json`.
 *
 * @module
 */

import type { Descriptor } from "../images/types.ts";
import {
  isIndexType,
  isKnownConfigType,
  isLayerType,
  isManifestType,
} from "../images/media_types.ts";

/** What a progress event is about. */
export type ProgressKind = "image" | "index" | "manifest" | "config" | "layer" | "blob";

/**
 * The state of an item. Images: `resolving`, `resolved`, `saved` (pull) or `pushed` (push).
 * Blobs: `waiting`, `downloading`, `downloaded`, `exists` (already in the store or registry),
 * `uploading`, `uploaded`. Layers also: `extracting`, `extracted`, `unpacked` (their snapshot
 * existed, so the blob was not needed). A layer applied while it downloads reports `extracting`
 * before its download's last `downloading` events and `downloaded`.
 */
export type ProgressStatus =
  | "resolving"
  | "resolved"
  | "saved"
  | "pushed"
  | "waiting"
  | "downloading"
  | "downloaded"
  | "exists"
  | "uploading"
  | "uploaded"
  | "extracting"
  | "extracted"
  | "unpacked";

/** One progress event. */
export interface ProgressEvent {
  /** The item: the reference for `image`, else the blob's digest. */
  id: string;
  /** The kind of item. */
  kind: ProgressKind;
  /** Its new state. */
  status: ProgressStatus;
  /** Bytes done so far (downloads, uploads). */
  current?: number;
  /** Bytes in all. */
  total?: number;
  /** For `image` events: the digest the reference resolved to. */
  digest?: string;
}

/**
 * The kind of a descriptor for progress: by its media type, or `layer` when the caller knows it
 * is one.
 *
 * @example
 * ```ts
 * import { progressKind } from "@strata/strata/transfer";
 * console.log(progressKind({
 *   mediaType: "application/vnd.oci.image.index.v1+json",
 *   digest: "sha256:" + "0".repeat(64),
 *   size: 2,
 * }));
 * ```
 *
 * @param desc The descriptor.
 * @returns `index`, `manifest`, `config`, `layer` or `blob`.
 */
export function progressKind(desc: Descriptor): ProgressKind {
  if (isIndexType(desc.mediaType)) return "index";
  if (isManifestType(desc.mediaType)) return "manifest";
  if (isLayerType(desc.mediaType)) return "layer";
  if (isKnownConfigType(desc.mediaType)) return "config";
  return "blob";
}

/**
 * Wraps a progress callback so that `downloading` and `uploading` events for one item arrive at
 * most every `intervalMs`; every other event (and the first byte event) passes at once.
 *
 * @example
 * ```ts
 * import { throttleProgress } from "@strata/strata/transfer";
 * const seen: string[] = [];
 * const emit = throttleProgress((e) => seen.push(e.status), { intervalMs: 1000 });
 * emit({ id: "a", kind: "layer", status: "downloading", current: 1, total: 3 });
 * emit({ id: "a", kind: "layer", status: "downloading", current: 2, total: 3 });
 * emit({ id: "a", kind: "layer", status: "downloaded", current: 3, total: 3 });
 * console.log(seen); // ["downloading", "downloaded"]
 * ```
 *
 * @param emit The callback to call.
 * @param options How often byte events may pass, in milliseconds (default 100).
 * @returns The throttled callback.
 */
export function throttleProgress(
  emit: (event: ProgressEvent) => void,
  options: { intervalMs?: number } = {},
): (event: ProgressEvent) => void {
  const interval = options.intervalMs ?? 100;
  const last = new Map<string, number>();
  return (event) => {
    if (event.status === "downloading" || event.status === "uploading") {
      const now = performance.now();
      const before = last.get(event.id);
      if (before !== undefined && now - before < interval) return;
      last.set(event.id, now);
    } else {
      last.delete(event.id);
    }
    emit(event);
  };
}
