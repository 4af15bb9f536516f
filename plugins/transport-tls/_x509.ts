/**
 * The X.509 library, loaded only when a certificate is made: `@peculiar/x509` builds
 * certificates over WebCrypto and needs the `reflect-metadata` polyfill loaded before it.
 *
 * @module
 */

import "reflect-metadata";
export * as x509 from "@peculiar/x509";
