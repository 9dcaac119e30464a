// Spawned by gc_test.ts: does some work on a root the way an interrupted pull or unpack would,
// prints what it made as one JSON line and waits to be killed with SIGKILL.
// Arguments: <strata root> <lease expiration in ms, or "none" for no lease>.
import { join } from "node:path";
import { Client } from "../../client.ts";
import { LeaseManager } from "../../leases/mod.ts";

const [root, expiration] = Deno.args;
const client = Client.open({ root: root! });
const leases = new LeaseManager(client.db);
const lease = expiration === "none" ? undefined : leases.create({ expiration: Number(expiration) });
const pin = (type: string, id: string) => {
  if (lease) leases.addResource(lease.id, { type, id });
};

// An ingest in progress.
const ref = `crash-ingest-${Deno.pid}`;
pin("ingests", ref);
const writer = await client.content.writer({ ref });
await writer.write(new Uint8Array(100_000).fill(7));

let digest: string | undefined;
let key: string | undefined;
if (lease) {
  // A blob committed before anything but the lease references it.
  const bytes = new TextEncoder().encode(`crash blob ${Deno.pid}`);
  const { createHash } = await import("node:crypto");
  digest = "sha256:" + createHash("sha256").update(bytes).digest("hex");
  pin("content", digest);
  await client.content.writeBlob(`crash-blob-${Deno.pid}`, bytes, {
    expected: { digest, size: bytes.length },
  });
  // An active snapshot being filled.
  key = `extract-crash-${Deno.pid}`;
  pin("snapshots/native", key);
  const sn = await client.snapshotter("native");
  const [mount] = await sn.prepare(key);
  await Deno.writeTextFile(join(mount!.source, "half-written"), "x");
}

console.log(JSON.stringify({ lease: lease?.id, ref, digest, key }));
setInterval(() => {}, 60_000);
