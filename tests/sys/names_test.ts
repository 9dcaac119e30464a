import assert from "node:assert/strict";
import { decodeName, encodeName, encodeNameInto, nameByteLength } from "../../sys/_names.ts";

const bytes = (...b: number[]) => new Uint8Array(b);

Deno.test("decodeName() decodes valid UTF-8 as TextDecoder does, keeping a leading BOM", () => {
  for (const text of ["", "usr/bin/env", "données/日本語.txt", "emoji 😀 \u{10ffff}", "a\nb\\c"]) {
    assert.equal(decodeName(new TextEncoder().encode(text)), text);
  }
  // TextDecoder drops a leading U+FEFF by default; in a name it is part of the name.
  assert.equal(decodeName(bytes(0xef, 0xbb, 0xbf, 0x61)), "\ufeffa");
});

Deno.test("decodeName() keeps each byte of an invalid sequence as U+DC80-U+DCFF", () => {
  const cases: [Uint8Array, string][] = [
    [bytes(0x63, 0x61, 0x66, 0xe9), "caf\udce9"], // Latin-1 "café"
    [bytes(0xff, 0xfe), "\udcff\udcfe"],
    [bytes(0xc0, 0x80), "\udcc0\udc80"], // overlong NUL
    [bytes(0xe0, 0x80, 0xaf), "\udce0\udc80\udcaf"], // overlong "/"
    [bytes(0xed, 0xa0, 0x80), "\udced\udca0\udc80"], // an encoded surrogate
    [bytes(0xf4, 0x90, 0x80, 0x80), "\udcf4\udc90\udc80\udc80"], // above U+10FFFF
    [bytes(0xe2, 0x82), "\udce2\udc82"], // truncated at the end
    [bytes(0xe2, 0x82, 0x41), "\udce2\udc82A"], // truncated before ASCII
    [bytes(0x80, 0xc3, 0xa9), "\udc80é"], // stray continuation, then a valid "é"
  ];
  for (const [input, want] of cases) {
    assert.equal(decodeName(input), want, [...input].join(","));
    assert.deepEqual(encodeName(want), input, [...input].join(","));
  }
});

Deno.test("encodeName() and decodeName() round-trip every byte string (random and all pairs)", () => {
  // Every 2-byte string, then random strings biased to the bytes UTF-8 cares about.
  for (let a = 0; a < 256; a++) {
    for (let b = 0; b < 256; b++) {
      const input = bytes(a, b);
      const got = encodeName(decodeName(input));
      if (got.length !== 2 || got[0] !== a || got[1] !== b) {
        assert.fail(`${a},${b} came back as ${[...got].join(",")}`);
      }
    }
  }
  let seed = 12345;
  const next = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff);
  const pool = [0x41, 0x2f, 0x80, 0xbf, 0xc2, 0xdf, 0xe0, 0xed, 0xef, 0xf0, 0xf4, 0xf5, 0xff];
  for (let round = 0; round < 20000; round++) {
    const input = new Uint8Array(1 + (next() % 12));
    for (let i = 0; i < input.length; i++) {
      input[i] = next() % 3 === 0 ? next() % 256 : pool[next() % pool.length]!;
    }
    const name = decodeName(input);
    assert.deepEqual(encodeName(name), input);
    assert.equal(nameByteLength(name), input.length);
    const buf = new Uint8Array(name.length * 3);
    assert.deepEqual(buf.subarray(0, encodeNameInto(name, buf)), input);
  }
});

Deno.test("encodeName() writes other unpaired surrogates as U+FFFD, as TextEncoder does", () => {
  for (const text of ["\ud800", "a\udbffb", "\udc00", "\udc7f", "\udfff", "x\ud83d"]) {
    assert.deepEqual(encodeName(text), new TextEncoder().encode(text), JSON.stringify(text));
    assert.equal(nameByteLength(text), new TextEncoder().encode(text).length);
  }
  assert.equal(nameByteLength("😀é\udcff"), 4 + 2 + 1);
});
