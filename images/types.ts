/** A platform as in the OCI image index and config: `os/architecture/variant` plus OS details. */
export interface Platform {
  /** Operating system, such as `linux`. */
  os: string;
  /** CPU architecture, such as `amd64` or `arm64`. */
  architecture: string;
  /** CPU variant, such as `v7` for arm. */
  variant?: string;
  /** OS version (Windows builds). */
  "os.version"?: string;
  /** Required OS features. */
  "os.features"?: string[];
}

/** An OCI content descriptor: what a blob is, its digest and its size. */
export interface Descriptor {
  /** Media type of the referenced content. */
  mediaType: string;
  /** Digest in `algorithm:encoded` form. */
  digest: string;
  /** Size in bytes. */
  size: number;
  /** Places the content may also be fetched from. */
  urls?: string[];
  /** Arbitrary metadata. */
  annotations?: Record<string, string>;
  /** The content itself, base64, for small blobs. */
  data?: string;
  /** The type of an artifact, when the descriptor points at one. */
  artifactType?: string;
  /** The platform of the manifest an index entry points at. */
  platform?: Platform;
}

/** An OCI image manifest or Docker schema 2 manifest. */
export interface Manifest {
  /** Always 2. */
  schemaVersion: number;
  /** The manifest's own media type, when present. */
  mediaType?: string;
  /** The artifact type, when the manifest describes an artifact. */
  artifactType?: string;
  /** The image config. */
  config: Descriptor;
  /** The layers, bottom first. */
  layers: Descriptor[];
  /** A manifest this one refers to. */
  subject?: Descriptor;
  /** Arbitrary metadata. */
  annotations?: Record<string, string>;
}

/** An OCI image index or Docker manifest list. */
export interface Index {
  /** Always 2. */
  schemaVersion: number;
  /** The index's own media type, when present. */
  mediaType?: string;
  /** The artifact type, when present. */
  artifactType?: string;
  /** The manifests (or nested indexes). */
  manifests: Descriptor[];
  /** A manifest this one refers to. */
  subject?: Descriptor;
  /** Arbitrary metadata. */
  annotations?: Record<string, string>;
}

/** The parts of an OCI image config that Strata reads. */
export interface ImageConfig {
  /** CPU architecture. */
  architecture: string;
  /** Operating system. */
  os: string;
  /** CPU variant. */
  variant?: string;
  /** OS version. */
  "os.version"?: string;
  /** OS features. */
  "os.features"?: string[];
  /** Creation time, RFC 3339. */
  created?: string;
  /** Author. */
  author?: string;
  /** Execution parameters. */
  config?: Record<string, unknown>;
  /** The layers' uncompressed digests. */
  rootfs: { type: string; diff_ids: string[] };
  /** Build history. */
  history?: Record<string, unknown>[];
}

/** An image record in the image store: a name pointing at a target descriptor. */
export interface ImageRecord {
  /** The image's name, usually a normalised reference such as `docker.io/library/alpine:3.20`. */
  name: string;
  /** The root of the image: an index or a manifest. */
  target: Descriptor;
  /** Labels. */
  labels: Record<string, string>;
  /** When the record was created. */
  createdAt: Date;
  /** When the record last changed. */
  updatedAt: Date;
}

/** Matches platforms and orders them by preference (containerd's `MatchComparer`). */
export interface MatchComparer {
  /**
   * Reports whether `platform` is acceptable.
   *
   * @param platform The candidate.
   */
  match(platform: Platform): boolean;
  /**
   * Reports whether `a` is preferred over `b`.
   *
   * @param a The first candidate.
   * @param b The second candidate.
   */
  less(a: Platform, b: Platform): boolean;
}
