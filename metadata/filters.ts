import { InvalidArgument } from "../errors.ts";

/** Looks up a field path (`["labels", "a.b"]`) on an object; `undefined` when it has no such field. */
export type FieldAdaptor = (fieldpath: readonly string[]) => string | undefined;

/** A compiled filter: `match` tells whether an object, seen through its adaptor, passes. */
export interface Filter {
  /** Reports whether the object behind `adaptor` passes the filter. */
  match(adaptor: FieldAdaptor): boolean;
}

interface Selector {
  fieldpath: string[];
  op?: "==" | "!=" | "~=";
  value?: string;
  regexp?: RegExp;
}

/**
 * Compiles containerd-style filters. Each string is a comma-separated list of selectors that must
 * all match (AND); several strings are alternatives (OR); no strings match everything. A selector is
 * `fieldpath`, meaning present, or `fieldpath==value`, `!=`, or `~=` (a regular expression). Field
 * path parts are separated by `.` and may be quoted: `labels."a.b"==x`.
 *
 * @example Select blobs by label
 * ```ts
 * import { parseFilters } from "@strata/strata/metadata";
 * const f = parseFilters(["labels.team==infra,digest~=^sha256:"]);
 * const labels: Record<string, string> = { team: "infra" };
 * const ok = f.match((p) => p[0] === "digest" ? "sha256:00" : p[0] === "labels" ? labels[p[1]!] : undefined);
 * console.log(ok);
 * ```
 *
 * @param filters The filter strings.
 * @returns The compiled filter.
 * @throws {InvalidArgument} When a filter cannot be parsed.
 */
export function parseFilters(filters: readonly string[]): Filter {
  const alternatives = filters.filter((f) => f.trim() !== "").map(parseOne);
  return {
    match(adaptor: FieldAdaptor): boolean {
      if (alternatives.length === 0) return true;
      return alternatives.some((all) => all.every((s) => matchSelector(s, adaptor)));
    },
  };
}

function matchSelector(s: Selector, adaptor: FieldAdaptor): boolean {
  const value = adaptor(s.fieldpath);
  switch (s.op) {
    case undefined:
      return value !== undefined;
    case "==":
      return value === s.value;
    case "!=":
      return value !== s.value;
    case "~=":
      return value !== undefined && s.regexp!.test(value);
  }
  return false;
}

function parseOne(input: string): Selector[] {
  const selectors: Selector[] = [];
  let i = 0;
  const fail = (why: string): never => {
    throw new InvalidArgument(`Cannot parse filter "${input}": ${why} at offset ${i}`);
  };
  const skipSpace = () => {
    while (i < input.length && /\s/.test(input[i]!)) i++;
  };
  const readQuoted = (): string => {
    const quote = input[i]!;
    i++;
    let out = "";
    while (i < input.length && input[i] !== quote) {
      if (input[i] === "\\" && i + 1 < input.length) i++;
      out += input[i];
      i++;
    }
    if (i >= input.length) fail("unterminated quoted string");
    i++;
    return out;
  };
  for (;;) {
    skipSpace();
    const fieldpath: string[] = [];
    for (;;) {
      if (input[i] === '"' || input[i] === "'" || input[i] === "`") {
        fieldpath.push(readQuoted());
      } else {
        const m = /^[A-Za-z0-9_\-/]+/.exec(input.slice(i));
        if (!m) fail("expected a field name");
        fieldpath.push(m![0]);
        i += m![0].length;
      }
      if (input[i] === ".") {
        i++;
        continue;
      }
      break;
    }
    skipSpace();
    const selector: Selector = { fieldpath };
    const op = input.slice(i, i + 2);
    if (op === "==" || op === "!=" || op === "~=") {
      i += 2;
      skipSpace();
      let value: string;
      if (input[i] === '"' || input[i] === "'" || input[i] === "`") {
        value = readQuoted();
      } else {
        const start = i;
        while (i < input.length && input[i] !== "," && !/\s/.test(input[i]!)) i++;
        value = input.slice(start, i);
        if (value === "") fail("expected a value");
      }
      selector.op = op;
      selector.value = value;
      if (op === "~=") {
        try {
          selector.regexp = new RegExp(value);
        } catch (err) {
          fail(`invalid regular expression: ${(err as Error).message}`);
        }
      }
    }
    selectors.push(selector);
    skipSpace();
    if (i >= input.length) return selectors;
    if (input[i] !== ",") fail(`unexpected character "${input[i]}"`);
    i++;
  }
}

/**
 * Builds an adaptor for the common shape of Strata records: plain string fields plus `labels` and
 * `annotations` maps.
 *
 * @example
 * ```ts
 * import { recordAdaptor } from "@strata/strata/metadata";
 * const a = recordAdaptor({ name: "x" }, { labels: { k: "v" } });
 * console.log(a(["labels", "k"]));
 * ```
 *
 * @param fields Top-level string fields, by field name (a nested name such as `target.digest` is
 *   given with its dot).
 * @param maps Maps addressed as `<map>.<key>`.
 * @returns The adaptor.
 */
export function recordAdaptor(
  fields: Record<string, string | undefined>,
  maps: Record<string, Record<string, string> | undefined> = {},
): FieldAdaptor {
  return (fieldpath) => {
    if (fieldpath.length === 0) return undefined;
    const head = fieldpath[0]!;
    const map = maps[head];
    if (map !== undefined && fieldpath.length >= 2) {
      const key = fieldpath.slice(1).join(".");
      return Object.hasOwn(map, key) ? map[key] : undefined;
    }
    const joined = fieldpath.join(".");
    return Object.hasOwn(fields, joined) ? fields[joined] : undefined;
  };
}
