/**
 * presync's version, shown by `presync --version`, in `status --json` and as the
 * `presync_build_info` gauge. Raise it with every release; the wire and disk formats carry
 * versions of their own (docs/PROTOCOL.md, docs/STORE.md).
 */
export const VERSION = "0.9.0";
