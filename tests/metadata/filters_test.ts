import assert from "node:assert/strict";
import { InvalidArgument } from "../../errors.ts";
import { parseFilters, recordAdaptor } from "../../metadata/filters.ts";

const blob = recordAdaptor(
  { digest: "sha256:abc", "target.digest": "sha256:def" },
  { labels: { team: "infra", "a.b": "dotted", empty: "" } },
);

Deno.test("parseFilters() with no filters matches everything", () => {
  assert.equal(parseFilters([]).match(blob), true);
  assert.equal(parseFilters([""]).match(blob), true);
});

Deno.test("parseFilters() supports presence, ==, != and ~=", () => {
  const cases: [string, boolean][] = [
    ["labels.team", true],
    ["labels.missing", false],
    ["labels.team==infra", true],
    ["labels.team==other", false],
    ["labels.team!=other", true],
    ["labels.team!=infra", false],
    ["labels.missing!=x", true],
    ["digest~=^sha256:a", true],
    ["digest~=^sha512:", false],
    ["target.digest==sha256:def", true],
    ['labels."a.b"==dotted', true],
    ['labels.team=="infra"', true],
    ["labels.empty", true],
  ];
  for (const [f, want] of cases) assert.equal(parseFilters([f]).match(blob), want, f);
});

Deno.test("parseFilters() ANDs selectors in one filter and ORs filters", () => {
  assert.equal(parseFilters(["labels.team==infra,digest==sha256:abc"]).match(blob), true);
  assert.equal(parseFilters(["labels.team==infra,digest==sha256:zzz"]).match(blob), false);
  assert.equal(parseFilters(["labels.team==x", "digest==sha256:abc"]).match(blob), true);
  assert.equal(parseFilters(["labels.team==x", "digest==y"]).match(blob), false);
});

Deno.test("parseFilters() rejects malformed filters with InvalidArgument", () => {
  for (const bad of ["labels.team==", "=x", 'labels."open', "digest~=(", "a b"]) {
    assert.throws(() => parseFilters([bad]), InvalidArgument, bad);
  }
});
