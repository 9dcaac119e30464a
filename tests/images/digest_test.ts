import assert from "node:assert/strict";
import { InvalidArgument } from "../../errors.ts";
import { isValidDigest, parseDigest, validateDigest } from "../../images/digest.ts";

const HEX64 = "0123456789abcdef".repeat(4);

Deno.test("parseDigest() splits digests of the registered algorithms", () => {
  const table: [string, string, string][] = [
    [`sha256:${HEX64}`, "sha256", HEX64],
    [`sha384:${"a".repeat(96)}`, "sha384", "a".repeat(96)],
    [`sha512:${"f".repeat(128)}`, "sha512", "f".repeat(128)],
  ];
  for (const [input, algorithm, encoded] of table) {
    assert.deepEqual(parseDigest(input), { algorithm, encoded }, input);
  }
});

Deno.test("parseDigest() rejects malformed, unsupported and wrongly encoded digests", () => {
  const table: [string, string][] = [
    ["", "invalid format"],
    ["sha256", "invalid format"],
    [":abc", "invalid format"],
    ["sha256:", "invalid format"],
    [`SHA256:${HEX64}`, "invalid format"],
    [`sha256!x:${HEX64}`, "invalid format"],
    ["md5:d41d8cd98f00b204e9800998ecf8427e", `unsupported digest algorithm "md5"`],
    [`sha1+x.y:${HEX64}`, `unsupported digest algorithm "sha1+x.y"`],
    [`blake3:${HEX64}`, `unsupported digest algorithm "blake3"`],
    ["sha256:abc", "invalid sha256 length 3, want 64"],
    [`sha256:${HEX64}0`, "invalid sha256 length 65, want 64"],
    [`sha512:${HEX64}`, "invalid sha512 length 64, want 128"],
    [`sha384:${HEX64}`, "invalid sha384 length 64, want 96"],
    [`sha256:${HEX64.toUpperCase()}`, "want lowercase hex"],
    [`sha256:${"g".repeat(64)}`, "want lowercase hex"],
  ];
  for (const [input, reason] of table) {
    assert.throws(
      () => parseDigest(input),
      (err: unknown) =>
        err instanceof InvalidArgument &&
        err.message.startsWith(`Cannot parse digest "${input}": `) &&
        err.message.includes(reason),
      input,
    );
  }
});

Deno.test("validateDigest() returns valid digests and throws InvalidArgument otherwise", () => {
  assert.equal(validateDigest(`sha256:${HEX64}`), `sha256:${HEX64}`);
  assert.throws(() => validateDigest("sha256:00"), InvalidArgument);
});

Deno.test("isValidDigest() reports validity without throwing", () => {
  assert.equal(isValidDigest(`sha256:${HEX64}`), true);
  assert.equal(isValidDigest(`sha512:${"0".repeat(128)}`), true);
  assert.equal(isValidDigest("md5:d41d8cd98f00b204e9800998ecf8427e"), false);
  assert.equal(isValidDigest("not a digest"), false);
});
