/**
 * Remotes: registry endpoint configuration with containerd's semantics. `registryHosts` reads a
 * `hosts.toml` directory tree (`certs.d` layout) and returns the ordered mirrors and upstream to
 * try, with their capabilities, TLS files, headers and API path.
 *
 * @example List the endpoints that may resolve a tag
 * ```ts
 * import { filterCapabilities, registryHosts } from "@strata/strata/remotes";
 *
 * const hosts = await registryHosts("docker.io", { configPath: "/etc/containerd/certs.d" });
 * for (const h of filterCapabilities(hosts, ["pull", "resolve"])) {
 *   console.log(`${h.scheme}://${h.host}${h.path}`);
 * }
 * ```
 *
 * @module
 */
export * from "./hosts.ts";
export * from "./auth.ts";
export * from "./credentials.ts";
export * from "./types.ts";
export { MAX_MANIFEST_SIZE, Resolver } from "./resolver.ts";
export { fetchToContent, type FetchToContentOptions, makeRefKey } from "./fetch.ts";
