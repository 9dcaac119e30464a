import assert from "node:assert/strict";
import { posix } from "node:path";
import { cleanName } from "../../diff/_apply_fs.ts";

/** Go's `filepath.Clean` against a virtual root, written the slow way: the reference. */
function reference(name: string): string {
  const n = posix.normalize(`/${name}`).replace(/\/+$/, "");
  return n === "" ? "" : n.slice(1);
}

Deno.test("cleanName() cleans tar names like filepath.Clean against a virtual root", () => {
  const cases: [string, string][] = [
    ["usr/bin/env", "usr/bin/env"],
    ["./usr/bin/env", "usr/bin/env"],
    ["usr/share/", "usr/share"],
    ["./usr/share//", "usr/share"],
    ["/etc/passwd", "etc/passwd"],
    ["usr//lib", "usr/lib"],
    ["usr/./lib", "usr/lib"],
    ["usr/lib/..", "usr"],
    ["../../etc/shadow", "etc/shadow"],
    ["./", ""],
    [".", ""],
    ["..", ""],
    ["/", ""],
    ["", ""],
    ["././x", "x"],
    [".x/..y/...", ".x/..y/..."],
    ["a/.wh..wh..opq", "a/.wh..wh..opq"],
    ["a\\b/c", "a\\b/c"],
    ["données/日本語.txt", "données/日本語.txt"],
  ];
  for (const [name, want] of cases) assert.equal(cleanName(name), want, JSON.stringify(name));
});

Deno.test("cleanName() agrees with the reference on every short name over a small alphabet", () => {
  // Every string of up to 6 characters from "a./": all the ways components can be empty, "."
  // or "..", at the start, middle and end.
  const alphabet = ["a", ".", "/"];
  let names = [""];
  let count = 0;
  for (let len = 0; len <= 6; len++) {
    for (const name of names) {
      assert.equal(cleanName(name), reference(name), JSON.stringify(name));
      count++;
    }
    names = names.flatMap((n) => alphabet.map((c) => n + c));
  }
  assert.equal(count, 1093);
});
