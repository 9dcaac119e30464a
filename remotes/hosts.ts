/**
 * Registry host configuration: containerd's `hosts.toml` directories (`certs.d` layout) turned
 * into the ordered list of endpoints to try for a registry hostname.
 *
 * @module
 */
import { isAbsolute, join } from "node:path";
import { parse, TomlError } from "smol-toml";
import { InvalidArgument } from "../errors.ts";

/** What an endpoint may be used for. */
export type HostCapability = "pull" | "resolve" | "push" | "referrers";

/** Every capability, in containerd's bit order. */
export const ALL_CAPABILITIES: readonly HostCapability[] = Object.freeze([
  "pull",
  "resolve",
  "push",
  "referrers",
]);

/** A TLS client certificate and its optional key (absolute paths). */
export interface ClientCert {
  /** Path of the PEM certificate. */
  cert: string;
  /** Path of the PEM key; absent when the key is inside the certificate file. */
  key?: string;
}

/** One registry endpoint, as containerd's `RegistryHost`. */
export interface RegistryHost {
  /** `name[:port]` to connect to. */
  host: string;
  /** URL scheme to use. */
  scheme: "http" | "https";
  /** API root, normally `/v2`. */
  path: string;
  /** Operations this endpoint may serve. */
  capabilities: HostCapability[];
  /** Whether TLS certificate verification is skipped. */
  skipVerify: boolean;
  /** Absolute paths of extra CA certificates. */
  caFiles: string[];
  /**
   * TLS client certificates (`client`), in file order. containerd hands them all to Go's TLS
   * client, which presents the first one matching the CAs of the server's certificate request.
   * Deno's TLS clients take a single certificate, so a `Resolver` starts with the
   * first one and, when the server refuses it (a certificate alert, or a connection dropped
   * before any answer came with it), probes the next ones in order with a TLS handshake of their
   * own and keeps the first one the server answers for later connections to this endpoint. When
   * the server refuses all of them, requests fail with `Unavailable` naming the certificate file
   * (or the number of certificates), without retries.
   */
  clientCerts: ClientCert[];
  /** Extra headers sent with every request to this endpoint. */
  headers: Record<string, string[]>;
  /** Whether `path` was taken as-is (no `/v2` appended). */
  overridePath: boolean;
  /**
   * Connection timeout from `dial_timeout` (a Go duration), in milliseconds; absent or 0: none.
   *
   * containerd bounds the TCP connect with it. Deno's fetch has no connect timeout, so a
   * `Resolver` bounds each attempt of a request without a body (`GET`, `HEAD`, token
   * requests) from its start until the response headers arrive: connecting, the TLS handshake
   * and the server's first answer, not the body. Requests with a body (uploads) go through
   * node:http(s), where it bounds the TCP connect and TLS handshake only, so a slow upload is
   * not cut. An attempt that runs out fails as a connection error
   * (`connection timed out after N ms (dial_timeout)`): it is retried within `maxAttempts`, then
   * the next host is tried.
   */
  dialTimeoutMs?: number;
  /**
   * Whether an `http` endpoint should first be tried with https and fall back to http on a TLS
   * protocol error (containerd's fallback transport: http scheme, TLS configured, port not 80).
   */
  httpFallback: boolean;
}

/** Options for {@linkcode registryHosts}. */
export interface RegistryHostsOptions {
  /** Directory holding `<host>/hosts.toml` (e.g. `/etc/containerd/certs.d`); none by default. */
  configPath?: string;
  /** Use http for the implicit upstream entry (ctr's `--plain-http`). */
  plainHttp?: boolean;
}

/**
 * Directory name containerd uses for a host with a port: `host:port` becomes `host_port_`.
 *
 * @param host A registry host, `name[:port]`.
 * @returns The escaped directory name (the host itself when it has no port).
 *
 * @example
 * ```ts
 * import { hostsDirName } from "@strata/strata/remotes";
 *
 * console.log(hostsDirName("localhost:5000")); // "localhost_5000_"
 * ```
 */
export function hostsDirName(host: string): string {
  const idx = host.lastIndexOf(":");
  return idx > 0 ? `${host.slice(0, idx)}_${host.slice(idx + 1)}_` : host;
}

/**
 * Directory names tried, in order, under the hosts config root for a host.
 *
 * @param host A registry host, `name[:port]`.
 * @returns `host_port_`, `host:port`, `_default` for a host with a port, else `host`, `_default`.
 *
 * @example
 * ```ts
 * import { hostsDirNames } from "@strata/strata/remotes";
 *
 * console.log(hostsDirNames("localhost:5000")); // ["localhost_5000_", "localhost:5000", "_default"]
 * ```
 */
export function hostsDirNames(host: string): string[] {
  const escaped = hostsDirName(host);
  return escaped === host ? [host, "_default"] : [escaped, host, "_default"];
}

/**
 * Whether a host is a loopback address (`localhost`, 127.0.0.0/8 or `::1`, port allowed).
 *
 * @param host A registry host, `name[:port]`.
 * @returns `true` for loopback hosts.
 *
 * @example
 * ```ts
 * import { isLocalhost } from "@strata/strata/remotes";
 *
 * console.log(isLocalhost("127.0.0.1:5000")); // true
 * ```
 */
export function isLocalhost(host: string): boolean {
  const name = splitHostPort(host)[0];
  if (name === "localhost") return true;
  if (/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(name)) {
    return name.split(".").every((part) => Number(part) <= 255);
  }
  if (!name.includes(":")) return false;
  try {
    return new URL(`http://[${name}]/`).hostname === "[::1]";
  } catch {
    return false;
  }
}

/**
 * Keeps the hosts that have every requested capability, preserving order.
 *
 * Resolving a tag needs `["pull", "resolve"]`; fetching by digest needs `"pull"`.
 *
 * @param hosts Hosts from {@linkcode registryHosts}.
 * @param capabilities One capability or a list that must all be present.
 * @returns The eligible hosts.
 *
 * @example
 * ```ts
 * import { filterCapabilities, registryHosts } from "@strata/strata/remotes";
 *
 * const hosts = await registryHosts("docker.io");
 * console.log(filterCapabilities(hosts, ["pull", "resolve"]).length); // 1
 * ```
 */
export function filterCapabilities(
  hosts: readonly RegistryHost[],
  capabilities: HostCapability | readonly HostCapability[],
): RegistryHost[] {
  const wanted = typeof capabilities === "string" ? [capabilities] : capabilities;
  return hosts.filter((h) => wanted.every((c) => h.capabilities.includes(c)));
}

/**
 * The ordered endpoints to try for a registry hostname, as containerd's `ConfigureHosts`.
 *
 * Looks up `<configPath>/<dir>/hosts.toml` (see {@linkcode hostsDirNames}); its `[host."<url>"]`
 * tables come first in file order, then the `server` entry. Without `server` the implicit
 * upstream is appended: `docker.io` maps to `https://registry-1.docker.io`, loopback hosts use
 * https on port 443 (or no port) and http otherwise (with https tried first), other hosts use
 * https unless `plainHttp` is set. A directory without `hosts.toml` contributes Docker-style
 * `*.crt` / `*.cert` + `*.key` files to the upstream entry.
 *
 * @param hostname The registry host of a reference, `name[:port]` (e.g. `docker.io`).
 * @param options Config directory and plain HTTP default.
 * @returns The endpoints, mirrors first and the upstream last.
 * @throws {InvalidArgument} When the hostname is invalid or a `hosts.toml` is malformed.
 *
 * @example Default endpoints for Docker Hub
 * ```ts
 * import { registryHosts } from "@strata/strata/remotes";
 *
 * const [hub] = await registryHosts("docker.io");
 * console.log(`${hub?.scheme}://${hub?.host}${hub?.path}`); // https://registry-1.docker.io/v2
 * ```
 */
export async function registryHosts(
  hostname: string,
  options: RegistryHostsOptions = {},
): Promise<RegistryHost[]> {
  if (
    hostname === "" || hostname === "." || hostname === ".." || /[/\\\s]/.test(hostname) ||
    hostname.includes("\0")
  ) {
    throw new InvalidArgument(`Cannot configure registry hosts for "${hostname}": invalid host`);
  }
  let configs: HostConfig[] = [emptyConfig()];
  if (options.configPath !== undefined) {
    const dir = await findHostDir(options.configPath, hostname);
    if (dir !== undefined) configs = await loadHostDir(dir);
  }
  const last = configs[configs.length - 1];
  if (last !== undefined && last.host === "") {
    fillImplicitUpstream(last, hostname, options.plainHttp === true);
  }
  return configs.map(toRegistryHost);
}

interface HostConfig {
  scheme: "http" | "https";
  host: string;
  path: string;
  capabilities: HostCapability[];
  skipVerify: boolean;
  skipVerifySet: boolean;
  caFiles: string[];
  clientCerts: ClientCert[];
  headers: Record<string, string[]>;
  overridePath: boolean;
  dialTimeoutMs?: number;
}

function emptyConfig(): HostConfig {
  return {
    scheme: "https",
    host: "",
    path: "",
    capabilities: [...ALL_CAPABILITIES],
    skipVerify: false,
    skipVerifySet: false,
    caFiles: [],
    clientCerts: [],
    headers: {},
    overridePath: false,
  };
}

function fillImplicitUpstream(config: HostConfig, hostname: string, plainHttp: boolean): void {
  if (hostname === "docker.io") {
    config.scheme = "https";
    config.host = "registry-1.docker.io";
  } else if (isLocalhost(hostname)) {
    config.host = hostname;
    if (plainHttp) {
      config.scheme = "http";
    } else {
      const port = splitHostPort(hostname)[1];
      config.scheme = port === "" || port === "443" ? "https" : "http";
      if (port !== "80") {
        config.skipVerify = true;
        config.skipVerifySet = true;
      }
    }
  } else {
    config.host = hostname;
    config.scheme = plainHttp ? "http" : "https";
  }
  config.path = "/v2";
  config.overridePath = false;
  config.capabilities = [...ALL_CAPABILITIES];
}

function toRegistryHost(config: HostConfig): RegistryHost {
  const tlsConfigured = config.skipVerifySet || config.caFiles.length > 0 ||
    config.clientCerts.length > 0;
  const port = splitHostPort(config.host)[1];
  const host: RegistryHost = {
    host: config.host,
    scheme: config.scheme,
    path: config.path,
    capabilities: ALL_CAPABILITIES.filter((c) => config.capabilities.includes(c)),
    skipVerify: config.skipVerify,
    caFiles: config.caFiles,
    clientCerts: config.clientCerts,
    headers: config.headers,
    overridePath: config.overridePath,
    httpFallback: config.scheme === "http" && tlsConfigured && port !== "80",
  };
  if (config.dialTimeoutMs !== undefined) host.dialTimeoutMs = config.dialTimeoutMs;
  return host;
}

/** Splits `name[:port]`; bracketed IPv6 allowed; a bare IPv6 address has no port. */
function splitHostPort(host: string): [string, string] {
  if (host.startsWith("[")) {
    const end = host.indexOf("]");
    if (end < 0) return [host, ""];
    const rest = host.slice(end + 1);
    return [host.slice(1, end), rest.startsWith(":") ? rest.slice(1) : ""];
  }
  const first = host.indexOf(":");
  if (first < 0 || first !== host.lastIndexOf(":")) return [host, ""];
  return [host.slice(0, first), host.slice(first + 1)];
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound || err instanceof Deno.errors.NotADirectory) {
      return false;
    }
    throw err;
  }
}

async function findHostDir(root: string, hostname: string): Promise<string | undefined> {
  for (const name of hostsDirNames(hostname)) {
    const dir = join(root, name);
    if (await isDirectory(dir)) return dir;
  }
  return undefined;
}

async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw err;
  }
}

async function loadHostDir(dir: string): Promise<HostConfig[]> {
  const file = join(dir, "hosts.toml");
  const text = await readOptional(file);
  if (text === undefined || text.trim() === "") return [await loadCertFiles(dir)];
  return parseHostsFile(dir, file, text);
}

async function loadCertFiles(dir: string): Promise<HostConfig> {
  const config = emptyConfig();
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (!entry.isDirectory) names.push(entry.name);
  }
  names.sort();
  const present = new Set(names);
  for (const name of names) {
    if (name.endsWith(".crt")) {
      config.caFiles.push(join(dir, name));
    } else if (name.endsWith(".cert")) {
      const keyName = `${name.slice(0, -".cert".length)}.key`;
      const cert: ClientCert = { cert: join(dir, name) };
      if (present.has(keyName)) cert.key = join(dir, keyName);
      config.clientCerts.push(cert);
    }
  }
  return config;
}

function parseHostsFile(dir: string, file: string, text: string): HostConfig[] {
  let doc: Record<string, unknown>;
  try {
    doc = parse(text) as Record<string, unknown>;
  } catch (err) {
    if (err instanceof TomlError) {
      const reason = err.message.split("\n")[0]?.replace(/^Invalid TOML document: /, "") ?? "";
      throw new InvalidArgument(
        `Cannot parse hosts file "${file}" at line ${err.line}, column ${err.column}: ${reason}`,
      );
    }
    throw err;
  }
  const configs: HostConfig[] = [];
  const hostTables = doc["host"];
  if (hostTables !== undefined) {
    if (!isTable(hostTables)) {
      throw new InvalidArgument(`Cannot parse hosts file "${file}": "host" must be a table`);
    }
    for (const [url, table] of Object.entries(hostTables)) {
      if (!isTable(table)) {
        throw new InvalidArgument(
          `Cannot parse hosts file "${file}": host "${url}" must be a table`,
        );
      }
      configs.push(parseHostConfig(dir, file, url, table));
    }
  }
  const server = doc["server"];
  if (server !== undefined && typeof server !== "string") {
    throw new InvalidArgument(`Cannot parse hosts file "${file}": "server" must be a string`);
  }
  configs.push(parseHostConfig(dir, file, server ?? "", doc));
  return configs;
}

function isTable(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value) &&
    !(value instanceof Date);
}

function parseHostConfig(
  dir: string,
  file: string,
  server: string,
  table: Record<string, unknown>,
): HostConfig {
  const where = server === "" ? `in "${file}"` : `for "${server}" in "${file}"`;
  const fail = (reason: string): never => {
    throw new InvalidArgument(`Cannot parse host configuration ${where}: ${reason}`);
  };
  const config = emptyConfig();
  const override = table["override_path"];
  if (override !== undefined && typeof override !== "boolean") {
    return fail(`"override_path" must be a boolean`);
  }
  const overridePath = override === true;
  config.overridePath = overridePath;

  if (server !== "") {
    const full = /^[a-z][a-z0-9+.-]*:\/\//i.test(server) ? server : `https://${server}`;
    let url: URL;
    try {
      url = new URL(full);
    } catch {
      return fail(`invalid URL "${server}"`);
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      return fail(`unsupported scheme "${url.protocol.slice(0, -1)}"`);
    }
    if (url.host === "") return fail(`missing host in "${server}"`);
    config.scheme = url.protocol === "http:" ? "http" : "https";
    // Keep the authority as written (WHATWG URL drops default ports like ":443").
    const authority = /^[a-z][a-z0-9+.-]*:\/\/(?:[^@/?#]*@)?([^/?#]*)/i.exec(full)?.[1] ?? url.host;
    config.host = authority.toLowerCase();
    const cleaned = cleanPath(url.pathname);
    if (cleaned !== "/") {
      config.path = cleaned.endsWith("/v2") || overridePath ? cleaned : `${cleaned}/v2`;
    } else {
      config.path = overridePath ? "" : "/v2";
    }
  }

  const caps = table["capabilities"];
  if (caps !== undefined) {
    if (!Array.isArray(caps)) return fail(`"capabilities" must be an array of strings`);
    const parsed: HostCapability[] = [];
    for (const cap of caps) {
      if (typeof cap !== "string" || !(ALL_CAPABILITIES as readonly string[]).includes(cap)) {
        return fail(`unknown capability "${String(cap)}"`);
      }
      if (!parsed.includes(cap as HostCapability)) parsed.push(cap as HostCapability);
    }
    config.capabilities = parsed;
  }

  const skip = table["skip_verify"];
  if (skip !== undefined) {
    if (typeof skip !== "boolean") return fail(`"skip_verify" must be a boolean`);
    config.skipVerify = skip;
    config.skipVerifySet = true;
  }

  const ca = table["ca"];
  if (ca !== undefined) {
    const list = typeof ca === "string" ? [ca] : ca;
    if (!Array.isArray(list) || !list.every((p): p is string => typeof p === "string")) {
      return fail(`"ca" must be a string or an array of strings`);
    }
    config.caFiles = list.map((p) => absolute(dir, p));
  }

  const client = table["client"];
  if (client !== undefined) config.clientCerts = parseClient(dir, client, fail);

  const header = table["header"];
  if (header !== undefined) {
    if (!isTable(header)) return fail(`"header" must be a table`);
    for (const [name, value] of Object.entries(header)) {
      if (typeof value === "string") {
        config.headers[name] = [value];
      } else if (Array.isArray(value) && value.every((v) => typeof v === "string")) {
        config.headers[name] = [...value];
      } else {
        return fail(`header "${name}" must be a string or an array of strings`);
      }
    }
  }

  const dial = table["dial_timeout"];
  if (dial !== undefined) {
    if (typeof dial !== "string") return fail(`"dial_timeout" must be a duration string`);
    const ms = parseGoDuration(dial);
    if (ms === undefined) return fail(`invalid duration "${dial}" for "dial_timeout"`);
    config.dialTimeoutMs = ms;
  }
  return config;
}

function parseClient(
  dir: string,
  client: unknown,
  fail: (reason: string) => never,
): ClientCert[] {
  if (typeof client === "string") return [{ cert: absolute(dir, client) }];
  if (!Array.isArray(client)) return fail(`"client" must be a string or an array`);
  const certs: ClientCert[] = [];
  for (const item of client) {
    if (typeof item === "string") {
      certs.push({ cert: absolute(dir, item) });
    } else if (
      Array.isArray(item) && item.length >= 1 && item.length <= 2 &&
      item.every((p) => typeof p === "string")
    ) {
      const cert: ClientCert = { cert: absolute(dir, item[0] as string) };
      const key = item[1] as string | undefined;
      if (key !== undefined && key !== "") cert.key = absolute(dir, key);
      certs.push(cert);
    } else {
      return fail(`"client" entries must be strings or [cert, key] pairs`);
    }
  }
  return certs;
}

function absolute(dir: string, path: string): string {
  return isAbsolute(path) ? path : join(dir, path);
}

/** Go's `path.Clean` for an absolute URL path. */
function cleanPath(path: string): string {
  const out: string[] = [];
  for (const seg of path.split("/")) {
    if (seg === "" || seg === ".") continue;
    if (seg === "..") out.pop();
    else out.push(seg);
  }
  return `/${out.join("/")}`;
}

const DURATION_UNITS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  "µs": 1e-3,
  "μs": 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/** Go's `time.ParseDuration`, in milliseconds; `undefined` when invalid or negative. */
function parseGoDuration(text: string): number | undefined {
  if (text === "0") return 0;
  const re = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/y;
  let total = 0;
  let pos = text.startsWith("+") ? 1 : 0;
  if (pos === text.length) return undefined;
  while (pos < text.length) {
    re.lastIndex = pos;
    const m = re.exec(text);
    if (m === null) return undefined;
    total += Number(m[1]) * (DURATION_UNITS[m[2] as string] ?? 0);
    pos = re.lastIndex;
  }
  return total;
}
