// xmpp.js (@xmpp/client, npm) over WebSocket (RFC 7395): logs in with SCRAM at the URL given,
// sends a message to PEER (a full JID), waits for PEER's reply, closes. Prints one line per step, then
// "all steps passed"; exits non-zero on any failure or after 60 s.
//
//   node websocket.mjs wss://127.0.0.1:5281/xmpp-websocket example.com USER PASSWORD PEER
//
// Given a host (and port) instead of a URL, it finds the WebSocket URL by XEP-0156 discovery,
// with xmpp.js's own resolver (@xmpp/resolve's HTTP one, which reads
// https://HOST/.well-known/host-meta):
//
//   node websocket.mjs 127.0.0.1:5281 example.com USER PASSWORD PEER
//
// (A self-signed certificate needs NODE_TLS_REJECT_UNAUTHORIZED=0.)
import { client, xml } from "@xmpp/client";
import { resolve as discover } from "@xmpp/resolve/lib/http.js";
import { WebSocket } from "ws";

// xmpp.js uses the platform's WebSocket, which Node has only from version 22 on (Debian 12's
// is 18): the `ws` package stands in where it is missing.
globalThis.WebSocket ??= WebSocket;

const [where, domain, username, password, peer] = process.argv.slice(2);
const fail = (why) => {
  console.error(`failed: ${why}`);
  process.exit(1);
};
setTimeout(() => fail("timed out after 60 s"), 60_000).unref();

let service = where;
if (!where.includes("://")) {
  const found = await discover(where);
  console.log(`discovered at https://${where}/.well-known/host-meta: ${JSON.stringify(found)}`);
  service = found.find((e) => e.method === "websocket")?.uri;
  if (!service) fail(`no WebSocket endpoint in https://${where}/.well-known/host-meta`);
}

const xmpp = client({ service, domain, username, password, resource: "xmppjs" });
xmpp.on("error", (err) => fail(`error: ${err.message ?? err}`));
xmpp.on("stanza", async (stanza) => {
  if (!stanza.is("message") || stanza.getChildText("body") !== "hello back") return;
  if (String(stanza.attrs.from) !== peer) fail(`reply from ${stanza.attrs.from}`);
  console.log("received the reply");
  await xmpp.stop();
  console.log("all steps passed");
  process.exit(0);
});
xmpp.on("online", async (address) => {
  console.log(`online as ${address} over ${service}`);
  await xmpp.send(xml("presence"));
  await xmpp.send(xml("message", { to: peer, type: "chat" }, xml("body", {}, "hello from xmpp.js")));
  console.log(`sent a message to ${peer}`);
});
xmpp.start().catch((err) => fail(`start: ${err.message ?? err}`));
