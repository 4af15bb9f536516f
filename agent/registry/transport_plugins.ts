import { quicTransport } from "../../plugins/transport-quic/mod.ts";
import { tcpTransport } from "../../plugins/transport-tcp/mod.ts";
import {
  certificateFingerprint,
  KnownServersFile,
  loadOrCreateServerCertificate,
  pinnedServerName,
  type PinStore,
  tlsTransport,
} from "../../plugins/transport-tls/mod.ts";
import { ErrorCode, PresyncError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { Transport } from "../wire/transport.ts";
import { type PluginEntry, PluginTable } from "./plugin_table.ts";

/** The directory under the store where `serve` keeps the certificate it made. */
export const SERVER_TLS_DIR = ".tls";
/** The file under the agent's state where it pins servers' certificates. */
export const KNOWN_SERVERS_FILE = "known_servers.json";

/** Certificate settings and where a transport keeps its files. */
export interface TransportSettings {
  /** Server: certificate chain file, PEM (`--tls-cert`). */
  certFile?: string;
  /** Server: its private key file, PEM (`--tls-key`). */
  keyFile?: string;
  /** Client: CA certificates to trust, PEM file (`--tls-ca`). */
  caFile?: string;
  /** Client: the SHA-256 fingerprint of the one certificate to trust (`--tls-pin`). */
  pinSha256?: string;
  /**
   * Server: the store directory; its `.tls/` holds the certificate made on first start
   * (absent for a store that is not a directory: `--tls-cert` is then required).
   */
  storeDir?: string;
  /** Client: the state directory; its `known_servers.json` holds the pinned fingerprints. */
  stateDir?: string;
  /** Where the certificate and pinning lines go. */
  log: Logger;
}

/**
 * A transport plugin as the registry lists it: a server side (`serve`) and a client side
 * (`agent`), each built once at startup from the settings.
 */
export interface TransportPlugin extends PluginEntry {
  /**
   * The transport `serve` listens with.
   *
   * @throws {PresyncError} `INVALID_ARGUMENT` for settings that do not go together, `IO`
   *   for certificate files that cannot be read or made
   */
  server(settings: TransportSettings): Promise<Transport>;
  /**
   * The transport `agent` connects with.
   *
   * @throws {PresyncError} `INVALID_ARGUMENT` when the trust settings do not fit
   */
  client(settings: TransportSettings): Promise<Transport>;
}

/** Pins through `store`, logging the first pin of each server. */
function loggingPins(store: PinStore, log: Logger): PinStore {
  return {
    location: store.location,
    get: (server) => store.get(server),
    pin: async (server, fingerprint) => {
      await store.pin(server, fingerprint);
      log("info", "tls_pinned", { server, fingerprint, file: store.location });
    },
  };
}

/**
 * The server's certificate: `--tls-cert`/`--tls-key`, or else the self-signed one in
 * `<store>/.tls/`, made on first start; its fingerprint is logged (`tls_certificate`).
 */
async function serverCertificate(
  settings: TransportSettings,
  hint: (fingerprint: string, certPath: string) => string,
): Promise<{ cert: string; key: string }> {
  if (Boolean(settings.certFile) !== Boolean(settings.keyFile)) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      "--tls-cert and --tls-key go together (or give neither: serve then makes a " +
        "self-signed certificate in the store)",
    );
  }
  if (settings.certFile) {
    const cert = await Deno.readTextFile(settings.certFile);
    settings.log("info", "tls_certificate", {
      fingerprint: await certificateFingerprint(cert),
      cert: settings.certFile,
    });
    return { cert, key: await Deno.readTextFile(settings.keyFile!) };
  }
  if (settings.storeDir === undefined) {
    throw new PresyncError(
      ErrorCode.INVALID_ARGUMENT,
      "give --tls-cert FILE and --tls-key FILE: serve keeps the certificate it makes in the " +
        "store's directory, and this store is not a directory",
    );
  }
  const own = await loadOrCreateServerCertificate(`${settings.storeDir}/${SERVER_TLS_DIR}`);
  settings.log("info", "tls_certificate", {
    fingerprint: own.fingerprint,
    cert: own.certPath,
    created: own.created,
    hint: hint(own.fingerprint, own.certPath),
  });
  return { cert: own.certPem, key: own.keyPem };
}

/** `tcp`: plain TCP; the session authenticates and integrity-tags, but does not encrypt. */
const TCP: TransportPlugin = {
  name: "tcp",
  summary: "plain TCP (authenticated, integrity-tagged, not encrypted)",
  server: () => Promise.resolve(tcpTransport),
  client: () => Promise.resolve(tcpTransport),
};

/** `tls`: TLS over TCP, trusted by pin, CA or on first use. */
const TLS: TransportPlugin = {
  name: "tls",
  summary: "TLS over TCP; the agent pins serve's certificate on first contact",
  async server(settings) {
    const pair = await serverCertificate(
      settings,
      (fingerprint) =>
        `agents pin this certificate on first contact; or give them --tls-pin ${fingerprint}`,
    );
    return tlsTransport(pair);
  },
  async client(settings) {
    if (settings.pinSha256) return tlsTransport({ pinSha256: settings.pinSha256 });
    if (settings.caFile) {
      return tlsTransport({ caCerts: [await Deno.readTextFile(settings.caFile)] });
    }
    const known = new KnownServersFile(`${settings.stateDir}/${KNOWN_SERVERS_FILE}`);
    return tlsTransport({ pinStore: loggingPins(known, settings.log) });
  },
};

/**
 * `quic`: QUIC over UDP (Deno's unstable QUIC API). Deno's QUIC client cannot pin a
 * fingerprint or trust on first use, so the agent needs `--tls-ca FILE`: a CA's certificate,
 * or a copy of the certificate serve made (`<store>/.tls/cert.pem`), which then is its own
 * trust anchor (checked against its name `presync`, whatever the address).
 */
const QUIC: TransportPlugin = {
  name: "quic",
  summary: "QUIC over UDP; the agent needs --tls-ca (serve's cert.pem, or a CA)",
  async server(settings) {
    const pair = await serverCertificate(
      settings,
      (_, certPath) =>
        `QUIC agents cannot pin on first contact: copy ${certPath} to them and give ` +
        `--tls-ca FILE`,
    );
    return quicTransport(pair);
  },
  async client(settings) {
    if (!settings.caFile) {
      throw new PresyncError(
        ErrorCode.INVALID_ARGUMENT,
        "--transport quic needs --tls-ca FILE: QUIC cannot pin a fingerprint or trust on first " +
          "use (" +
          (settings.pinSha256 ? "--tls-pin is not possible over QUIC" : "no trust given") +
          "); copy serve's certificate (STORE/.tls/cert.pem) or your CA's to the agent",
      );
    }
    const ca = await Deno.readTextFile(settings.caFile);
    return quicTransport({ caCerts: [ca], serverName: await pinnedServerName(ca) });
  },
};

/**
 * Every transport this build has, by `--transport` name. A new transport is a folder
 * `plugins/transport-<name>/` and one entry here. Striping (`--stripes N`) is not a transport
 * of its own: it runs N connections of the chosen one (`agent/wire/striped_transport.ts`).
 */
export const TRANSPORTS: PluginTable<TransportPlugin> = new PluginTable(
  "transport",
  "--transport",
  [TLS, TCP, QUIC],
);

/** The transport used when configuration names none: TLS (encrypted by default). */
export const DEFAULT_TRANSPORT = "tls";
