/**
 * Builds (or finds in the cache) the test guest of `fixtures/guest/` and prints where it
 * is: `deno run -A scripts/build_guest.ts` prints `{ kernel, initrd, versions }` as JSON.
 * The tests build it on demand; this warms the cache (`$PRESYNC_GUEST_CACHE`, else
 * `~/.cache/presync/guest`) and shows how to boot it by hand:
 *
 *     qemu-system-x86_64 -accel tcg -nographic -m 192 -no-reboot \
 *       -kernel KERNEL -initrd INITRD -append "console=ttyS0 presync.mode=workload" \
 *       -drive file=disk.img,format=raw,if=virtio
 *
 * @module
 */

import { buildGuest, guestCacheRoot } from "../fixtures/guest/guest_image.ts";

const image = await buildGuest();
console.log(JSON.stringify({ ...image, cache: guestCacheRoot() }, null, 2));
