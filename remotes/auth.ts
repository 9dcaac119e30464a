/**
 * Registry authorization: `WWW-Authenticate` parsing and an {@linkcode Authorizer} that answers
 * Basic and Bearer (token server) challenges, caching tokens per host and scope set.
 *
 * @module
 */

import { FailedPrecondition, InvalidArgument, NotImplemented, Unavailable } from "../errors.ts";
import type { Credentials } from "./credentials.ts";

/** One challenge of a `WWW-Authenticate` header. */
export interface Challenge {
  /** The scheme, lower-cased: `basic`, `bearer`, or any other scheme name. */
  scheme: "basic" | "bearer" | string;
  /** The auth parameters, keys lower-cased, values unquoted. */
  params: Record<string, string>;
}

const TOKEN_CHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;

/**
 * Parses a `WWW-Authenticate` header value into its challenges (RFC 9110 §11.6.1).
 *
 * Several challenges may be comma-separated; parameter values may be tokens or quoted strings with
 * backslash escapes; empty list elements are skipped; a `token68` payload is accepted and dropped.
 *
 * @param header The header value (several header lines may be joined with `, `).
 * @returns The challenges in header order.
 * @throws {InvalidArgument} When the header is malformed.
 *
 * @example
 * ```ts
 * import { parseWwwAuthenticate } from "./auth.ts";
 * const [c] = parseWwwAuthenticate('Bearer realm="https://auth.example/token",service="reg"');
 * console.log(c?.scheme, c?.params.realm);
 * ```
 */
export function parseWwwAuthenticate(header: string): Challenge[] {
  const fail = (why: string): never => {
    throw new InvalidArgument(`Cannot parse WWW-Authenticate header "${header}": ${why}`);
  };
  let pos = 0;
  const peek = (): string | undefined => header[pos];
  const skipSpaces = (): void => {
    while (peek() === " " || peek() === "\t") pos++;
  };
  const skipSeparators = (): void => {
    while (peek() === " " || peek() === "\t" || peek() === ",") pos++;
  };
  const readToken = (): string => {
    const start = pos;
    while (pos < header.length && TOKEN_CHAR.test(header[pos]!)) pos++;
    return header.slice(start, pos);
  };
  const readQuoted = (): string => {
    pos++; // opening quote
    let value = "";
    for (;;) {
      const c = peek();
      if (c === undefined) return fail("unterminated quoted string");
      pos++;
      if (c === '"') return value;
      if (c === "\\") {
        const escaped = peek();
        if (escaped === undefined) return fail("unterminated quoted string");
        value += escaped;
        pos++;
      } else {
        value += c;
      }
    }
  };
  // Is the text at `pos` an auth-param (`token OWS "="` but not a token68 `==`)?
  const atParam = (): boolean => {
    const save = pos;
    const name = readToken();
    skipSpaces();
    const result = name !== "" && peek() === "=" && header[pos + 1] !== "=";
    pos = save;
    return result;
  };

  const challenges: Challenge[] = [];
  skipSeparators();
  if (pos >= header.length) fail("no challenge");
  while (pos < header.length) {
    const scheme = readToken();
    if (scheme === "") fail(`unexpected character at offset ${pos}`);
    const challenge: Challenge = { scheme: scheme.toLowerCase(), params: {} };
    challenges.push(challenge);
    skipSpaces();
    if (pos < header.length && peek() !== "," && !atParam()) {
      // token68: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
      const start = pos;
      while (pos < header.length && /[A-Za-z0-9\-._~+/]/.test(header[pos]!)) pos++;
      while (peek() === "=") pos++;
      if (pos === start) fail(`unexpected character at offset ${pos}`);
      skipSpaces();
      if (pos < header.length && peek() !== ",") fail(`unexpected character at offset ${pos}`);
      skipSeparators();
      continue;
    }
    // auth-params, separated by commas, until a token not followed by "=" (the next scheme).
    for (;;) {
      skipSeparators();
      if (pos >= header.length || !atParam()) break;
      const key = readToken().toLowerCase();
      skipSpaces();
      pos++; // "="
      skipSpaces();
      let value: string;
      if (peek() === '"') value = readQuoted();
      else {
        value = readToken();
        if (value === "") fail(`missing value for parameter "${key}"`);
      }
      if (key in challenge.params) fail(`duplicate parameter "${key}"`);
      challenge.params[key] = value;
      skipSpaces();
      if (pos < header.length && peek() !== ",") fail(`unexpected character at offset ${pos}`);
    }
  }
  return challenges;
}

/** Options for the {@linkcode Authorizer} constructor. */
export interface AuthorizerOptions {
  /** Looks up the credentials for a registry host; without it every request is anonymous. */
  credentials?: (host: string) => Promise<Credentials | undefined>;
  /** The fetch used to talk to token servers (default: the global `fetch`). */
  fetch?: typeof fetch;
  /** The clock in milliseconds, for token expiry (default `Date.now`). */
  now?: () => number;
}

/** Options for {@linkcode Authorizer.authorize}. */
export interface AuthorizeOptions {
  /** The scopes the request needs, e.g. `repository:library/alpine:pull`. */
  scope?: string[];
  /**
   * The fetch for the token requests this call makes (default: the authorizer's `fetch`). A
   * resolver passes one that uses the TLS settings (`ca`, `client`, `skip_verify`) and
   * `dial_timeout` of the registry host that was challenged, as containerd does.
   */
  fetch?: typeof fetch;
}

/** Options for {@linkcode Authorizer.handleChallenge}. */
export interface HandleChallengeOptions {
  /**
   * Identifies the request that got the challenge (default: `METHOD URL` of the response's URL);
   * a second `error=` challenge for the same request is terminal.
   */
  request?: string;
  /**
   * The `Authorization` header the challenged request carried (`null`: none). A Basic challenge
   * counts as a rejection of the credentials only when the request carried them; a request sent
   * before another one set up the handler is simply retried. Absent: assume it carried them.
   */
  authorization?: string | null;
  /**
   * The fetch for the token request this call makes (default: the authorizer's `fetch`); see
   * {@linkcode AuthorizeOptions.fetch}.
   */
  fetch?: typeof fetch;
}

interface CachedToken {
  token: Promise<string>;
  expiresAt: number;
}

interface BearerHandler {
  kind: "bearer";
  realm: URL;
  service: string;
  /** Request scope set (joined) → that set plus the scopes its challenge added. */
  challenged: Map<string, string[]>;
  lastScope: string[];
  credentials: Credentials | undefined;
  tokens: Map<string, CachedToken>;
}

interface BasicHandler {
  kind: "basic";
  header: string;
}

const DEFAULT_EXPIRES_IN_SECONDS = 60;

/**
 * Answers registry `401` challenges and adds `Authorization` headers to later requests.
 *
 * One handler is kept per host. Bearer tokens are cached per sorted, de-duplicated scope set until
 * `expires_in` (default 60 s) elapses, with one in-flight token request per scope set. Credentials
 * never appear in error messages.
 *
 * @example
 * ```ts
 * import { Authorizer } from "./auth.ts";
 * const auth = new Authorizer({ credentials: () => Promise.resolve(undefined) });
 * const url = "https://registry.example/v2/";
 * let response = await fetch(url);
 * if (response.status === 401 && await auth.handleChallenge("registry.example", response, [])) {
 *   const request = new Request(url);
 *   await auth.authorize("registry.example", request);
 *   response = await fetch(request);
 * }
 * ```
 */
export class Authorizer {
  #credentials: ((host: string) => Promise<Credentials | undefined>) | undefined;
  #fetch: typeof fetch;
  #now: () => number;
  #handlers = new Map<string, BearerHandler | BasicHandler>();
  #lastError = new Map<string, string>();

  /**
   * Creates an authorizer with no cached handlers.
   *
   * @param options The credentials callback, the fetch and the clock.
   */
  constructor(options: AuthorizerOptions = {}) {
    this.#credentials = options.credentials;
    this.#fetch = options.fetch ?? fetch;
    this.#now = options.now ?? Date.now;
  }

  /**
   * Sets the `Authorization` header for a request to `host` when a handler exists for it
   * (fetching a Bearer token for the scope set when none is cached); otherwise does nothing.
   *
   * @param host The registry host (`host[:port]`).
   * @param request The request, or its headers, to modify.
   * @param options The scopes the request needs (default: those of the last challenge).
   * @returns When the header is set.
   * @throws {FailedPrecondition} When the token server rejects the credentials.
   * @throws {Unavailable} When the token server cannot be reached or fails.
   *
   * @example
   * ```ts
   * import { Authorizer } from "./auth.ts";
   * const request = new Request("https://registry.example/v2/");
   * await new Authorizer().authorize("registry.example", request);
   * ```
   */
  async authorize(
    host: string,
    request: Request | Headers,
    options: AuthorizeOptions = {},
  ): Promise<void> {
    const handler = this.#handlers.get(host);
    if (handler === undefined) return;
    const headers = request instanceof Request ? request.headers : request;
    if (handler.kind === "basic") {
      headers.set("Authorization", handler.header);
      return;
    }
    let scope = handler.lastScope;
    if (options.scope !== undefined) {
      const requested = normalizeScope(options.scope);
      scope = handler.challenged.get(requested.join(" ")) ?? requested;
    }
    const token = await this.#token(host, handler, scope, options.fetch ?? this.#fetch);
    headers.set("Authorization", `Bearer ${token}`);
  }

  /**
   * Handles a `401` response: parses its `WWW-Authenticate` challenges (Bearer first, then Basic)
   * and sets up (and for Bearer, fetches the token of) the handler for `host`.
   *
   * @param host The registry host (`host[:port]`).
   * @param response The `401` response (its body is not read).
   * @param scope The scopes the request needs, e.g. `repository:library/alpine:pull`.
   * @param options Identifies the request, for repeated `error=` challenges.
   * @returns `true` when the request should be retried with {@linkcode Authorizer.authorize},
   *   `false` when it cannot be authorized (no challenge, no credentials for Basic, or a repeated
   *   `error=` challenge for the same request).
   * @throws {InvalidArgument} When a challenge is malformed (e.g. a Bearer realm that is no URL).
   * @throws {NotImplemented} When no challenge has a supported scheme.
   * @throws {FailedPrecondition} When the registry or token server rejects the credentials.
   * @throws {Unavailable} When the token server cannot be reached or fails.
   *
   * @example
   * ```ts
   * import { Authorizer } from "./auth.ts";
   * const auth = new Authorizer();
   * const response = await fetch("https://registry.example/v2/");
   * console.log(await auth.handleChallenge("registry.example", response, []));
   * ```
   */
  async handleChallenge(
    host: string,
    response: Response,
    scope: string[],
    options: HandleChallengeOptions = {},
  ): Promise<boolean> {
    const header = response.headers.get("www-authenticate");
    if (header === null || header.trim() === "") return false;
    const rank = (c: Challenge): number => c.scheme === "bearer" ? 0 : c.scheme === "basic" ? 1 : 2;
    const challenges = parseWwwAuthenticate(header)
      .filter((c) => rank(c) < 2)
      .sort((a, b) => rank(a) - rank(b));
    const challenge = challenges[0];
    if (challenge === undefined) {
      throw new NotImplemented(
        `Cannot authenticate to "${host}": no supported scheme in challenge "${header}"`,
      );
    }
    if (challenge.scheme === "basic") return await this.#handleBasic(host, options);

    const requestKey = options.request ?? response.url;
    const error = challenge.params["error"];
    if (error !== undefined) {
      const key = `${requestKey} ${error}`;
      if (this.#lastError.get(host) === key) return false;
      this.#lastError.set(host, key);
      this.#handlers.delete(host);
    } else {
      this.#lastError.delete(host);
    }
    const realmText = challenge.params["realm"];
    if (realmText === undefined || realmText === "") {
      throw new InvalidArgument(
        `Cannot authenticate to "${host}": Bearer challenge "${header}" has no realm`,
      );
    }
    let realm: URL;
    try {
      realm = new URL(realmText);
    } catch {
      throw new InvalidArgument(
        `Cannot authenticate to "${host}": Bearer realm "${realmText}" is not a URL`,
      );
    }
    const service = challenge.params["service"] ?? "";
    const challengeScope = (challenge.params["scope"] ?? "").split(" ").filter((s) => s !== "");
    let handler = this.#handlers.get(host);
    if (
      handler?.kind !== "bearer" || handler.realm.href !== realm.href ||
      handler.service !== service
    ) {
      handler = {
        kind: "bearer",
        realm,
        service,
        challenged: new Map(),
        lastScope: [],
        credentials: await this.#credentials?.(host),
        tokens: new Map(),
      };
      this.#handlers.set(host, handler);
    }
    const all = normalizeScope([...scope, ...challengeScope]);
    handler.challenged.set(normalizeScope(scope).join(" "), all);
    handler.lastScope = all;
    // A challenge while holding a token for this scope set means that token is no longer good.
    handler.tokens.delete(all.join(" "));
    await this.#token(host, handler, all, options.fetch ?? this.#fetch);
    return true;
  }

  async #handleBasic(host: string, options: HandleChallengeOptions): Promise<boolean> {
    const credentials = await this.#credentials?.(host);
    if (credentials === undefined || !("username" in credentials) || credentials.username === "") {
      return false;
    }
    const header = `Basic ${base64(`${credentials.username}:${credentials.password}`)}`;
    const existing = this.#handlers.get(host);
    if (existing?.kind === "basic" && existing.header === header) {
      // Challenged again: a rejection if the request carried these credentials; otherwise it
      // was sent (concurrently) before the handler existed and is retried with them.
      if (options.authorization === undefined || options.authorization === header) {
        throw rejected(host);
      }
      return true;
    }
    this.#handlers.set(host, { kind: "basic", header });
    return true;
  }

  #token(
    host: string,
    handler: BearerHandler,
    scope: string[],
    fetcher: typeof fetch,
  ): Promise<string> {
    const key = scope.join(" ");
    const cached = handler.tokens.get(key);
    if (cached !== undefined && cached.expiresAt > this.#now()) return cached.token;
    const entry: CachedToken = { token: Promise.resolve(""), expiresAt: Infinity };
    entry.token = this.#fetchToken(host, handler, scope, fetcher).then(
      ({ token, expiresIn }) => {
        entry.expiresAt = this.#now() + expiresIn * 1000;
        return token;
      },
      (err) => {
        if (handler.tokens.get(key) === entry) handler.tokens.delete(key);
        throw err;
      },
    );
    handler.tokens.set(key, entry);
    return entry.token;
  }

  async #fetchToken(
    host: string,
    handler: BearerHandler,
    scope: string[],
    fetcher: typeof fetch,
  ): Promise<{ token: string; expiresIn: number }> {
    const creds = handler.credentials;
    const username = creds !== undefined && "username" in creds ? creds.username : "";
    const secret = creds === undefined
      ? ""
      : "password" in creds
      ? creds.password
      : creds.identityToken;
    if (secret !== "") {
      const form = new URLSearchParams();
      form.set("scope", scope.join(" "));
      form.set("service", handler.service);
      form.set("client_id", "strata-client");
      if (username === "") {
        form.set("grant_type", "refresh_token");
        form.set("refresh_token", secret);
      } else {
        form.set("grant_type", "password");
        form.set("username", username);
        form.set("password", secret);
      }
      const response = await send(fetcher, host, handler.realm, {
        method: "POST",
        headers: { "Content-Type": "application/x-www-form-urlencoded; charset=utf-8" },
        body: form,
      });
      const s = response.status;
      const fallBack = s === 404 || s === 401 || s === 400 || (s === 405 && username !== "");
      if (!fallBack) return await readToken(host, handler.realm, response, "access_token");
      await response.body?.cancel();
    }
    const url = new URL(handler.realm);
    if (handler.service !== "") url.searchParams.set("service", handler.service);
    for (const s of scope) url.searchParams.append("scope", s);
    const headers = new Headers();
    if (secret !== "") headers.set("Authorization", `Basic ${base64(`${username}:${secret}`)}`);
    const response = await send(fetcher, host, url, { method: "GET", headers });
    return await readToken(host, handler.realm, response, "token");
  }
}

async function send(
  fetcher: typeof fetch,
  host: string,
  url: URL,
  init: RequestInit,
): Promise<Response> {
  try {
    return await fetcher(url, init);
  } catch (err) {
    // A cancelled request stays a cancellation.
    if (err instanceof DOMException && err.name === "AbortError") throw err;
    const why = err instanceof Error ? err.message : String(err);
    throw new Unavailable(
      `Cannot fetch a token for "${host}" from "${redact(url)}": ${why}`,
    );
  }
}

async function readToken(
  host: string,
  realm: URL,
  response: Response,
  field: "access_token" | "token",
): Promise<{ token: string; expiresIn: number }> {
  if (response.status === 401 || response.status === 403) {
    await response.body?.cancel();
    throw rejected(host);
  }
  if (!response.ok) {
    await response.body?.cancel();
    throw new Unavailable(
      `Cannot fetch a token for "${host}" from "${
        redact(realm)
      }": unexpected status ${response.status}`,
    );
  }
  let body: unknown;
  try {
    body = await response.json();
  } catch {
    throw new Unavailable(
      `Cannot fetch a token for "${host}" from "${redact(realm)}": the response is not JSON`,
    );
  }
  const record = typeof body === "object" && body !== null ? body as Record<string, unknown> : {};
  const access = record["access_token"];
  const plain = record["token"];
  const token = typeof access === "string" && access !== ""
    ? access
    : field === "token" && typeof plain === "string"
    ? plain
    : "";
  if (token === "") {
    throw new Unavailable(
      `Cannot fetch a token for "${host}" from "${
        redact(realm)
      }": the authorization server did not include a token`,
    );
  }
  const expires = record["expires_in"];
  const expiresIn = typeof expires === "number" && expires > 0
    ? expires
    : DEFAULT_EXPIRES_IN_SECONDS;
  return { token, expiresIn };
}

function rejected(host: string): FailedPrecondition {
  return new FailedPrecondition(
    `Cannot authenticate to "${host}": the registry rejected the credentials`,
  );
}

function normalizeScope(scope: string[]): string[] {
  return [...new Set(scope.filter((s) => s !== ""))].sort();
}

function redact(url: URL): string {
  return `${url.protocol}//${url.host}${url.pathname}`;
}

function base64(text: string): string {
  return btoa(String.fromCharCode(...new TextEncoder().encode(text)));
}
