import { quicAvailable } from "../../plugins/transport-quic/mod.ts";
import { tcpTransport } from "../../plugins/transport-tcp/mod.ts";
import { certificateFingerprint } from "../../plugins/transport-tls/mod.ts";
import {
  CONTRACT_PSK,
  testTransportContract,
  type TransportPair,
} from "../../fixtures/transport_contract.ts";
import { stripedTransport } from "../wire/striped_transport.ts";
import { SERVER_TLS_DIR, TRANSPORTS, type TransportSettings } from "./mod.ts";

const quiet = () => {};

/** Both sides of a registry transport as `serve` and `agent` build them from their flags. */
async function fromRegistry(
  name: string,
  client: (storeDir: string) => Promise<Partial<TransportSettings>>,
  link: "tcp" | "udp",
): Promise<TransportPair> {
  const storeDir = await Deno.makeTempDir({ prefix: `presync-contract-${name}-` });
  const plugin = TRANSPORTS.get(name);
  return {
    server: await plugin.server({ storeDir, log: quiet }),
    client: await plugin.client({ ...(await client(storeDir)), log: quiet }),
    link,
    cleanup: () => Deno.remove(storeDir, { recursive: true }),
  };
}

testTransportContract("tcp", () => fromRegistry("tcp", () => Promise.resolve({}), "tcp"));

// serve's self-signed certificate, pinned by the agent (`--tls-pin`).
testTransportContract(
  "tls",
  () =>
    fromRegistry("tls", async (storeDir) => ({
      pinSha256: await certificateFingerprint(
        await Deno.readTextFile(`${storeDir}/${SERVER_TLS_DIR}/cert.pem`),
      ),
    }), "tcp"),
);

// serve's self-signed certificate, copied to the agent as its `--tls-ca`.
testTransportContract(
  "quic",
  () =>
    fromRegistry(
      "quic",
      (storeDir) => Promise.resolve({ caFile: `${storeDir}/${SERVER_TLS_DIR}/cert.pem` }),
      "udp",
    ),
  { ignore: !quicAvailable() },
);

testTransportContract("tcp striped over 3 connections", (clientPsk) =>
  Promise.resolve({
    server: stripedTransport(tcpTransport, { psk: CONTRACT_PSK, logger: quiet }),
    client: stripedTransport(tcpTransport, { psk: clientPsk, members: 3, logger: quiet }),
    link: "tcp",
  }));
