// Helpers shared by the archive tests: a client on a temp root, and images built by peers.
import { join } from "node:path";
import { Client } from "../../client.ts";
import { makeTempDir, makeUmociImage, runOk, type TempDir } from "../_peers.ts";

/** A temp dir with a client opened on `<dir>/root`; disposing closes it and removes the dir. */
export interface TestRoot extends AsyncDisposable {
  dir: string;
  client: Client;
  /** Reopens the client (another process's view of the same root). */
  reopen(): Client;
}

export async function testRoot(): Promise<TestRoot> {
  const tmp: TempDir = await makeTempDir({ prefix: "strata-archive-" });
  const client = Client.open({ root: join(tmp.path, "root") });
  const extra: Client[] = [];
  return {
    dir: tmp.path,
    client,
    reopen() {
      const c = Client.open({ root: join(tmp.path, "root") });
      extra.push(c);
      return c;
    },
    async [Symbol.asyncDispose]() {
      client.close();
      for (const c of extra) c.close();
      await tmp[Symbol.asyncDispose]();
    },
  };
}

/** Builds the umoci test image once per call, returning `oci:<layout>:<tag>`. */
export async function umociImage(dir: string, tag = "v1"): Promise<string> {
  const { layout } = await makeUmociImage(join(dir, "umoci"), { tag });
  return `${layout}:${tag}`;
}

/** Digests of the blobs of an OCI layout or archive, as skopeo sees them. */
export async function skopeoLayers(ref: string): Promise<string[]> {
  const out = await runOk(["skopeo", "inspect", "--raw", ref]);
  const manifest = JSON.parse(out.stdout) as { layers: { digest: string }[] };
  return manifest.layers.map((l) => l.digest);
}
