// xmpp.js (@xmpp/client, npm) over WebSocket loses its connection and resumes it inline in
// SASL2 (XEP-0388, XEP-0198 §7.2): logs in (SASL2, stream management enabled), tells PEER (a
// full JID) "ready", then its socket is destroyed without a close, as a lost network does.
// xmpp.js reconnects by itself and puts its <resume/> in <authenticate/>; the server must
// answer <resumed/> inside SASL2's <success/>. PEER sends COUNT messages ("away 0", ...) after
// "ready": they must all arrive once each, in order. Then it tells PEER "resumed ok". Prints
// one line per step, then "all steps passed"; exits non-zero on any failure or after 60 s.
//
//   node resume.mjs wss://127.0.0.1:5281/xmpp-websocket example.com USER PASSWORD PEER COUNT
//
// (A self-signed certificate needs NODE_TLS_REJECT_UNAUTHORIZED=0.)
import { client, xml } from "@xmpp/client";
import { WebSocket } from "ws";

globalThis.WebSocket ??= WebSocket;

const [service, domain, username, password, peer, count] = process.argv.slice(2);
const want = Array.from({ length: Number(count) }, (_, i) => `away ${i}`);
const fail = (why) => {
  console.error(`failed: ${why}`);
  process.exit(1);
};
setTimeout(() => fail("timed out after 60 s"), 60_000).unref();

const xmpp = client({ service, domain, username, password, resource: "xmppjs" });
const sm = xmpp.streamManagement;
let dropped = false;
let resumedInline = false;
let saslTwo = false;
const got = [];

// Losing the socket is expected once; anything before it is a failure.
xmpp.on("error", (err) => {
  if (!dropped) fail(`error: ${err.message ?? err}`);
  console.log(`after the drop: ${err.message ?? err}`);
});
xmpp.on("nonza", (el) => {
  if (el.is("success", "urn:xmpp:sasl:2")) {
    saslTwo = true;
    if (el.getChild("resumed", "urn:xmpp:sm:3")) resumedInline = true;
  }
});
xmpp.on("stanza", async (stanza) => {
  const body = stanza.is("message") ? stanza.getChildText("body") : null;
  if (!body?.startsWith("away ")) return;
  got.push(body);
  if (got.length < want.length) return;
  if (JSON.stringify(got) !== JSON.stringify(want)) fail(`got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  if (!resumedInline) fail("the session was not resumed inline in SASL2's <success/>");
  console.log(`received ${got.length} messages sent while away, once each, in order`);
  await xmpp.send(xml("message", { to: peer, type: "chat" }, xml("body", {}, "resumed ok")));
  // The peer's answer is not awaited: the message is acknowledged before the stream closes.
  await new Promise((r) => setTimeout(r, 500));
  await xmpp.stop();
  console.log("all steps passed");
  process.exit(0);
});
sm.on("resumed", () => console.log(`resumed ${sm.id} (inline in SASL2: ${resumedInline})`));

let first = true;
xmpp.on("online", async (address) => {
  if (!first) return;
  first = false;
  if (!saslTwo) fail("logged in without SASL2");
  console.log(`online as ${address} over ${service}, with SASL2`);
  await xmpp.send(xml("presence"));
  for (let i = 0; i < 200 && !(sm.enabled && sm.id); i++) await new Promise((r) => setTimeout(r, 50));
  if (!sm.id) fail("stream management not enabled");
  console.log(`stream management enabled (id ${sm.id})`);
  await xmpp.send(xml("message", { to: peer, type: "chat" }, xml("body", {}, "ready")));
  await new Promise((r) => setTimeout(r, 300));
  dropped = true;
  // No close frame, no </stream>: the TCP connection just ends.
  xmpp.socket.socket.terminate?.() ?? xmpp.socket.socket._socket?.destroy();
  console.log("connection dropped");
});
xmpp.start().catch((err) => fail(`start: ${err.message ?? err}`));
