// Strophe.js (npm `strophe.js`, its Node build) over BOSH (XEP-0124/0206): finds the BOSH URL by
// XEP-0156 discovery (https://HOST/.well-known/host-meta.json, the `urn:xmpp:alt-connections:xbosh`
// link; Strophe has no resolver of its own), logs in as JID, sends a message to PEER (a full JID),
// waits for PEER's reply, disconnects. Prints one line per step, then "all steps passed"; exits
// non-zero on any failure or after 60 s.
//
//   node bosh.mjs 127.0.0.1:5291 USER@DOMAIN PASSWORD PEER
//
// (A self-signed certificate needs NODE_TLS_REJECT_UNAUTHORIZED=0.)
import XHR2 from "xhr2";
import { Strophe, $msg, $pres } from "strophe.js";

// Node has no XMLHttpRequest, which Strophe's BOSH uses: `xhr2` stands in, with the parsed
// `responseXML` Strophe reads (the DOMParser is the one Strophe's Node build installs).
class XMLHttpRequest extends XHR2 {
  get responseXML() {
    return this.responseText ? new DOMParser().parseFromString(this.responseText, "text/xml") : null;
  }
}
globalThis.XMLHttpRequest = XMLHttpRequest;

const [host, jid, password, peer] = process.argv.slice(2);
const fail = (why) => {
  console.error(`failed: ${why}`);
  process.exit(1);
};
setTimeout(() => fail("timed out after 60 s"), 60_000).unref();

const meta = `https://${host}/.well-known/host-meta.json`;
const links = (await (await fetch(meta)).json()).links ?? [];
const service = links.find((l) => l.rel === "urn:xmpp:alt-connections:xbosh")?.href;
if (!service) fail(`no BOSH link in ${meta}: ${JSON.stringify(links)}`);
console.log(`discovered at ${meta}: ${service}`);

const conn = new Strophe.Connection(service);
let replied = false;
conn.addHandler(
  (stanza) => {
    const body = stanza.getElementsByTagName("body")[0]?.textContent;
    if (body !== "hello back") return true;
    const from = stanza.getAttribute("from");
    if (from !== peer) fail(`reply from ${from}`);
    console.log("received the reply");
    replied = true;
    conn.disconnect("done");
    return false;
  },
  null,
  "message",
);
conn.connect(jid, password, (status, condition) => {
  const S = Strophe.Status;
  if (status === S.CONNECTED) {
    console.log(`online as ${conn.jid} over BOSH at ${service}`);
    conn.send($pres());
    conn.send($msg({ to: peer, type: "chat" }).c("body").t("hello from Strophe.js"));
    console.log(`sent a message to ${peer}`);
  } else if (status === S.DISCONNECTED) {
    if (!replied) fail(`disconnected before the reply (${condition ?? "no condition"})`);
    console.log("all steps passed");
    process.exit(0);
  } else if ([S.CONNFAIL, S.AUTHFAIL, S.ERROR, S.CONNTIMEOUT].includes(status)) {
    fail(`connection status ${status} (${condition ?? "no condition"})`);
  }
});
