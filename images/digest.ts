/**
 * Digest strings (`algorithm:encoded`) as validated by containerd (go-digest): the grammar, the
 * registered algorithms `sha256`, `sha384` and `sha512`, and their lowercase hex encodings.
 *
 * @module
 */

import { InvalidArgument } from "../errors.ts";

/** The parts of a digest string. */
export interface DigestParts {
  /** The algorithm, such as `sha256`. */
  algorithm: string;
  /** The encoded hash, lowercase hex for the registered algorithms. */
  encoded: string;
}

/** Registered algorithms and the length of their hex encoding. */
const HEX_LENGTHS: ReadonlyMap<string, number> = new Map([
  ["sha256", 64],
  ["sha384", 96],
  ["sha512", 128],
]);

/** The general digest grammar: algorithm components joined by `+._-`, then an encoded part. */
const DIGEST_GRAMMAR = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

const LOWER_HEX = /^[a-f0-9]+$/;

/**
 * Splits and validates a digest string.
 *
 * A digest is `algorithm:encoded`. The algorithm must be a registered one (`sha256`, `sha384` or
 * `sha512`) and the encoded part must be lowercase hex of the algorithm's length.
 *
 * @example Parse a sha256 digest
 * ```ts
 * import { parseDigest } from "./digest.ts";
 *
 * const { algorithm, encoded } = parseDigest("sha256:" + "a".repeat(64));
 * console.log(algorithm, encoded.length);
 * ```
 *
 * @param s The digest string.
 * @returns The algorithm and the encoded hash.
 * @throws {InvalidArgument} When the string is malformed, the algorithm is unsupported, or the
 * encoding has the wrong length or characters.
 */
export function parseDigest(s: string): DigestParts {
  const colon = s.indexOf(":");
  if (colon <= 0 || colon === s.length - 1) {
    throw new InvalidArgument(
      `Cannot parse digest "${s}": invalid format, want "algorithm:encoded"`,
    );
  }
  const algorithm = s.slice(0, colon);
  const encoded = s.slice(colon + 1);
  const hexLength = HEX_LENGTHS.get(algorithm);
  if (hexLength === undefined) {
    if (!DIGEST_GRAMMAR.test(s)) {
      throw new InvalidArgument(
        `Cannot parse digest "${s}": invalid format, want "algorithm:encoded"`,
      );
    }
    throw new InvalidArgument(
      `Cannot parse digest "${s}": unsupported digest algorithm "${algorithm}"`,
    );
  }
  if (encoded.length !== hexLength) {
    throw new InvalidArgument(
      `Cannot parse digest "${s}": invalid ${algorithm} length ${encoded.length}, want ${hexLength} hex characters`,
    );
  }
  if (!LOWER_HEX.test(encoded)) {
    throw new InvalidArgument(
      `Cannot parse digest "${s}": invalid ${algorithm} encoding, want lowercase hex`,
    );
  }
  return { algorithm, encoded };
}

/**
 * Checks a digest string and returns it unchanged.
 *
 * @example Validate a digest before use
 * ```ts
 * import { validateDigest } from "./digest.ts";
 *
 * const digest = validateDigest("sha256:" + "0".repeat(64));
 * console.log(digest);
 * ```
 *
 * @param s The digest string.
 * @returns `s`, when it is a valid digest.
 * @throws {InvalidArgument} When `s` is not a valid digest (see {@linkcode parseDigest}).
 */
export function validateDigest(s: string): string {
  parseDigest(s);
  return s;
}

/**
 * Reports whether a string is a valid digest of a registered algorithm.
 *
 * @example Check digests
 * ```ts
 * import { isValidDigest } from "./digest.ts";
 *
 * console.log(isValidDigest("sha256:" + "0".repeat(64)));
 * console.log(isValidDigest("md5:d41d8cd98f00b204e9800998ecf8427e"));
 * ```
 *
 * @param s The string to check.
 * @returns `true` when {@linkcode parseDigest} accepts `s`.
 */
export function isValidDigest(s: string): boolean {
  try {
    parseDigest(s);
    return true;
  } catch {
    return false;
  }
}
