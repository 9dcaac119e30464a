/** A mount, as containerd describes one: what to mount, how, with which options. */
export interface Mount {
  /** The filesystem type: `bind`, `overlay`, ... */
  type: string;
  /** The source: a path, a device, or `overlay`. */
  source: string;
  /** A sub-directory inside the mount target, for stacked mounts. */
  target?: string;
  /** fstab-style options (`ro`, `rbind`, `lowerdir=...`). */
  options: string[];
}
