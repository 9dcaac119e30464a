import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { chainId, chainIds } from "../../images/manifest.ts";

function sha256(text: string): string {
  return "sha256:" + createHash("sha256").update(text).digest("hex");
}

// Diff IDs of three made-up layers: sha256 of "layer0", "layer1", "layer2".
const L0 = "sha256:4fbec69b941195fd56f8212a5000e304129451d82efca94ff0e0fb2d5355472e";
const L1 = "sha256:77ea7eee3d80b1a38f83906dd3048e2689457eb90e18a7d12f839c5ae37106a2";
const L2 = "sha256:95cf1a2e1698fe3ca1fcc3f653119146b271d0b62e487ec264441e886a11bd06";

Deno.test("chainId() of no layers is the empty string", () => {
  assert.equal(chainId([]), "");
  assert.deepEqual(chainIds([]), []);
});

Deno.test("chainId() of one layer is its diff ID", () => {
  assert.equal(chainId([L0]), L0);
  assert.deepEqual(chainIds([L0]), [L0]);
});

Deno.test("chainId() hashes parent, one space and diff ID", () => {
  assert.equal(chainId([L0, L1]), sha256(`${L0} ${L1}`));
  assert.equal(chainId([L0, L1, L2]), sha256(`${sha256(`${L0} ${L1}`)} ${L2}`));
  assert.notEqual(chainId([L1, L0]), chainId([L0, L1]));
});

Deno.test("chainId() matches values computed with sha256sum", () => {
  // printf '%s' "$L0 $L1" | sha256sum, and so on.
  assert.equal(
    chainId([L0, L1]),
    "sha256:ef232af0eb422cdfd7917631657cd8ed2bfd5b9461b37c427aa0d3e0a19adf79",
  );
  assert.equal(
    chainId([L0, L1, L2]),
    "sha256:7ad3896338947cc04ee0b35b50d400ff32538d63f42f85ec87feac78bf71a54d",
  );
  // The two diff IDs of the image-spec config example.
  assert.equal(
    chainId([
      "sha256:c6f988f4874bb0add23a778f753c65efe992244e148a1d2ec2a8b664fb66bbd1",
      "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef",
    ]),
    "sha256:c3191d32a37d7159b2e30830937d2e30268ad6c375a773a8994911a3aba9b93f",
  );
});

Deno.test("chainIds() returns the chain ID of every prefix", () => {
  assert.deepEqual(chainIds([L0, L1, L2]), [
    L0,
    "sha256:ef232af0eb422cdfd7917631657cd8ed2bfd5b9461b37c427aa0d3e0a19adf79",
    "sha256:7ad3896338947cc04ee0b35b50d400ff32538d63f42f85ec87feac78bf71a54d",
  ]);
});
