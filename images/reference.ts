/**
 * Image references in two grammars:
 *
 * - Docker references as in `github.com/distribution/reference`: a strict parser
 *   ({@linkcode parseReference}), Docker Hub normalisation ({@linkcode parseNormalizedReference},
 *   {@linkcode normalizeReference}) and the familiar short form ({@linkcode familiarReference}).
 * - containerd's remote references (`pkg/reference`): `host[/path][:object]`, where the object is
 *   a tag, `tag@digest` or `@digest` ({@linkcode parseRemoteReference}).
 *
 * @module
 */

import { InvalidArgument } from "../errors.ts";
import { parseDigest } from "./digest.ts";

/** A parsed Docker image reference: `[domain/]path[:tag][@digest]`. */
export interface Reference {
  /** The registry host with optional port, such as `docker.io`; empty when the input had none. */
  domain: string;
  /** The repository path, such as `library/alpine`. */
  path: string;
  /** The tag, such as `3.20`. */
  tag?: string;
  /** The digest, such as `sha256:...`. */
  digest?: string;
}

/** A containerd remote reference: a locator (`host/path`) and an object (tag and/or digest). */
export interface RemoteReference {
  /** The host and path, such as `docker.io/library/redis`. */
  locator: string;
  /** The tag, `tag@digest`, `@digest`, or empty. */
  object: string;
}

/** The longest repository path (without the domain) distribution accepts. */
const MAX_PATH_LENGTH = 255;
const DEFAULT_DOMAIN = "docker.io";
const LEGACY_DEFAULT_DOMAIN = "index.docker.io";
const OFFICIAL_PREFIX = "library/";
const DEFAULT_TAG = "latest";

const PATH_COMPONENT = "[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
const PATH_RE = new RegExp(`^${PATH_COMPONENT}(?:/${PATH_COMPONENT})*$`);
const DOMAIN_COMPONENT = "[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?";
const DOMAIN_RE = new RegExp(
  `^(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|\\[[a-fA-F0-9:]+\\])(?::[0-9]+)?$`,
);
const TAG_RE = /^\w[\w.-]{0,127}$/;
const DIGEST_RE = /^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{32,}$/;
const HEX64_RE = /^[a-f0-9]{64}$/;

interface Split {
  name: string;
  tag: string | undefined;
  digest: string | undefined;
}

/** Splits `name[:tag][@digest]`; the tag is after the last `:` that no `/` follows. */
function split(s: string): Split {
  let rest = s;
  let digest: string | undefined;
  const at = s.indexOf("@");
  if (at >= 0) {
    digest = s.slice(at + 1);
    rest = s.slice(0, at);
  }
  const colon = rest.lastIndexOf(":");
  if (colon > rest.lastIndexOf("/")) {
    return { name: rest.slice(0, colon), tag: rest.slice(colon + 1), digest };
  }
  return { name: rest, tag: undefined, digest };
}

/** Splits a name into domain and path the way distribution's anchored name pattern does. */
function splitName(name: string): { domain: string; path: string } | undefined {
  const slash = name.indexOf("/");
  if (slash >= 0) {
    const domain = name.slice(0, slash);
    const path = name.slice(slash + 1);
    if (DOMAIN_RE.test(domain) && PATH_RE.test(path)) return { domain, path };
  }
  return PATH_RE.test(name) ? { domain: "", path: name } : undefined;
}

/** Reports the first grammar violation in `s`, or `undefined` when it matches the grammar. */
function grammarError(s: string): string | undefined {
  const parts = split(s);
  if (splitName(parts.name) === undefined) return "invalid reference format";
  if (parts.tag !== undefined && !TAG_RE.test(parts.tag)) {
    return `invalid tag "${parts.tag}", want [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`;
  }
  if (parts.digest !== undefined && !DIGEST_RE.test(parts.digest)) {
    return `invalid digest "${parts.digest}"`;
  }
  return undefined;
}

/** Parses `s`; `input` is the string named in error messages. */
function parseStrict(s: string, input: string): Reference {
  const fail = (reason: string): InvalidArgument =>
    new InvalidArgument(`Cannot parse reference "${input}": ${reason}`);
  if (s === "") throw fail("repository name must have at least one component");
  if (HEX64_RE.test(input)) {
    throw fail("repository name cannot be a 64-character hexadecimal string");
  }
  const violation = grammarError(s);
  if (violation !== undefined) {
    const lower = s.toLowerCase();
    if (lower !== s && grammarError(lower) === undefined) {
      throw fail("repository name must be lowercase");
    }
    throw fail(violation);
  }
  const parts = split(s);
  const name = splitName(parts.name);
  if (name === undefined) throw fail("invalid reference format");
  if (name.path.length > MAX_PATH_LENGTH) {
    throw fail(`repository name must not be more than ${MAX_PATH_LENGTH} characters`);
  }
  const ref: Reference = { domain: name.domain, path: name.path };
  if (parts.tag !== undefined) ref.tag = parts.tag;
  if (parts.digest !== undefined) {
    try {
      parseDigest(parts.digest);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      const prefix = `Cannot parse digest "${parts.digest}": `;
      throw fail(
        `invalid digest "${parts.digest}": ${
          message.startsWith(prefix) ? message.slice(prefix.length) : message
        }`,
      );
    }
    ref.digest = parts.digest;
  }
  return ref;
}

/**
 * Parses a reference strictly, without normalisation (distribution's `Parse`): `alpine` has an
 * empty domain, `foo/bar` has domain `foo`. The digest must be of a registered algorithm with the
 * right lowercase hex encoding.
 *
 * @example Parse a fully qualified reference
 * ```ts
 * import { parseReference } from "./reference.ts";
 *
 * console.log(parseReference("registry.example.com:5000/team/app:1.0"));
 * ```
 *
 * @param s The reference.
 * @returns The domain, path, and tag and digest when present.
 * @throws {InvalidArgument} When `s` is empty, has invalid characters, an uppercase repository, a
 * path longer than 255 characters, an invalid tag or digest, or is a bare 64-character hex string.
 */
export function parseReference(s: string): Reference {
  return parseStrict(s, s);
}

/** Splits off the Docker domain as distribution does (`splitDockerDomain`). */
function splitDockerDomain(s: string): [string, string] {
  const slash = s.indexOf("/");
  if (slash < 0) return [DEFAULT_DOMAIN, OFFICIAL_PREFIX + s];
  const first = s.slice(0, slash);
  const rest = s.slice(slash + 1);
  let domain: string;
  let remainder: string;
  if (first === LEGACY_DEFAULT_DOMAIN) {
    [domain, remainder] = [DEFAULT_DOMAIN, rest];
  } else if (first === "localhost" || /[.:]/.test(first) || first.toLowerCase() !== first) {
    [domain, remainder] = [first, rest];
  } else {
    [domain, remainder] = [DEFAULT_DOMAIN, s];
  }
  if (domain === DEFAULT_DOMAIN && !remainder.includes("/")) {
    remainder = OFFICIAL_PREFIX + remainder;
  }
  return [domain, remainder];
}

/**
 * Parses a reference with Docker's normalisation (distribution's `ParseNormalizedNamed`): a name
 * without a domain goes to `docker.io`, a single-component Docker Hub name gets `library/`, and
 * `index.docker.io` becomes `docker.io`. The first component is a domain when it is `localhost`,
 * contains `.` or `:`, or has an uppercase letter. No tag is added.
 *
 * @example Normalise a familiar name
 * ```ts
 * import { parseNormalizedReference } from "./reference.ts";
 *
 * console.log(parseNormalizedReference("alpine:3.20"));
 * ```
 *
 * @param s The reference, familiar or fully qualified.
 * @returns The normalised reference.
 * @throws {InvalidArgument} When `s` is not a valid reference (see {@linkcode parseReference}).
 */
export function parseNormalizedReference(s: string): Reference {
  if (s === "") return parseStrict(s, s);
  if (HEX64_RE.test(s)) return parseStrict(s, s);
  const [domain, remainder] = splitDockerDomain(s);
  const colon = remainder.indexOf(":");
  const remote = colon >= 0 ? remainder.slice(0, colon) : remainder;
  if (remote.toLowerCase() !== remote) {
    throw new InvalidArgument(
      `Cannot parse reference "${s}": repository name must be lowercase`,
    );
  }
  return parseStrict(`${domain}/${remainder}`, s);
}

/**
 * Formats a reference as `[domain/]path[:tag][@digest]`.
 *
 * @example Format a reference
 * ```ts
 * import { formatReference } from "./reference.ts";
 *
 * console.log(formatReference({ domain: "docker.io", path: "library/alpine", tag: "3.20" }));
 * ```
 *
 * @param r The reference.
 * @returns The reference string.
 */
export function formatReference(r: Reference): string {
  let s = referenceName(r);
  if (r.tag !== undefined && r.tag !== "") s += `:${r.tag}`;
  if (r.digest !== undefined && r.digest !== "") s += `@${r.digest}`;
  return s;
}

/**
 * Returns a reference's repository name, `[domain/]path`, without tag or digest.
 *
 * @example Get the repository name
 * ```ts
 * import { parseNormalizedReference, referenceName } from "./reference.ts";
 *
 * console.log(referenceName(parseNormalizedReference("alpine:3.20")));
 * ```
 *
 * @param r The reference.
 * @returns The repository name.
 */
export function referenceName(r: Reference): string {
  return r.domain === "" ? r.path : `${r.domain}/${r.path}`;
}

/**
 * Returns a reference's object in containerd's form: `tag`, `tag@digest`, `@digest`, or empty.
 *
 * @example Get the object of a pinned reference
 * ```ts
 * import { parseNormalizedReference, referenceObject } from "./reference.ts";
 *
 * console.log(referenceObject(parseNormalizedReference("alpine:3.20")));
 * ```
 *
 * @param r The reference.
 * @returns The object part.
 */
export function referenceObject(r: Reference): string {
  const tag = r.tag ?? "";
  return r.digest !== undefined && r.digest !== "" ? `${tag}@${r.digest}` : tag;
}

/**
 * Normalises a reference to the full form containerd stores image names under (distribution's
 * `ParseDockerRef`): Docker Hub normalisation, `:latest` added when there is neither tag nor
 * digest, and, when both a tag and a digest are present, only the digest kept (the digest pins
 * the content, so the tag is dropped).
 *
 * @example Normalise familiar names
 * ```ts
 * import { normalizeReference } from "./reference.ts";
 *
 * console.log(normalizeReference("alpine"));
 * console.log(normalizeReference("localhost:5000/a/b"));
 * ```
 *
 * @param s The reference, familiar or fully qualified.
 * @returns The normalised reference string.
 * @throws {InvalidArgument} When `s` is not a valid reference.
 */
export function normalizeReference(s: string): string {
  const r = parseNormalizedReference(s);
  if (r.digest !== undefined) {
    return formatReference({ domain: r.domain, path: r.path, digest: r.digest });
  }
  return formatReference({ ...r, tag: r.tag ?? DEFAULT_TAG });
}

/**
 * Returns the familiar (short) form of a reference: normalised first, then `docker.io/` is
 * dropped, and `library/` too when a single path component follows. Tag and digest are kept as
 * given; no tag is added.
 *
 * @example Shorten a Docker Hub reference
 * ```ts
 * import { familiarReference } from "./reference.ts";
 *
 * console.log(familiarReference("docker.io/library/alpine:latest"));
 * ```
 *
 * @param s The reference, familiar or fully qualified.
 * @returns The familiar form.
 * @throws {InvalidArgument} When `s` is not a valid reference.
 */
export function familiarReference(s: string): string {
  const r = parseNormalizedReference(s);
  if (r.domain === DEFAULT_DOMAIN) {
    r.domain = "";
    const rest = r.path.slice(OFFICIAL_PREFIX.length);
    if (r.path.startsWith(OFFICIAL_PREFIX) && !rest.includes("/")) r.path = rest;
  }
  return formatReference(r);
}

function decodePath(s: string, input: string): string {
  if (!s.includes("%")) return s;
  const bytes: number[] = [];
  const encoder = new TextEncoder();
  for (let i = 0; i < s.length; i++) {
    if (s[i] !== "%") {
      const cp = s.codePointAt(i) ?? 0;
      bytes.push(...encoder.encode(String.fromCodePoint(cp)));
      if (cp > 0xffff) i++;
      continue;
    }
    const hex = s.slice(i + 1, i + 3);
    if (!/^[0-9A-Fa-f]{2}$/.test(hex)) {
      throw new InvalidArgument(
        `Cannot parse reference "${input}": invalid percent-encoding "${s.slice(i, i + 3)}"`,
      );
    }
    bytes.push(parseInt(hex, 16));
    i += 2;
  }
  return new TextDecoder().decode(new Uint8Array(bytes));
}

/** Host characters Go's URL parser accepts (RFC 3986 unreserved and sub-delims, plus `:[]`). */
const HOST_RE = /^(?:\[[0-9A-Za-z:.%]+\]|[A-Za-z0-9\-._~!$&'()*+,;=]*)(?::[0-9]*)?$/;

/**
 * Parses a containerd remote reference (`pkg/reference`): `host[/path][:tag][@digest]`, read as a
 * URI without a scheme. The locator is the host and the cleaned path; the object is everything
 * from the first `:` or `@` of the path (a leading `:` dropped). A bare `ubuntu` parses with an
 * empty object, and `redis:latest` is rejected because `latest` is not a port.
 *
 * Unlike containerd, user information (`user@host`), queries (`?`) and fragments (`#`) are
 * rejected instead of being silently dropped.
 *
 * @example Parse a remote reference
 * ```ts
 * import { parseRemoteReference } from "./reference.ts";
 *
 * console.log(parseRemoteReference("docker.io/library/redis:latest"));
 * ```
 *
 * @param s The reference.
 * @returns The locator and object.
 * @throws {InvalidArgument} When `s` contains `://`, `..` path elements or invalid characters, or
 * has no host.
 */
export function parseRemoteReference(s: string): RemoteReference {
  const fail = (reason: string): InvalidArgument =>
    new InvalidArgument(`Cannot parse reference "${s}": ${reason}`);
  if (s.includes("://")) throw fail("a scheme is not allowed");
  // deno-lint-ignore no-control-regex
  if (/[\x00-\x20\x7f?#]/.test(s)) throw fail("invalid character");
  const slash = s.indexOf("/");
  const host = slash < 0 ? s : s.slice(0, slash);
  let path = slash < 0 ? "" : s.slice(slash);
  if (host.includes("@")) throw fail("user information is not allowed");
  if (!HOST_RE.test(host)) throw fail(`invalid host "${host}"`);
  if (host === "" || /^:[0-9]*$/.test(host)) throw fail("hostname required");
  path = decodePath(path, s);
  let object = "";
  const sep = path.search(/[:@]/);
  if (sep >= 0) {
    object = path.slice(sep);
    if (object.startsWith(":")) object = object.slice(1);
    path = path.slice(0, sep);
  }
  const elements = path.split("/");
  if (elements.includes("..")) throw fail(`".." path elements are not allowed`);
  const locator = [host, ...elements.filter((e) => e !== "" && e !== ".")].join("/");
  return { locator, object };
}

/**
 * Formats a remote reference: the locator, then `:object`, or the object directly when it starts
 * with `@`.
 *
 * @example Format a remote reference
 * ```ts
 * import { formatRemoteReference } from "./reference.ts";
 *
 * console.log(formatRemoteReference({ locator: "docker.io/library/redis", object: "7" }));
 * ```
 *
 * @param r The remote reference.
 * @returns The reference string.
 */
export function formatRemoteReference(r: RemoteReference): string {
  if (r.object === "") return r.locator;
  return r.object.startsWith("@") ? r.locator + r.object : `${r.locator}:${r.object}`;
}

/**
 * Returns the host part of a remote reference's locator (its first path element).
 *
 * @example Get the registry host
 * ```ts
 * import { parseRemoteReference, remoteHostname } from "./reference.ts";
 *
 * console.log(remoteHostname(parseRemoteReference("ghcr.io/owner/app:1")));
 * ```
 *
 * @param r The remote reference.
 * @returns The hostname, with port when present.
 */
export function remoteHostname(r: RemoteReference): string {
  const slash = r.locator.indexOf("/");
  return slash < 0 ? r.locator : r.locator.slice(0, slash);
}

/**
 * Returns the digest part of a remote reference's object (after `@`), possibly partial; empty
 * when there is none.
 *
 * @example Get the pinned digest
 * ```ts
 * import { parseRemoteReference, remoteDigest } from "./reference.ts";
 *
 * console.log(remoteDigest(parseRemoteReference("docker.io/library/redis@sha256:abc")));
 * ```
 *
 * @param r The remote reference.
 * @returns The digest string, or `""`.
 */
export function remoteDigest(r: RemoteReference): string {
  const at = r.object.indexOf("@");
  return at < 0 ? "" : r.object.slice(at + 1);
}
