/**
 * Transfer: moving images between a registry and the local stores. `pullImage` resolves,
 * fetches and unpacks as layers arrive; `pushImage` sends a stored image back. Both report
 * progress as {@linkcode ProgressEvent}s.
 *
 * @example Pull an image and print each step
 * ```ts ignore
 * import { Client } from "@strata/strata";
 * import { pullImage } from "@strata/strata/transfer";
 *
 * using client = Client.open({ root: "/tmp/strata" });
 * await pullImage(client, "localhost:5000/app:1", {
 *   onProgress: (e) => console.log(`${e.kind} ${e.id} ${e.status}`),
 * });
 * ```
 *
 * @module
 */
export * from "./progress.ts";
export * from "./pull.ts";
export * from "./push.ts";
