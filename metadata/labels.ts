import { InvalidArgument } from "../errors.ts";

/** Largest key plus value of one label, in bytes (containerd's limit). */
export const MAX_LABEL_BYTES = 4096;

const encoder = new TextEncoder();

/**
 * Checks labels the way containerd does for every kind of record (blobs, images, snapshots) and
 * returns them without empty values, which are never stored.
 *
 * @example
 * ```ts
 * import { checkLabels } from "@strata/strata/metadata";
 * console.log(checkLabels({ a: "1", gone: "" }, "Cannot label blob"));
 * ```
 *
 * @param labels The labels.
 * @param action What is being done, for the message (`Cannot update image "x"`).
 * @returns The labels without empty values.
 * @throws {InvalidArgument} When a value is not a string or a label is longer than
 *   {@linkcode MAX_LABEL_BYTES}.
 */
export function checkLabels(
  labels: Record<string, string>,
  action: string,
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(labels)) {
    if (typeof value !== "string") {
      throw new InvalidArgument(`${action}: label "${key}" has a value that is not a string`);
    }
    const bytes = encoder.encode(key).length + encoder.encode(value).length;
    if (bytes > MAX_LABEL_BYTES) {
      throw new InvalidArgument(
        `${action}: label "${key}" is too long: key and value are ${bytes} bytes, the limit is ${MAX_LABEL_BYTES}`,
      );
    }
    if (value !== "") out[key] = value;
  }
  return out;
}
