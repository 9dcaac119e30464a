/**
 * Applying a layer file while it is still being written (a layer applied as it downloads): the
 * writer's side of `ApplyOptions.follow`.
 *
 * @example Apply a layer while another task writes its file
 * ```ts ignore
 * import { applyLayer, FOLLOW_DONE, newFollowState } from "@strata/strata/diff";
 *
 * const state = newFollowState();
 * const root = await Deno.makeTempDir();
 * const applied = applyLayer(new URL("file:///tmp/layer.tar.gz"), root, {
 *   follow: { size: 1234, state },
 *   expectedDigest: "sha256:...",
 * });
 * // ... once the writer has written all 1234 bytes:
 * Atomics.store(state, 0, FOLLOW_DONE);
 * await applied;
 * ```
 *
 * @module
 */

/**
 * A file still being written: its final size and the writer's state, for `ApplyOptions.follow`.
 *
 * @example
 * ```ts
 * import { type Follow, newFollowState } from "@strata/strata/diff";
 *
 * const follow: Follow = { size: 4096, state: newFollowState() };
 * console.log(follow.size);
 * ```
 */
export interface Follow {
  /** The size the file will have once written. */
  size: number;
  /**
   * `state[0]`: {@linkcode FOLLOW_WRITING} while the file is written, {@linkcode FOLLOW_DONE}
   * once it is complete, {@linkcode FOLLOW_STOPPED} when the writer failed or the read should
   * stop. A `SharedArrayBuffer`'s view, to be seen across threads.
   */
  state: Int32Array;
}

/** The file is still being written. */
export const FOLLOW_WRITING: number = 0;
/** The file is complete. */
export const FOLLOW_DONE: number = 1;
/** The writer failed, or the reader should give up. */
export const FOLLOW_STOPPED: number = -1;

/**
 * A fresh follow state ({@linkcode FOLLOW_WRITING}), on a `SharedArrayBuffer` so that readers
 * on worker threads see it change.
 *
 * @example
 * ```ts
 * import { FOLLOW_STOPPED, newFollowState } from "@strata/strata/diff";
 *
 * const state = newFollowState();
 * Atomics.store(state, 0, FOLLOW_STOPPED); // the download failed: readers stop
 * ```
 *
 * @returns The state array.
 */
export function newFollowState(): Int32Array {
  return new Int32Array(new SharedArrayBuffer(4));
}
