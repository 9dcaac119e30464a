/**
 * Registry credentials and the reader of Docker's `config.json` (`auths` entries only).
 *
 * @module
 */

import { join } from "node:path";
import { InvalidArgument } from "../errors.ts";

/** A username and password (or personal access token) for Basic auth and the token server. */
export interface PasswordCredentials {
  /** The user name. */
  username: string;
  /** The password; never logged or put in error messages. */
  password: string;
}

/** An identity (refresh) token, as Docker stores after an OAuth login. */
export interface IdentityTokenCredentials {
  /** The refresh token sent to the token server with `grant_type=refresh_token`. */
  identityToken: string;
}

/** Credentials for one registry host. */
export type Credentials = PasswordCredentials | IdentityTokenCredentials;

/** Options for {@linkcode credentialsFromDockerConfig}. */
export interface DockerConfigOptions {
  /** The config file; default `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`. */
  path?: string;
}

const DOCKER_HUB_KEY = "https://index.docker.io/v1/";

/**
 * Looks up the credentials for a registry host in Docker's `config.json`.
 *
 * Only `auths` entries are read (`auth` = base64 `user:password`, or `username`/`password`, or
 * `identitytoken`); `credHelpers` and `credsStore` are ignored. `docker.io` maps to the
 * `https://index.docker.io/v1/` key. A missing file yields `undefined`.
 *
 * @param host The registry host, e.g. `registry.example.com:5000` or `docker.io`.
 * @param options Where the config file is.
 * @returns The credentials, or `undefined` when the file has none for the host.
 * @throws {InvalidArgument} When the file is not valid JSON or an `auth` value is malformed.
 *
 * @example
 * ```ts
 * import { credentialsFromDockerConfig } from "./credentials.ts";
 * const creds = await credentialsFromDockerConfig("docker.io");
 * console.log(creds === undefined ? "anonymous" : "logged in");
 * ```
 */
export async function credentialsFromDockerConfig(
  host: string,
  options: DockerConfigOptions = {},
): Promise<Credentials | undefined> {
  const path = options.path ?? defaultConfigPath();
  if (path === undefined) return undefined;
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw err;
  }
  let config: unknown;
  try {
    config = JSON.parse(text);
  } catch {
    throw new InvalidArgument(`Cannot read Docker config "${path}": invalid JSON`);
  }
  const auths = isRecord(config) ? config["auths"] : undefined;
  if (!isRecord(auths)) return undefined;
  const entry = findEntry(auths, host);
  if (!isRecord(entry)) return undefined;
  return entryCredentials(entry, host, path);
}

function defaultConfigPath(): string | undefined {
  const dir = Deno.env.get("DOCKER_CONFIG");
  if (dir) return join(dir, "config.json");
  const home = Deno.env.get("HOME");
  return home ? join(home, ".docker", "config.json") : undefined;
}

function findEntry(auths: Record<string, unknown>, host: string): unknown {
  const keys = host === "docker.io" || host === "registry-1.docker.io" || host === "index.docker.io"
    ? [DOCKER_HUB_KEY, "docker.io", "index.docker.io", "registry-1.docker.io"]
    : [host];
  for (const key of keys) {
    if (key in auths) return auths[key];
  }
  // Keys may be URLs such as "https://host/v1/".
  for (const [key, value] of Object.entries(auths)) {
    if (keyHost(key) === host || keys.includes(keyHost(key))) return value;
  }
  return undefined;
}

function keyHost(key: string): string {
  const noScheme = key.replace(/^[a-z]+:\/\//i, "");
  const slash = noScheme.indexOf("/");
  return slash === -1 ? noScheme : noScheme.slice(0, slash);
}

function entryCredentials(
  entry: Record<string, unknown>,
  host: string,
  path: string,
): Credentials | undefined {
  const identityToken = entry["identitytoken"];
  if (typeof identityToken === "string" && identityToken !== "") return { identityToken };
  const auth = entry["auth"];
  if (typeof auth === "string" && auth !== "") {
    let decoded: string;
    try {
      decoded = new TextDecoder("utf-8", { fatal: true }).decode(
        Uint8Array.from(atob(auth), (c) => c.charCodeAt(0)),
      );
    } catch {
      throw new InvalidArgument(
        `Cannot read credentials for "${host}" from "${path}": "auth" is not base64`,
      );
    }
    const colon = decoded.indexOf(":");
    if (colon === -1) {
      throw new InvalidArgument(
        `Cannot read credentials for "${host}" from "${path}": "auth" has no "user:password" form`,
      );
    }
    return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
  }
  const username = entry["username"];
  const password = entry["password"];
  if (typeof username === "string" && typeof password === "string" && username !== "") {
    return { username, password };
  }
  return undefined;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
