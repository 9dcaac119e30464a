import type {
  ContentInfo,
  ContentStore,
  ContentWriter,
  WriteBlobOptions,
  WriterOptions,
} from "../content/mod.ts";
import type { LeaseManager, LeaseResource } from "./leases.ts";

/**
 * Wraps a content store so that what is written or looked at through it is pinned to a lease
 * first, the way containerd attaches objects to the lease in a request's context: `info(digest)`
 * pins the blob before reading its record (a blob that exists now may be collected a moment
 * later otherwise), `writer` pins the ingest and its expected digest before opening, a writer's
 * `commit` pins the digest it is about to commit, and `writeBlob` pins the expected digest (its
 * short-lived ingest is not pinned: a fresh ingest is kept anyway; a `writeBlob` without an
 * expected digest is pinned right after the commit). Each pin is one database transaction, and
 * nothing is pinned twice. Every other method goes to the store unchanged.
 *
 * @example Import blobs under a lease
 * ```ts
 * import { ContentStore } from "@strata/strata/content";
 * import { MetadataDb } from "@strata/strata/metadata";
 * import { LeaseManager, leasedContentStore, withLease } from "@strata/strata/leases";
 *
 * const root = await Deno.makeTempDir();
 * const db = MetadataDb.open(root);
 * const content = new ContentStore(`${root}/content`, db);
 * const leases = new LeaseManager(db);
 * await withLease(leases, async (lease) => {
 *   const leased = leasedContentStore(content, leases, lease.id);
 *   await leased.writeBlob("example", new TextEncoder().encode("{}"));
 * });
 * db.close();
 * ```
 *
 * @param content The content store.
 * @param leases The lease manager of the same root.
 * @param leaseId The lease to pin to.
 * @returns A content store that pins to the lease.
 */
export function leasedContentStore(
  content: ContentStore,
  leases: LeaseManager,
  leaseId: string,
): ContentStore {
  const pinned = new Set<string>();
  const pin = (...resources: LeaseResource[]) => {
    const keys = new Map(resources.map((r) => [`${r.type}\n${r.id}`, r]));
    const fresh = [...keys].filter(([key]) => !pinned.has(key));
    if (fresh.length === 0) return;
    leases.addResources(leaseId, fresh.map(([, r]) => r));
    for (const [key] of fresh) pinned.add(key);
  };
  /** The ingest and, when known, the blob it should become: one transaction. */
  const ingest = (ref: string | undefined, digest: string | undefined): LeaseResource[] => [
    ...(ref !== undefined ? [{ type: "ingests", id: ref }] : []),
    ...(digest !== undefined ? [{ type: "content", id: digest }] : []),
  ];
  const wrapWriter = (w: ContentWriter): ContentWriter => ({
    get ref() {
      return w.ref;
    },
    get offset() {
      return w.offset;
    },
    digest: () => w.digest(),
    write: (chunk) => w.write(chunk),
    truncate: (size) => w.truncate(size),
    close: () => w.close(),
    status: () => w.status(),
    async commit(options = {}) {
      pin({ type: "content", id: options.expected ?? w.status().expected ?? w.digest() });
      return await w.commit(options);
    },
  });
  const overrides: Partial<Record<keyof ContentStore, unknown>> = {
    info(digest: string): Promise<ContentInfo> {
      return Promise.resolve().then(() => {
        pin({ type: "content", id: digest });
        return content.info(digest);
      });
    },
    async writer(options: WriterOptions): Promise<ContentWriter> {
      pin(...ingest(options.ref, options.expected?.digest));
      return wrapWriter(await content.writer(options));
    },
    async writeBlob(
      ref: string,
      data: Uint8Array | AsyncIterable<Uint8Array>,
      options: WriteBlobOptions = {},
    ): Promise<ContentInfo> {
      // The ingest lives only during this call, and a fresh ingest is kept anyway: pin the blob.
      pin(...ingest(undefined, options.expected?.digest));
      const info = await content.writeBlob(ref, data, options);
      pin({ type: "content", id: info.digest });
      return info;
    },
  };
  return new Proxy(content, {
    get(target, prop) {
      if (typeof prop === "string" && Object.hasOwn(overrides, prop)) {
        return overrides[prop as keyof ContentStore];
      }
      const value: unknown = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}
