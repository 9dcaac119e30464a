import type { ContentStore } from "../../content/mod.ts";
import type { ImageStore } from "../store.ts";

/** The stores an archive is imported into or exported from. */
export interface ArchiveStores {
  /** Where blobs live. */
  content: ContentStore;
  /** Where image records live. */
  images: ImageStore;
}

/** Annotation naming an image in an index (containerd's). */
export const ANNOTATION_IMAGE_NAME = "io.containerd.image.name";
/** Annotation naming a reference in an OCI layout's index. */
export const ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name";
/** Annotation marking an index entry as a referrer of another manifest. */
export const ANNOTATION_SUBJECT = "io.containerd.manifest.subject";

/** Largest JSON document read from an archive (containerd's limit). */
export const MAX_JSON_SIZE = 20 * 1024 * 1024;
