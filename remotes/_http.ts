/**
 * The registry client's private HTTP machinery: per-host transports (TLS settings, skip-verify,
 * https→http fallback), one request with redirects, authorization and retries, the download
 * limiter, and the translation of registry answers into typed errors.
 *
 * @module
 */

import http from "node:http";
import https from "node:https";
import { isIP } from "node:net";
import nodeTls, { rootCertificates } from "node:tls";
import {
  FailedPrecondition,
  InvalidArgument,
  NotFound,
  NotImplemented,
  PermissionDenied,
  type StrataError,
  Unavailable,
} from "../errors.ts";
import { Authorizer } from "./auth.ts";
import type { RegistryHost } from "./hosts.ts";
import type { ResolverOptions } from "./types.ts";

/** Statuses answered by waiting and trying the same host again. */
export const RETRY_STATUSES: ReadonlySet<number> = new Set([408, 429, 500, 502, 503, 504]);
/** The longest delay a `Retry-After` header or the back-off may impose, in milliseconds. */
export const MAX_RETRY_DELAY_MS = 10_000;
const MAX_REDIRECTS = 10;
const MAX_ERROR_BODY = 64 * 1024;
const MAX_SUMMARY = 300;
const DEFAULT_USER_AGENT = "strata/0.1";
const CONNECTION_FAILURES = new WeakSet<Error>();
const TOO_LARGE = new WeakSet<Error>();

/** A request body, opened again for each attempt. */
export type BodySource = () => Uint8Array | ReadableStream<Uint8Array>;

/** What one HTTP exchange sends. */
export interface SendInit {
  /** The HTTP method. */
  method: string;
  /** The request headers. */
  headers: Headers;
  /** The body, opened for this exchange. */
  body?: BodySource;
  /** The body length, sent as `Content-Length` (streams go through node:http for that). */
  contentLength?: number;
  /** Cancels the exchange. */
  signal?: AbortSignal;
}

/** The connection failed before a response arrived (refused, reset, TLS failure, ...). */
export class ConnectionError extends Error {
  /** Always `"ConnectionError"`. */
  override readonly name: string = "ConnectionError";
  /** Whether the failure looks like TLS spoken to a plain HTTP server. */
  readonly tlsProtocol: boolean;
  /** Whether trying again may help (not for certificate verification failures). */
  readonly retryable: boolean;
  /** Whether the server ended the TLS handshake with an alert about the client certificate. */
  readonly clientCertRejected: boolean;

  /**
   * Makes the error from a reason already free of URLs and secrets.
   *
   * @param reason The short reason, e.g. `connection refused`.
   * @param tlsProtocol Whether a TLS record error caused it.
   * @param retryable Whether trying again may help.
   * @param clientCertRejected Whether the server refused the client certificate (or its absence).
   */
  constructor(reason: string, tlsProtocol: boolean, retryable = true, clientCertRejected = false) {
    super(reason);
    this.tlsProtocol = tlsProtocol;
    this.retryable = retryable;
    this.clientCertRejected = clientCertRejected;
  }
}

/**
 * Waits, or rejects with the signal's reason when it aborts first.
 *
 * @param ms The delay in milliseconds.
 * @param signal Cancels the wait.
 * @returns When the delay is over.
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, Math.max(0, ms));
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * The back-off before retry number `attempt` (1 for the first retry): `base * 2^(attempt-1)`, of
 * which a random half is kept ("equal jitter"), capped at {@linkcode MAX_RETRY_DELAY_MS}.
 *
 * @param attempt The retry number, from 1.
 * @param baseMs The first delay.
 * @returns The delay in milliseconds.
 */
export function backoffDelay(attempt: number, baseMs: number): number {
  const full = Math.min(baseMs * 2 ** Math.max(0, attempt - 1), MAX_RETRY_DELAY_MS);
  return full / 2 + Math.random() * (full / 2);
}

/**
 * Reads `Retry-After` (seconds or an HTTP date), capped at {@linkcode MAX_RETRY_DELAY_MS}.
 *
 * @param headers The response headers.
 * @returns The delay in milliseconds, or `undefined` when absent or malformed.
 */
export function retryAfterMs(headers: Headers): number | undefined {
  const value = headers.get("retry-after")?.trim();
  if (value === undefined || value === "") return undefined;
  let ms: number;
  if (/^\d+$/.test(value)) {
    ms = Number(value) * 1000;
  } else {
    const date = Date.parse(value);
    if (Number.isNaN(date)) return undefined;
    ms = date - Date.now();
  }
  return Math.min(Math.max(0, ms), MAX_RETRY_DELAY_MS);
}

/** Whether `err` is the rejection of an aborted signal. */
function aborted(signal: AbortSignal | undefined, err: unknown): boolean {
  return signal?.aborted === true && (err === signal.reason || isAbortError(err));
}

function isAbortError(err: unknown): boolean {
  return err instanceof DOMException && (err.name === "AbortError" || err.name === "TimeoutError");
}

const TLS_PROTOCOL_ERROR =
  /InvalidContentType|corrupt message|wrong version number|WRONG_VERSION_NUMBER|packet length too long|unknown protocol|record overflow/i;

/** The alerts a server sends when it refuses the client certificate, by normalised name. */
const CLIENT_CERT_ALERTS: Record<string, string> = {
  badcertificate: "bad certificate",
  certificaterequired: "certificate required",
  unknownca: "unknown CA",
  accessdenied: "access denied",
  unsupportedcertificate: "unsupported certificate",
  certificateunknown: "certificate unknown",
  certificateexpired: "certificate expired",
  certificaterevoked: "certificate revoked",
};

/** A received certificate alert: rustls's name, or node's `ERR_SSL_..._ALERT_...` code. */
const CLIENT_CERT_ALERT =
  /received fatal alert: (BadCertificate|CertificateRequired|UnknownCA|AccessDenied|UnsupportedCertificate|CertificateUnknown|CertificateExpired|CertificateRevoked)\b|ERR_SSL_(?:SSLV3|TLSV1|TLSV13)_ALERT_(BAD_CERTIFICATE|CERTIFICATE_REQUIRED|UNKNOWN_CA|ACCESS_DENIED|UNSUPPORTED_CERTIFICATE|CERTIFICATE_UNKNOWN|CERTIFICATE_EXPIRED|CERTIFICATE_REVOKED)\b/i;

/** Turns a fetch or node:http failure into a short reason without URLs. */
function describeConnectionError(err: unknown): ConnectionError {
  const messages: string[] = [];
  const codes: string[] = [];
  let cur: unknown = err;
  for (let depth = 0; cur !== undefined && cur !== null && depth < 8; depth++) {
    if (cur instanceof Error) {
      messages.push(cur.message);
      const code = (cur as { code?: unknown }).code;
      if (typeof code === "string") codes.push(code);
      cur = cur.cause;
    } else {
      messages.push(String(cur));
      break;
    }
  }
  const all = [...messages, ...codes].join(" | ");
  const tlsProtocol = TLS_PROTOCOL_ERROR.test(all);
  let reason: string;
  let retryable = true;
  const cert = /invalid peer certificate: ([^|]+)/.exec(all);
  const alert = CLIENT_CERT_ALERT.exec(all);
  if (/ECONNREFUSED|Connection refused/i.test(all)) reason = "connection refused";
  else if (alert !== null) {
    const name = (alert[1] ?? alert[2] ?? "").replace(/_/g, "").toLowerCase();
    return new ConnectionError(
      `TLS alert from the server: ${CLIENT_CERT_ALERTS[name] ?? name}`,
      false,
      false,
      true,
    );
  } else if (cert !== null) {
    reason = `invalid peer certificate: ${cert[1]?.trim()}`;
    retryable = false;
  } else if (/ECONNRESET|reset by peer|socket hang up/i.test(all)) reason = "connection reset";
  else if (/closed before message completed|connection closed/i.test(all)) {
    reason = "connection closed before the response";
  } else if (tlsProtocol) reason = "TLS handshake failed: the server does not speak TLS";
  else if (/certificate|self[- ]signed|UNABLE_TO_VERIFY|CERT_/i.test(all)) {
    reason = `TLS certificate verification failed: ${codes[0] ?? lastSegment(messages)}`;
    retryable = false;
  } else if (/ENOTFOUND|EAI_AGAIN|dns error|failed to lookup/i.test(all)) {
    reason = "the host name cannot be resolved";
  } else if (/timed out|ETIMEDOUT/i.test(all)) reason = "connection timed out";
  else reason = lastSegment(messages);
  return new ConnectionError(reason, tlsProtocol, retryable);
}

function lastSegment(messages: string[]): string {
  const text = messages[messages.length - 1] ?? "unknown error";
  const cleaned = text.replace(/\((?:[a-z]+:\/\/|\d)[^)]*\)/gi, "").replace(/\s+/g, " ");
  const parts = cleaned.split(": ").map((p) => p.trim()).filter((p) => p !== "");
  return truncate(redactSecrets(parts[parts.length - 1] ?? "unknown error"), 200);
}

function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 3)}...`;
}

/**
 * Removes anything that looks like a credential from a text meant for an error message.
 *
 * @param text The text.
 * @returns The text with `Basic`/`Bearer` payloads and `password=`/`token=` values replaced.
 */
export function redactSecrets(text: string): string {
  return text
    .replace(/\b(Basic|Bearer)\s+[A-Za-z0-9._~+/=-]+/gi, "$1 <redacted>")
    .replace(/\b((?:access_|refresh_)?token|password|secret)=([^&\s"]+)/gi, "$1=<redacted>");
}

/**
 * A URL as it may appear in messages: scheme, host and path, no query (upload state, tokens).
 *
 * @param url The URL.
 * @returns The URL without query and fragment.
 */
export function redactUrl(url: URL): string {
  return `${url.protocol}//${url.host}${url.pathname}`;
}

const NULL_BODY_STATUSES = new Set([101, 103, 204, 205, 304]);

interface CertPair {
  /** Where the certificate came from, for messages. */
  path: string;
  cert: string;
  key: string;
}

interface TlsMaterial {
  ca: string[];
  certs: CertPair[];
}

/** Sockets of node:http(s) agents whose connection (and TLS handshake) is established. */
const CONNECTED_SOCKETS = new WeakSet<object>();

/** The timer of a host's `dial_timeout`: aborts its signal unless cleared in time. */
class DialTimer {
  readonly signal: AbortSignal;
  readonly ms: number;
  #fired = false;
  #timer: ReturnType<typeof setTimeout>;

  constructor(ms: number, outer: AbortSignal | undefined) {
    const controller = new AbortController();
    this.ms = ms;
    this.#timer = setTimeout(() => {
      this.#fired = true;
      controller.abort(new DOMException("the dial timeout elapsed", "TimeoutError"));
    }, ms);
    this.signal = outer === undefined
      ? controller.signal
      : AbortSignal.any([outer, controller.signal]);
  }

  /** Whether the timeout elapsed before {@linkcode clear}. */
  get fired(): boolean {
    return this.#fired;
  }

  clear(): void {
    clearTimeout(this.#timer);
  }

  error(): ConnectionError {
    return new ConnectionError(`connection timed out after ${this.ms} ms (dial_timeout)`, false);
  }
}

/**
 * Talks to one registry endpoint with its TLS settings: Deno's fetch (with an HttpClient for
 * extra CAs and client certificates), or node:http(s) through keep-alive agents when certificate
 * verification is skipped (Deno's fetch cannot skip it per client), when a streamed body needs a
 * `Content-Length`, or when a request with a body goes to a host with a `dial_timeout`.
 *
 * Client certificates: Deno's TLS clients present one certificate chain per connection, so the
 * host's certificates are used one at a time, from the first. When the server refuses the
 * current one, the next ones are probed and the first the server answers is kept (see
 * `#sendWithCerts`); the server refused the handshake before reading the request, so the
 * request is sent again whatever its method.
 *
 * Connections of the node:http(s) path are kept alive in one agent per scheme (and client
 * certificate); {@linkcode Transport.close} destroys them.
 *
 * `dial_timeout`: a request without a body must get its response headers within the timeout
 * (connection, TLS handshake and the server's first answer; the body is not bounded). A request
 * with a body goes through node:http(s), where the timeout bounds the connection and TLS
 * handshake only, so a slow upload is not cut.
 */
export class Transport {
  #host: RegistryHost | undefined;
  #tls: Promise<TlsMaterial> | undefined;
  #certIndex = 0;
  #certConfirmed = false;
  #choosing: Promise<{ index?: number; refused: boolean; alert?: string }> | undefined;
  #client: Deno.HttpClient | undefined;
  #httpAgent: http.Agent | undefined;
  #httpsAgent: https.Agent | undefined;
  #retired: { close(): void }[] = [];
  #plainHttp = false;
  #closed = false;

  /**
   * Makes a transport for a host (or the default transport, without TLS settings).
   *
   * @param host The endpoint whose TLS settings apply.
   */
  constructor(host?: RegistryHost) {
    this.#host = host;
  }

  /**
   * Whether the host is reached over plain http after an https attempt failed at the TLS level.
   *
   * @returns `true` once the https→http fallback happened.
   */
  get usesPlainHttp(): boolean {
    return this.#plainHttp;
  }

  /**
   * Sends one request, without following redirects.
   *
   * @param url The URL.
   * @param init Method, headers, body and signal.
   * @returns The response (any status).
   * @throws {ConnectionError} When no response arrived.
   */
  async send(url: URL, init: SendInit): Promise<Response> {
    if (this.#closed) throw new ConnectionError("the resolver is closed", false, false);
    const host = this.#host;
    if (
      host?.httpFallback === true && !this.#plainHttp && url.protocol === "http:" &&
      url.host === host.host
    ) {
      const secure = new URL(url);
      secure.protocol = "https:";
      try {
        return await this.#sendWithCerts(secure, init);
      } catch (err) {
        if (!(err instanceof ConnectionError && err.tlsProtocol)) throw err;
        this.#plainHttp = true;
      }
    }
    return await this.#sendWithCerts(url, init);
  }

  /**
   * A `fetch` that sends through this transport (its TLS settings and `dial_timeout`) and follows
   * up to 10 redirects with it, dropping `Authorization` when the host changes; used for token
   * servers, which containerd also reaches with the challenged host's HTTP client.
   *
   * @param signal Cancels the requests made with it.
   * @returns The fetch function.
   */
  fetcher(signal?: AbortSignal): typeof fetch {
    return async (input: RequestInfo | URL, options?: RequestInit): Promise<Response> => {
      const request = new Request(input, options);
      let url = new URL(request.url);
      let method = request.method;
      const headers = new Headers(request.headers);
      let bytes: Uint8Array | undefined = request.body === null
        ? undefined
        : new Uint8Array(await request.arrayBuffer());
      const abort = options?.signal ?? signal;
      for (let hop = 0;; hop++) {
        const init: SendInit = { method, headers };
        if (bytes !== undefined) {
          const body = bytes;
          init.body = () => body;
        }
        if (abort !== undefined && abort !== null) init.signal = abort;
        const response = await this.send(url, init);
        const location = response.headers.get("location");
        if (![301, 302, 303, 307, 308].includes(response.status) || location === null) {
          return response;
        }
        await response.body?.cancel();
        if (hop >= MAX_REDIRECTS) throw new ConnectionError("too many redirects", false, false);
        const next = new URL(location, url);
        if (next.protocol !== "http:" && next.protocol !== "https:") {
          throw new ConnectionError("redirect to an unsupported scheme", false, false);
        }
        if (response.status === 303 || (response.status <= 302 && method === "POST")) {
          method = method === "HEAD" ? "HEAD" : "GET";
          bytes = undefined;
          headers.delete("content-type");
        }
        if (next.host !== url.host) headers.delete("authorization");
        url = next;
      }
    };
  }

  /** Closes the HttpClient and the agents' connections. */
  close(): void {
    this.#closed = true;
    this.#client?.close();
    this.#client = undefined;
    this.#httpAgent?.destroy();
    this.#httpAgent = undefined;
    this.#httpsAgent?.destroy();
    this.#httpsAgent = undefined;
    for (const old of this.#retired.splice(0)) old.close();
  }

  /**
   * Sends, choosing among the client certificates when the server refuses one: after a
   * certificate alert, or a dropped connection before any response came with the current
   * certificate (with TLS 1.3 the alert often arrives after the request was written, and the
   * HTTP client reports only the closed connection), each certificate from the current one on is
   * tried in a TLS handshake of its own (see {@linkcode probeCertificate}); the first one the
   * server answers is kept and the request is sent again.
   */
  async #sendWithCerts(url: URL, init: SendInit): Promise<Response> {
    for (;;) {
      const used = this.#certIndex;
      try {
        const response = await this.#sendOnce(url, init);
        if (url.protocol === "https:" && used === this.#certIndex) this.#certConfirmed = true;
        return response;
      } catch (err) {
        if (!(err instanceof ConnectionError) || url.protocol !== "https:") throw err;
        const dropped = !this.#certConfirmed && err.retryable && !err.tlsProtocol &&
          /reset|closed|broken pipe/i.test(err.message);
        if (!err.clientCertRejected && !dropped) throw err;
        const tls = await this.#material();
        if (this.#closed || (tls.certs.length === 0 && !err.clientCertRejected)) throw err;
        if (used !== this.#certIndex) continue; // another request moved on meanwhile
        this.#choosing ??= this.#chooseCert(url, tls, used).finally(() => {
          this.#choosing = undefined;
        });
        const choice = await this.#choosing;
        if (choice.index !== undefined) {
          this.#certConfirmed = true;
          if (choice.index === used) throw err; // the certificate is fine: another failure
          if (this.#certIndex === used) this.#useCert(choice.index);
          continue;
        }
        if (!choice.refused && !err.clientCertRejected) throw err;
        const which = tls.certs.length === 0
          ? "the connection without a client certificate"
          : tls.certs.length === 1
          ? `the client certificate "${tls.certs[0]?.path}"`
          : `each of the ${tls.certs.length} client certificates`;
        const alert = choice.alert ?? err.message;
        throw new ConnectionError(`the server refused ${which} (${alert})`, false, false);
      }
    }
  }

  /** Probes the certificates from `from` on: the first the server answers, or the last alert. */
  async #chooseCert(
    url: URL,
    tls: TlsMaterial,
    from: number,
  ): Promise<{ index?: number; refused: boolean; alert?: string }> {
    let alert: string | undefined;
    const skipVerify = this.#host?.skipVerify === true;
    const timeoutMs = this.#host?.dialTimeoutMs || PROBE_TIMEOUT_MS;
    for (let i = from; i < Math.max(tls.certs.length, 1); i++) {
      if (this.#closed) break;
      const result = await probeCertificate(url, {
        ca: tls.ca,
        pair: tls.certs[i],
        skipVerify,
        timeoutMs,
      });
      if (result.accepted) return { index: i, refused: false };
      if (result.alert !== undefined) alert = result.alert;
      else if (i === from) return { refused: false }; // the host is not reachable at all
    }
    const result: { refused: boolean; alert?: string } = { refused: alert !== undefined };
    if (alert !== undefined) result.alert = alert;
    return result;
  }

  #useCert(index: number): void {
    this.#certIndex = index;
    if (this.#client !== undefined) this.#retired.push(this.#client);
    const agent = this.#httpsAgent;
    if (agent !== undefined) this.#retired.push({ close: () => agent.destroy() });
    this.#client = undefined;
    this.#httpsAgent = undefined;
  }

  async #sendOnce(url: URL, init: SendInit): Promise<Response> {
    const secure = url.protocol === "https:";
    const tls = secure ? await this.#material() : { ca: [], certs: [] };
    if (this.#closed) throw new ConnectionError("the resolver is closed", false, false);
    const body = init.body?.();
    const dialMs = this.#host?.dialTimeoutMs;
    const timer = dialMs !== undefined && dialMs > 0
      ? new DialTimer(dialMs, init.signal)
      : undefined;
    const streamed = body !== undefined && !(body instanceof Uint8Array);
    const skipVerify = secure && this.#host?.skipVerify === true;
    try {
      if (
        skipVerify || (streamed && init.contentLength !== undefined) ||
        (timer !== undefined && body !== undefined)
      ) {
        const agent = this.#agent(secure, tls, skipVerify);
        const sendInit = timer === undefined ? init : { ...init, signal: timer.signal };
        // With a body, the dial timeout only bounds the connection (see the class notes).
        const connected = timer !== undefined && body !== undefined
          ? () => timer.clear()
          : undefined;
        return await nodeSend(url, sendInit, body, { agent, connected });
      }
      const request: RequestInit & { client?: Deno.HttpClient } = {
        method: init.method,
        headers: init.headers,
        redirect: "manual",
      };
      if (body !== undefined) request.body = body as BodyInit;
      const signal = timer?.signal ?? init.signal;
      if (signal !== undefined) request.signal = signal;
      const client = secure ? this.#httpClient(tls) : undefined;
      if (client !== undefined) request.client = client;
      try {
        return await fetch(url, request);
      } catch (err) {
        if (init.signal?.aborted === true) throw init.signal.reason;
        if (aborted(signal, err)) throw err;
        throw describeConnectionError(err);
      }
    } catch (err) {
      if (timer?.fired === true && init.signal?.aborted !== true) throw timer.error();
      throw err;
    } finally {
      timer?.clear();
    }
  }

  #material(): Promise<TlsMaterial> {
    this.#tls ??= loadTls(this.#host);
    return this.#tls;
  }

  #httpClient(tls: TlsMaterial): Deno.HttpClient | undefined {
    const pair = tls.certs[this.#certIndex];
    if (tls.ca.length === 0 && pair === undefined) return undefined;
    if (this.#client === undefined) {
      const options: Deno.CreateHttpClientOptions & Partial<Deno.TlsCertifiedKeyPem> = {};
      if (tls.ca.length > 0) options.caCerts = tls.ca;
      if (pair !== undefined) {
        options.cert = pair.cert;
        options.key = pair.key;
      }
      this.#client = Deno.createHttpClient(options as Deno.CreateHttpClientOptions);
    }
    return this.#client;
  }

  /** The keep-alive agent of a scheme, made with the TLS settings and the current certificate. */
  #agent(secure: boolean, tls: TlsMaterial, skipVerify: boolean): http.Agent {
    if (!secure) {
      this.#httpAgent ??= new http.Agent({ keepAlive: true });
      return this.#httpAgent;
    }
    if (this.#httpsAgent === undefined) {
      const options: https.AgentOptions = { keepAlive: true, rejectUnauthorized: !skipVerify };
      if (tls.ca.length > 0) options.ca = [...rootCertificates, ...tls.ca];
      const pair = tls.certs[this.#certIndex];
      if (pair !== undefined) {
        options.cert = pair.cert;
        options.key = pair.key;
      }
      this.#httpsAgent = new https.Agent(options);
    }
    return this.#httpsAgent;
  }
}

async function readPem(path: string, what: string, host: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (err) {
    const why = err instanceof Deno.errors.NotFound ? "no such file" : (err as Error).message;
    throw new InvalidArgument(`Cannot read ${what} "${path}" for host "${host}": ${why}`);
  }
}

async function loadTls(host: RegistryHost | undefined): Promise<TlsMaterial> {
  if (host === undefined) return { ca: [], certs: [] };
  const ca: string[] = [];
  for (const file of host.caFiles) ca.push(await readPem(file, "CA certificate", host.host));
  const certs: CertPair[] = [];
  for (const pair of host.clientCerts) {
    const cert = await readPem(pair.cert, "client certificate", host.host);
    // Without a key file the key is expected inside the certificate file.
    const key = pair.key === undefined ? cert : await readPem(pair.key, "client key", host.host);
    certs.push({ path: pair.cert, cert, key });
  }
  return { ca, certs };
}

const PROBE_TIMEOUT_MS = 10_000;

/**
 * Whether a server takes a client certificate: a TLS handshake of its own with it (node:tls),
 * then `HEAD /v2/`; an HTTP answer means yes, a certificate alert means no.
 *
 * @returns `accepted`, and the alert's text when the server sent a certificate alert.
 */
function probeCertificate(
  url: URL,
  options: { ca: string[]; pair: CertPair | undefined; skipVerify: boolean; timeoutMs: number },
): Promise<{ accepted: boolean; alert?: string }> {
  const hostname = url.hostname.replace(/^\[|\]$/g, "");
  const connect: nodeTls.ConnectionOptions = {
    host: hostname,
    port: Number(url.port || 443),
    rejectUnauthorized: !options.skipVerify,
  };
  if (!isIP(hostname)) connect.servername = hostname;
  if (options.ca.length > 0) connect.ca = [...rootCertificates, ...options.ca];
  if (options.pair !== undefined) {
    connect.cert = options.pair.cert;
    connect.key = options.pair.key;
  }
  return new Promise((resolve) => {
    let done = false;
    const finish = (result: { accepted: boolean; alert?: string }): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => finish({ accepted: false }), options.timeoutMs);
    const socket = nodeTls.connect(connect, () => {
      socket.write(`HEAD /v2/ HTTP/1.1\r\nHost: ${url.host}\r\nConnection: close\r\n\r\n`);
    });
    let head = "";
    socket.on("data", (chunk: Uint8Array) => {
      head += new TextDecoder().decode(chunk);
      if (head.length >= 5) finish({ accepted: head.startsWith("HTTP/") });
    });
    socket.on("error", (err: Error) => {
      const described = describeConnectionError(err);
      finish(
        described.clientCertRejected
          ? { accepted: false, alert: described.message }
          : { accepted: false },
      );
    });
    socket.on("close", () => finish({ accepted: false }));
  });
}

interface NodeSendOptions {
  /** The keep-alive agent, holding the TLS settings. */
  agent: http.Agent;
  /** Called once the connection (and TLS handshake) is ready for the request. */
  connected: (() => void) | undefined;
}

/** One exchange through node:http(s), turned into a fetch `Response`. */
function nodeSend(
  url: URL,
  init: SendInit,
  body: Uint8Array | ReadableStream<Uint8Array> | undefined,
  via: NodeSendOptions,
): Promise<Response> {
  const secure = url.protocol === "https:";
  const headers: Record<string, string> = {};
  init.headers.forEach((value, name) => {
    headers[name] = value;
  });
  if (body !== undefined) {
    headers["content-length"] = String(
      body instanceof Uint8Array ? body.length : init.contentLength ?? 0,
    );
  }
  const options: https.RequestOptions = {
    method: init.method,
    headers,
    agent: via.agent,
  };
  const signal = init.signal;
  return new Promise<Response>((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    let settled = false;
    const fail = (err: unknown): void => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener("abort", onAbort);
      reject(signal?.aborted ? signal.reason : describeConnectionError(err));
    };
    const onAbort = (): void => {
      req.destroy();
      fail(signal?.reason);
    };
    const req = (secure ? https : http).request(url, options, (res) => {
      if (settled) {
        res.destroy();
        return;
      }
      settled = true;
      const responseHeaders = new Headers();
      const raw = res.rawHeaders;
      for (let i = 0; i + 1 < raw.length; i += 2) {
        responseHeaders.append(raw[i] as string, raw[i + 1] as string);
      }
      const status = res.statusCode ?? 502;
      let stream: ReadableStream<Uint8Array> | null = null;
      const answer = (): void =>
        resolve(
          new Response(stream, {
            status,
            statusText: res.statusMessage ?? "",
            headers: responseHeaders,
          }),
        );
      if (init.method === "HEAD" || NULL_BODY_STATUSES.has(status)) {
        signal?.removeEventListener("abort", onAbort);
        // Answered once the agent has the socket back, so the next request can reuse it.
        res.once("end", () => setImmediate(answer));
        res.once("close", () => setImmediate(answer));
        res.resume();
        return;
      } else {
        let ended = false;
        stream = new ReadableStream<Uint8Array>({
          start(controller) {
            res.on("data", (chunk: Uint8Array) => {
              if (ended) return;
              controller.enqueue(new Uint8Array(chunk));
              if ((controller.desiredSize ?? 1) <= 0) res.pause();
            });
            res.on("end", () => {
              if (ended) return;
              ended = true;
              signal?.removeEventListener("abort", onAbort);
              // Closed once the agent has the socket back, so the next request can reuse it.
              setImmediate(() => controller.close());
            });
            res.on("error", (err: Error) => {
              if (ended) return;
              ended = true;
              controller.error(
                signal?.aborted ? signal.reason : new TypeError(
                  `error reading a body from connection: ${describeConnectionError(err).message}`,
                ),
              );
            });
            res.on("close", () => {
              if (ended) return;
              ended = true;
              controller.error(
                signal?.aborted
                  ? signal.reason
                  : new TypeError("error reading a body from connection: connection closed"),
              );
            });
          },
          pull() {
            res.resume();
          },
          cancel() {
            ended = true;
            signal?.removeEventListener("abort", onAbort);
            res.destroy();
          },
        }, { highWaterMark: 4 });
      }
      answer();
    });
    req.on("error", fail);
    req.once("socket", (socket) => {
      if (CONNECTED_SOCKETS.has(socket)) {
        via.connected?.();
        return;
      }
      socket.once(secure ? "secureConnect" : "connect", () => {
        CONNECTED_SOCKETS.add(socket);
        via.connected?.();
      });
    });
    signal?.addEventListener("abort", onAbort, { once: true });
    if (body === undefined) {
      req.end();
    } else if (body instanceof Uint8Array) {
      req.end(body);
    } else {
      const reader = body.getReader();
      req.once("close", () => reader.cancel().catch(() => undefined));
      pumpBody(req, reader).catch((err) => {
        reader.cancel().catch(() => undefined);
        req.destroy();
        if (settled || err instanceof ConnectionError) return;
        // The body source failed (e.g. wrong length): report that, not a connection error.
        settled = true;
        signal?.removeEventListener("abort", onAbort);
        reject(signal?.aborted ? signal.reason : err);
      });
    }
  });
}

async function pumpBody(
  req: http.ClientRequest,
  reader: ReadableStreamDefaultReader<Uint8Array>,
): Promise<void> {
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (req.destroyed) throw new ConnectionError("the request was closed", false);
    if (!req.write(value)) {
      await new Promise<void>((resolve, reject) => {
        const cleanup = (): void => {
          req.off("drain", onDrain);
          req.off("error", onEnd);
          req.off("close", onEnd);
        };
        const onDrain = (): void => {
          cleanup();
          resolve();
        };
        const onEnd = (): void => {
          cleanup();
          reject(new ConnectionError("the request was closed", false));
        };
        req.once("drain", onDrain);
        req.once("error", onEnd);
        req.once("close", onEnd);
      });
    }
  }
  req.end();
}

/**
 * A counting semaphore: at most `limit` holders at once, released in FIFO order.
 */
export class Limiter {
  #free: number;
  #waiters: (() => void)[] = [];

  /**
   * Makes a limiter with `limit` permits.
   *
   * @param limit The number of permits (at least 1).
   */
  constructor(limit: number) {
    this.#free = Math.max(1, Math.floor(limit));
  }

  /**
   * Waits for a permit.
   *
   * @param signal Stops waiting (rejects with its reason).
   * @returns An idempotent function that gives the permit back.
   */
  acquire(signal?: AbortSignal): Promise<() => void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    const make = (): () => void => {
      let released = false;
      return () => {
        if (released) return;
        released = true;
        const next = this.#waiters.shift();
        if (next !== undefined) next();
        else this.#free++;
      };
    };
    if (this.#free > 0) {
      this.#free--;
      return Promise.resolve(make());
    }
    return new Promise((resolve, reject) => {
      const grant = (): void => {
        signal?.removeEventListener("abort", onAbort);
        resolve(make());
      };
      const onAbort = (): void => {
        const i = this.#waiters.indexOf(grant);
        if (i >= 0) this.#waiters.splice(i, 1);
        reject(signal?.reason);
      };
      this.#waiters.push(grant);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }
}

/** One request to a registry host. */
export interface RequestSpec {
  /** The endpoint (its headers, TLS settings and authorization key). */
  host: RegistryHost;
  /** The full URL. */
  url: URL;
  /** The HTTP method. */
  method: string;
  /** Request-specific headers (Accept, Range, Content-Type, ...). */
  headers?: Record<string, string>;
  /** The body, opened again for each attempt. */
  body?: BodySource;
  /** The body length, for streamed bodies. */
  contentLength?: number;
  /** The token scopes the request needs. */
  scope: string[];
  /** The start of error messages, e.g. `Cannot resolve "host/repo:tag"`. */
  action: string;
  /** Retry a `HEAD` answered with 405 as a `GET`. */
  headToGet?: boolean;
  /** Cancels the request. */
  signal?: AbortSignal;
}

/** What {@linkcode Session.request} got. */
export interface RequestResult {
  /** The final response (after redirects and retries). */
  response: Response;
  /** The method of the final request (`GET` after a 405 to `HEAD`). */
  method: string;
  /** The URL of the final response. */
  url: URL;
  /** How many attempts were made. */
  attempts: number;
}

/**
 * The state a resolver shares between its requests: options, one authorizer, transports per TLS
 * configuration, the download limiter and the host lists.
 */
export class Session {
  /** The resolver's options. */
  readonly options: ResolverOptions;
  /** The authorizer of every request. */
  readonly authorizer: Authorizer;
  /** The download limiter. */
  readonly limiter: Limiter;
  #transports = new Map<string, Transport>();
  #default = new Transport();
  #closed = false;

  /**
   * Makes a session from resolver options.
   *
   * @param options The resolver's options.
   */
  constructor(options: ResolverOptions) {
    this.options = options;
    const authOptions: ConstructorParameters<typeof Authorizer>[0] = {};
    if (options.credentials !== undefined) authOptions.credentials = options.credentials;
    this.authorizer = new Authorizer(authOptions);
    this.limiter = new Limiter(options.maxConcurrentDownloads ?? 3);
  }

  /** Attempts per host and request. */
  get maxAttempts(): number {
    return Math.max(1, Math.floor(this.options.maxAttempts ?? 5));
  }

  /** The first retry delay. */
  get retryDelayMs(): number {
    return Math.max(0, this.options.retryDelayMs ?? 200);
  }

  /**
   * Combines the resolver's signal with a call's signal.
   *
   * @param signal The call's signal.
   * @returns A signal aborted when either is.
   */
  signal(signal?: AbortSignal): AbortSignal | undefined {
    const base = this.options.signal;
    if (base === undefined) return signal;
    if (signal === undefined) return base;
    return AbortSignal.any([base, signal]);
  }

  /**
   * The transport for an endpoint (shared by endpoints with the same host and TLS settings).
   *
   * @param host The endpoint.
   * @returns Its transport.
   */
  transport(host: RegistryHost): Transport {
    const key = JSON.stringify([
      host.host,
      host.skipVerify,
      host.caFiles,
      host.clientCerts,
      host.httpFallback,
    ]);
    let transport = this.#transports.get(key);
    if (transport === undefined) {
      transport = new Transport(host);
      if (this.#closed) transport.close();
      this.#transports.set(key, transport);
    }
    return transport;
  }

  /** Closes every transport. */
  close(): void {
    this.#closed = true;
    for (const transport of this.#transports.values()) transport.close();
    this.#default.close();
  }

  /**
   * Sends a request: host and resolver headers, `User-Agent`, authorization (one challenge
   * answered), redirects (authorization re-applied per target host), `405` to `HEAD` turned into
   * `GET`, and retries with back-off on 408, 429, 500, 502, 503, 504 and connection errors.
   *
   * @param spec The request.
   * @returns The final response, whatever its status; retryable statuses are returned after the
   *   last attempt.
   * @throws {PermissionDenied} When authorization fails.
   * @throws {Unavailable} When every attempt failed to connect.
   */
  async request(spec: RequestSpec): Promise<RequestResult> {
    const signal = this.signal(spec.signal);
    let method = spec.method;
    let attempts = 0;
    let authRetries = 0;
    for (;;) {
      attempts++;
      const headers = this.#headers(spec);
      await this.#authorize(spec, spec.url.host, headers, signal);
      let result: { response: Response; url: URL };
      try {
        result = await this.#sendFollowing(spec, method, headers, signal);
      } catch (err) {
        if (!(err instanceof ConnectionError)) throw err;
        if (attempts >= this.maxAttempts || !err.retryable) {
          const failure = new Unavailable(
            `${spec.action}: cannot reach "${spec.host.host}": ${err.message}${
              attempts > 1 ? ` (${attempts} attempts)` : ""
            }`,
          );
          CONNECTION_FAILURES.add(failure);
          throw failure;
        }
        await sleep(backoffDelay(attempts, this.retryDelayMs), signal);
        continue;
      }
      const { response, url } = result;
      const status = response.status;
      if (status === 401) {
        await response.body?.cancel();
        if (authRetries >= 2) {
          throw authFailed(spec, `"${spec.url.host}" refused the authorization`);
        }
        authRetries++;
        attempts--;
        let handled: boolean;
        try {
          handled = await this.authorizer.handleChallenge(spec.url.host, response, spec.scope, {
            request: `${method} ${url.href}`,
            authorization: headers.get("authorization"),
            fetch: this.#tokenFetch(spec, signal),
          });
        } catch (err) {
          throw translateAuthError(spec, err);
        }
        if (!handled) {
          throw authFailed(
            spec,
            authRetries > 1
              ? `"${spec.url.host}" refused the authorization`
              : `"${spec.url.host}" requires authentication and there are no credentials for it`,
          );
        }
        continue;
      }
      if (status === 405 && method === "HEAD" && spec.headToGet === true) {
        await response.body?.cancel();
        method = "GET";
        attempts--;
        continue;
      }
      if (RETRY_STATUSES.has(status) && attempts < this.maxAttempts) {
        const wait = retryAfterMs(response.headers) ?? backoffDelay(attempts, this.retryDelayMs);
        await response.body?.cancel();
        await sleep(wait, signal);
        continue;
      }
      return { response, method, url, attempts };
    }
  }

  #headers(spec: RequestSpec): Headers {
    const headers = new Headers();
    for (const [name, values] of Object.entries(spec.host.headers)) {
      for (const value of values) headers.append(name, value);
    }
    for (const [name, value] of Object.entries(this.options.headers ?? {})) {
      headers.set(name, value);
    }
    if (!headers.has("user-agent")) {
      headers.set("User-Agent", this.options.userAgent ?? DEFAULT_USER_AGENT);
    }
    for (const [name, value] of Object.entries(spec.headers ?? {})) {
      // A caller-supplied Accept wins over the request's default one.
      if (name.toLowerCase() === "accept" && headers.has("accept")) continue;
      headers.set(name, value);
    }
    return headers;
  }

  /** Token requests go through the transport of the challenged endpoint, as in containerd. */
  #tokenFetch(spec: RequestSpec, signal: AbortSignal | undefined): typeof fetch {
    return this.transport(spec.host).fetcher(signal);
  }

  async #authorize(
    spec: RequestSpec,
    host: string,
    headers: Headers,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    headers.delete("authorization");
    try {
      await this.authorizer.authorize(host, headers, {
        scope: spec.scope,
        fetch: this.#tokenFetch(spec, signal),
      });
    } catch (err) {
      throw translateAuthError(spec, err);
    }
  }

  async #sendFollowing(
    spec: RequestSpec,
    firstMethod: string,
    headers: Headers,
    signal: AbortSignal | undefined,
  ): Promise<{ response: Response; url: URL }> {
    let url = spec.url;
    let method = firstMethod;
    let body = spec.body;
    for (let hop = 0;; hop++) {
      const sameHost = url.host === spec.host.host;
      const transport = sameHost ? this.transport(spec.host) : this.#default;
      const init: SendInit = { method, headers };
      if (body !== undefined) init.body = body;
      if (spec.contentLength !== undefined) init.contentLength = spec.contentLength;
      if (signal !== undefined) init.signal = signal;
      const response = await transport.send(url, init);
      const location = response.headers.get("location");
      if (![301, 302, 303, 307, 308].includes(response.status) || location === null) {
        return { response, url };
      }
      await response.body?.cancel();
      if (hop >= MAX_REDIRECTS) {
        throw new Unavailable(`${spec.action}: more than ${MAX_REDIRECTS} redirects`);
      }
      const next = new URL(location, url);
      if (next.protocol !== "http:" && next.protocol !== "https:") {
        throw new Unavailable(
          `${spec.action}: redirect to unsupported scheme "${next.protocol.slice(0, -1)}"`,
        );
      }
      if (
        response.status === 303 || ((response.status === 301 || response.status === 302) &&
          method === "POST")
      ) {
        method = method === "HEAD" ? "HEAD" : "GET";
        body = undefined;
        headers.delete("content-type");
      }
      url = next;
      await this.#authorize(spec, url.host, headers, signal);
    }
  }
}

function translateAuthError(spec: RequestSpec, err: unknown): Error {
  if (err instanceof FailedPrecondition) {
    return authFailed(spec, redactSecrets(err.message.replace(/^Cannot authenticate to /, "")));
  }
  if (err instanceof Unavailable || err instanceof InvalidArgument) {
    const Kind = err instanceof Unavailable ? Unavailable : InvalidArgument;
    const message = redactSecrets(err.message).replace(/^Cannot /, "cannot ");
    return new Kind(`${spec.action}: ${message}`);
  }
  if (err instanceof NotImplemented) {
    return authFailed(spec, redactSecrets(err.message.replace(/^Cannot authenticate to /, "")));
  }
  return err instanceof Error ? err : new Error(String(err));
}

function authFailed(spec: RequestSpec, reason: string): PermissionDenied {
  return new PermissionDenied(`${spec.action}: authorization failed (${reason})`);
}

/**
 * Reads up to 64 KiB of an error body and summarises registry errors
 * (`{"errors":[{"code","message"}]}`) as `CODE: message; ...`, bounded and without secrets.
 *
 * @param response The error response (its body is consumed or cancelled).
 * @returns The summary, or `""` when the body says nothing useful.
 */
export async function errorSummary(response: Response): Promise<string> {
  const body = response.body;
  if (body === null) return "";
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = body.getReader();
  try {
    while (size < MAX_ERROR_BODY) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.length;
    }
  } catch {
    // A broken error body says nothing more.
  } finally {
    await reader.cancel().catch(() => undefined);
  }
  const bytes = new Uint8Array(Math.min(size, MAX_ERROR_BODY));
  let pos = 0;
  for (const chunk of chunks) {
    const take = Math.min(chunk.length, bytes.length - pos);
    bytes.set(chunk.subarray(0, take), pos);
    pos += take;
  }
  const text = new TextDecoder().decode(bytes).trim();
  if (text === "") return "";
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    // deno-lint-ignore no-control-regex
    const plain = text.replace(/<[^>]*>/g, " ").replace(/[\x00-\x1f\x7f\s]+/g, " ").trim();
    return truncate(redactSecrets(plain), MAX_SUMMARY);
  }
  const errors = typeof parsed === "object" && parsed !== null
    ? (parsed as { errors?: unknown }).errors
    : undefined;
  if (!Array.isArray(errors)) return "";
  const parts = errors.map((e) => {
    const record = typeof e === "object" && e !== null ? e as Record<string, unknown> : {};
    const code = typeof record.code === "string" ? record.code : "";
    const message = typeof record.message === "string" ? record.message : "";
    return [code, message].filter((s) => s !== "").join(": ");
  }).filter((s) => s !== "");
  return truncate(redactSecrets(parts.join("; ")), MAX_SUMMARY);
}

/**
 * Turns an unsuccessful registry answer into a typed error: 401/403 → PermissionDenied, 404 →
 * NotFound, 400/411/413/414/415/422 → InvalidArgument, 405/501 → NotImplemented, 408/429/5xx →
 * Unavailable, any other → FailedPrecondition.
 *
 * @param spec The request (its action and host).
 * @param result The final response and attempt count.
 * @param notFound The text of a 404, e.g. `not found`.
 * @returns The error (the body has been read or cancelled).
 */
export async function statusError(
  spec: RequestSpec,
  result: RequestResult,
  notFound = "not found",
): Promise<StrataError> {
  const { response, attempts } = result;
  const status = response.status;
  const summary = await errorSummary(response);
  const detail = summary === "" ? "" : ` (${summary})`;
  const where = `"${spec.host.host}"`;
  if (status === 404) return new NotFound(`${spec.action}: ${notFound} at ${where}${detail}`);
  if (status === 401) {
    return new PermissionDenied(`${spec.action}: authorization failed${detail}`);
  }
  if (status === 403) {
    return new PermissionDenied(`${spec.action}: access denied by ${where}${detail}`);
  }
  const answered = `${where} answered ${status}${
    response.statusText === "" ? "" : ` ${response.statusText}`
  }${detail}${attempts > 1 ? ` after ${attempts} attempts` : ""}`;
  if (RETRY_STATUSES.has(status) || status >= 500 && status !== 501) {
    return new Unavailable(`${spec.action}: ${answered}`);
  }
  if ([400, 411, 413, 414, 415, 422].includes(status)) {
    return new InvalidArgument(`${spec.action}: ${answered}`);
  }
  if (status === 405 || status === 501) return new NotImplemented(`${spec.action}: ${answered}`);
  return new FailedPrecondition(`${spec.action}: ${answered}`);
}

/**
 * Ranks a failed attempt on one host, as containerd's resolver does: connection errors 1, 404 2,
 * other error statuses 3, oversized manifests 4; the highest is reported when every host failed.
 *
 * @param err The error.
 * @returns The priority.
 */
export function errorPriority(err: unknown): number {
  if (err instanceof NotFound) return TOO_LARGE.has(err) ? 4 : 2;
  if (err instanceof Error && CONNECTION_FAILURES.has(err)) return 1;
  return 3;
}

/**
 * Marks an error as an oversized manifest (priority 4 in {@linkcode errorPriority}).
 *
 * @param err The error.
 * @returns The same error.
 */
export function markTooLarge(err: NotFound): NotFound {
  TOO_LARGE.add(err);
  return err;
}

/**
 * Marks an error as a failure to connect (priority 1 in {@linkcode errorPriority}).
 *
 * @param err The error.
 * @returns The same error.
 */
export function markConnectionFailure<E extends Error>(err: E): E {
  CONNECTION_FAILURES.add(err);
  return err;
}
