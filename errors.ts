/**
 * Typed errors shared by every area of Strata, modelled on containerd's `errdefs`.
 *
 * Callers branch on the class (or on {@linkcode StrataError.code}), never on the message.
 *
 * @example Branch on the kind of error
 * ```ts
 * import { NotFound, isNotFound } from "@strata/strata/errors";
 *
 * const err = new NotFound("Cannot find image \"alpine\"");
 * console.log(isNotFound(err));
 * ```
 *
 * @module
 */

/** The kinds of error Strata reports. */
export type ErrorCode =
  | "not-found"
  | "already-exists"
  | "failed-precondition"
  | "invalid-argument"
  | "not-implemented"
  | "unavailable"
  | "permission-denied";

/**
 * Base class of every typed Strata error.
 *
 * @example Catch any Strata error
 * ```ts
 * import { StrataError, InvalidArgument } from "@strata/strata/errors";
 *
 * try {
 *   throw new InvalidArgument("Cannot parse digest \"x\"");
 * } catch (err) {
 *   if (err instanceof StrataError) console.log(err.code);
 * }
 * ```
 */
export abstract class StrataError extends Error {
  /** The kind of error, stable across releases. */
  abstract readonly code: ErrorCode;
  /** The process exit code the CLI uses for this kind. */
  abstract readonly exitCode: number;
}

/**
 * Something that was asked for does not exist.
 *
 * @example
 * ```ts
 * import { NotFound } from "@strata/strata/errors";
 * const err = new NotFound("Cannot find blob \"sha256:...\"");
 * console.log(err.code);
 * ```
 */
export class NotFound extends StrataError {
  /** Always `"not-found"`. */
  readonly code: ErrorCode = "not-found";
  /** Exit code 3. */
  readonly exitCode: number = 3;
  /** Always `"NotFound"`. */
  override readonly name: string = "NotFound";
}

/**
 * Something that was to be created exists already.
 *
 * @example
 * ```ts
 * import { AlreadyExists } from "@strata/strata/errors";
 * const err = new AlreadyExists("Cannot create image \"a\": it exists");
 * console.log(err.exitCode);
 * ```
 */
export class AlreadyExists extends StrataError {
  /** Always `"already-exists"`. */
  readonly code: ErrorCode = "already-exists";
  /** Exit code 4. */
  readonly exitCode: number = 4;
  /** Always `"AlreadyExists"`. */
  override readonly name: string = "AlreadyExists";
}

/**
 * The system is not in the state the operation needs (a size or digest mismatch, for example).
 *
 * @example
 * ```ts
 * import { FailedPrecondition } from "@strata/strata/errors";
 * const err = new FailedPrecondition("Cannot commit ingest \"x\": unexpected size 3");
 * console.log(err.code);
 * ```
 */
export class FailedPrecondition extends StrataError {
  /** Always `"failed-precondition"`. */
  readonly code: ErrorCode = "failed-precondition";
  /** Exit code 5. */
  readonly exitCode: number = 5;
  /** Always `"FailedPrecondition"`. */
  override readonly name: string = "FailedPrecondition";
}

/**
 * An argument is malformed or unsupported.
 *
 * @example
 * ```ts
 * import { InvalidArgument } from "@strata/strata/errors";
 * const err = new InvalidArgument("Cannot parse digest \"md5:00\": unsupported algorithm");
 * console.log(err.exitCode);
 * ```
 */
export class InvalidArgument extends StrataError {
  /** Always `"invalid-argument"`. */
  readonly code: ErrorCode = "invalid-argument";
  /** Exit code 2, like a usage error. */
  readonly exitCode: number = 2;
  /** Always `"InvalidArgument"`. */
  override readonly name: string = "InvalidArgument";
}

/**
 * The operation is not implemented for this input (for example Docker schema 1 manifests).
 *
 * @example
 * ```ts
 * import { NotImplemented } from "@strata/strata/errors";
 * const err = new NotImplemented("Cannot read schema 1 manifests: no longer supported");
 * console.log(err.code);
 * ```
 */
export class NotImplemented extends StrataError {
  /** Always `"not-implemented"`. */
  readonly code: ErrorCode = "not-implemented";
  /** Exit code 7. */
  readonly exitCode: number = 7;
  /** Always `"NotImplemented"`. */
  override readonly name: string = "NotImplemented";
}

/**
 * A resource is busy or out of reach for now; retrying later may succeed.
 *
 * @example
 * ```ts
 * import { Unavailable } from "@strata/strata/errors";
 * const err = new Unavailable("Cannot open ingest \"x\": it is locked by process 42");
 * console.log(err.exitCode);
 * ```
 */
export class Unavailable extends StrataError {
  /** Always `"unavailable"`. */
  readonly code: ErrorCode = "unavailable";
  /** Exit code 6. */
  readonly exitCode: number = 6;
  /** Always `"Unavailable"`. */
  override readonly name: string = "Unavailable";
}

/**
 * The caller is not allowed to do this: a registry refused the credentials (401) or the access
 * (403).
 *
 * @example
 * ```ts
 * import { PermissionDenied } from "@strata/strata/errors";
 * const err = new PermissionDenied("Cannot pull \"registry.example/app:1\": authorization failed");
 * console.log(err.exitCode);
 * ```
 */
export class PermissionDenied extends StrataError {
  /** Always `"permission-denied"`. */
  readonly code: ErrorCode = "permission-denied";
  /** Exit code 8. */
  readonly exitCode: number = 8;
  /** Always `"PermissionDenied"`. */
  override readonly name: string = "PermissionDenied";
}

/**
 * Reports whether `err` is a {@linkcode NotFound}.
 *
 * @example
 * ```ts
 * import { isNotFound, NotFound } from "@strata/strata/errors";
 * console.log(isNotFound(new NotFound("x")));
 * ```
 *
 * @param err The value to test.
 * @returns `true` when `err` is a `NotFound`.
 */
export function isNotFound(err: unknown): err is NotFound {
  return err instanceof NotFound;
}

/**
 * Reports whether `err` is an {@linkcode AlreadyExists}.
 *
 * @example
 * ```ts
 * import { AlreadyExists, isAlreadyExists } from "@strata/strata/errors";
 * console.log(isAlreadyExists(new AlreadyExists("x")));
 * ```
 *
 * @param err The value to test.
 * @returns `true` when `err` is an `AlreadyExists`.
 */
export function isAlreadyExists(err: unknown): err is AlreadyExists {
  return err instanceof AlreadyExists;
}

/** An error as plain data, to cross to another thread or process. */
export interface SerializedError {
  /** The class name (`FailedPrecondition`, `TarError`, `SysError`, ...). */
  name: string;
  /** The message. */
  message: string;
  /** {@linkcode StrataError.code}, when it is a typed error. */
  code?: string;
}

/**
 * Turns an error into plain data that `postMessage` can carry; {@linkcode reviveError} makes it a
 * typed error again.
 *
 * @example
 * ```ts
 * import { InvalidArgument, reviveError, serializeError } from "@strata/strata/errors";
 * const copy = reviveError(serializeError(new InvalidArgument("Cannot parse \"x\"")));
 * console.log(copy instanceof InvalidArgument);
 * ```
 *
 * @param err Anything thrown.
 * @returns Its name, message and code.
 */
export function serializeError(err: unknown): SerializedError {
  if (!(err instanceof Error)) return { name: "Error", message: String(err) };
  const code = (err as { code?: unknown }).code;
  return { name: err.name, message: err.message, ...(typeof code === "string" ? { code } : {}) };
}

const KINDS: Record<string, new (message: string) => StrataError> = {
  "not-found": NotFound,
  "already-exists": AlreadyExists,
  "failed-precondition": FailedPrecondition,
  "invalid-argument": InvalidArgument,
  "not-implemented": NotImplemented,
  "unavailable": Unavailable,
  "permission-denied": PermissionDenied,
};

/**
 * Makes an error from {@linkcode serializeError}'s data: the typed Strata error of its code, else a
 * plain `Error` with its name.
 *
 * @example
 * ```ts
 * import { reviveError } from "@strata/strata/errors";
 * const err = reviveError({ name: "NotFound", message: "Cannot find \"x\"", code: "not-found" });
 * console.log(err.name);
 * ```
 *
 * @param data The serialized error.
 * @returns The error.
 */
export function reviveError(data: SerializedError): Error {
  const Kind = data.code === undefined ? undefined : KINDS[data.code];
  if (Kind !== undefined) return new Kind(data.message);
  return Object.assign(new Error(data.message), { name: data.name });
}
