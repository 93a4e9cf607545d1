// Two Converse.js users (npm `converse.js`) in a real headless Chromium (Debian's `chromium`,
// driven by `puppeteer-core`), each in a browser context of its own (own storage, own
// session): A logs in over WebSocket, finding the endpoint by XEP-0156 discovery (Converse
// fetches https://DOMAIN/.well-known/host-meta; the browser resolves DOMAIN to DISCOVER_AT, a
// gateway's HTTPS listener), B over BOSH at BOSH_URL. A adds B as a contact, B accepts in
// Converse's contact-request dialog and asks A back (A's Converse approves that itself), and
// both rosters must show the other with subscription `both`, in Converse's roster and on the
// page. Then each types a message to the other into the chat box and the test reads it from
// the other page's chat. A screenshot of each page goes to SHOTS (a directory). Prints one line
// per step, then "all steps passed"; exits non-zero on any failure or after 150 s, with the
// browsers' consoles.
//
//   node converse.mjs DOMAIN DISCOVER_AT BOSH_URL USER_A USER_B PASSWORD SHOTS
//   node converse.mjs example.com 127.0.0.1:5281 https://127.0.0.1:5291/http-bind \
//       alice bob secret target/browser-screenshots
//
// CHROMIUM (default /usr/bin/chromium) names the browser. Certificate errors are ignored: test
// DCs have self-signed certificates.
import { createServer } from "node:http";
import { mkdir, readFile } from "node:fs/promises";
import { extname, join, normalize, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import puppeteer from "puppeteer-core";

const [domain, discoverAt, bosh, userA, userB, password, shots] = process.argv.slice(2);
const [jidA, jidB] = [`${userA}@${domain}`, `${userB}@${domain}`];
const here = fileURLToPath(new URL(".", import.meta.url));
const dist = join(here, "node_modules/converse.js/dist");
const consoleLines = [];
let browser;

let failed = false;
const fail = async (why) => {
  if (failed) return;
  failed = true;
  console.error(`failed: ${why}`);
  console.error(`browser console:\n${consoleLines.join("\n")}`);
  await browser?.close().catch(() => {});
  process.exit(1);
};
setTimeout(() => fail("timed out after 150 s"), 150_000).unref();

const types = {
  ".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".json": "application/json",
  ".wasm": "application/wasm", ".svg": "image/svg+xml", ".png": "image/png", ".woff2": "font/woff2",
  ".woff": "font/woff", ".ttf": "font/ttf", ".mp3": "audio/mpeg", ".ogg": "audio/ogg",
};
const server = createServer(async (req, res) => {
  const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname));
  const file = path === "/" ? join(here, "index.html")
    : path.startsWith("/dist/") ? join(dist, path.slice("/dist/".length))
    // OMEMO's library asks for its WebAssembly at the root.
    : path === "/curve25519_compiled.wasm" ? join(dist, path.slice(1)) : null;
  try {
    if (!file || !file.startsWith(here)) throw new Error("not here");
    const body = await readFile(file);
    res.writeHead(200, { "content-type": types[extname(file)] ?? "application/octet-stream" });
    res.end(body);
  } catch {
    res.writeHead(404).end();
  }
});
await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
server.unref();
const origin = `http://127.0.0.1:${server.address().port}/`;

/// A page of its own browser context, logged in as `jid`; `how` is the query's connection
/// setting (`{ bosh }`, or `{}` for discovery). Resolves when Converse says it is connected.
async function open(name, jid, how) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  await page.setViewport({ width: 1280, height: 800 });
  // Only the local page, Converse's dist and the XMPP endpoints are fetched (Converse's
  // fullscreen landing page shows sponsor logos from its website): no run needs the network.
  await page.setRequestInterception(true);
  const allowed = [origin, `https://${domain}/`, bosh];
  page.on("request", (r) => (allowed.some((a) => r.url().startsWith(a)) ? r.continue() : r.abort()));
  page.on("console", (m) => consoleLines.push(`${name} ${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => consoleLines.push(`${name} page error: ${e.message}`));
  page.on("requestfailed", (r) => consoleLines.push(`${name} request failed: ${r.url()}`));
  page.on("response", (r) => r.status() >= 400 && consoleLines.push(`${name} ${r.status()}: ${r.url()}`));
  await page.goto(`${origin}?${new URLSearchParams({ jid, password, ...how })}`);
  await page
    .waitForFunction(() => window.meerkat?.connected === true, { timeout: 60_000 })
    .catch(() => { throw new Error(`${name}: Converse.js did not connect within 60 s`); });
  const [bound, kind, service] = await page.evaluate(() => {
    const c = window.meerkat.api.connection;
    return [c.get().jid, c.isType("websocket") ? "WebSocket" : "BOSH", c.get().service];
  });
  console.log(`ok: ${name} connected as ${bound} over ${kind} at ${service}`);
  return { page, kind, service };
}

/// Waits until `page`'s roster has `jid` with a subscription of `wanted`, and the roster on
/// the page lists `name`; returns the subscription.
async function subscribed(page, who, jid, name, wanted) {
  await page.waitForFunction(
    (jid, name, wanted) => {
      const contact = window.meerkat.converse.state.roster?.get(jid);
      const shown = [...document.querySelectorAll("converse-roster-contact")]
        .some((e) => e.textContent.includes(name));
      return wanted.includes(contact?.get("subscription")) && shown;
    },
    { timeout: 30_000 }, jid, name, wanted,
  ).catch(async () => {
    throw new Error(`${who}'s roster: ${jid} not shown with subscription ${wanted.join(" or ")} within 30 s (${JSON.stringify(await state(page, jid))})`);
  });
  const got = await state(page, jid);
  console.log(`ok: ${who}'s roster shows ${jid} (${name}): ${JSON.stringify(got)}`);
  return got.subscription;
}

/// `jid`'s roster item in `page`'s Converse.
async function state(page, jid) {
  return page.evaluate((jid) => {
    const c = window.meerkat.converse.state.roster?.get(jid);
    return c ? { subscription: c.get("subscription"), ask: c.get("ask") ?? null, requesting: c.get("requesting") ?? null } : null;
  }, jid);
}

/// Types `text` into `page`'s chat with `to` and presses Enter.
async function say(page, who, to, text) {
  await page.evaluate((c) => window.meerkat.api.chats.open(c, {}, true), to);
  const box = "textarea.chat-textarea";
  await page.waitForSelector(box, { visible: true, timeout: 30_000 });
  await page.type(box, text);
  await page.keyboard.press("Enter");
  console.log(`ok: ${who} typed "${text}" to ${to} and pressed Enter`);
}

/// Waits until `text` shows in `page`'s chat, and was received from `from`.
async function reads(page, who, from, text) {
  // First the stanza: Converse has then made the chat for it and queued the message there.
  // Opening the chat before that races Converse's own creation of it (both make a chat
  // model for `from`; the message can land in the one that is dropped), which a user who
  // clicks the contact once the message arrived never meets.
  await page.waitForFunction(
    (text) => window.meerkat.received.some((m) => m.body === text),
    { timeout: 60_000 }, text,
  ).catch(() => { throw new Error(`${who}: "${text}" was not received within 60 s`); });
  // The chat with `from` in view, as the user would click it in the roster.
  await page.evaluate((c) => window.meerkat.api.chats.open(c, {}, true), from);
  await page.waitForFunction(
    (text) => [...document.querySelectorAll(".chat-msg__text")].some((e) => e.textContent.includes(text)),
    { timeout: 60_000 }, text,
  ).catch(async () => {
    const got = await page.evaluate(() => window.meerkat.received);
    throw new Error(`${who}: "${text}" did not show in the chat within 60 s (received: ${JSON.stringify(got)})`);
  });
  const got = await page.evaluate(() => window.meerkat.received);
  if (!got.some((m) => m.body === text && m.from?.startsWith(from))) {
    throw new Error(`${who}: "${text}" shown but not received from ${from}: ${JSON.stringify(got)}`);
  }
  console.log(`ok: ${who}'s page shows "${text}" from ${from}`);
}

try {
  browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    acceptInsecureCerts: true,
    args: [
      "--no-sandbox", "--ignore-certificate-errors", "--disable-gpu", "--disable-dev-shm-usage",
      // The XMPP domain's HTTPS (discovery, then the WebSocket it names) is the gateway's.
      `--host-resolver-rules=MAP ${domain} ${discoverAt}`,
    ],
  });
  console.log(`ok: ${await browser.version()} started; ${domain} resolves to ${discoverAt}`);
  const a = await open("A", jidA, {});
  if (a.kind !== "WebSocket" || !a.service.startsWith(`wss://${domain}/`)) {
    throw new Error(`A should use the WebSocket host-meta names, not ${a.kind} at ${a.service}`);
  }
  const b = await open("B", jidB, { bosh });
  if (b.kind !== "BOSH") throw new Error(`B should use BOSH, not ${b.kind}`);

  // A adds B (a roster push and a subscription request, as Converse's "Add a contact" does).
  await a.page.evaluate((jid) => window.meerkat.api.contacts.add({ jid, name: "bob" }), jidB);
  console.log(`ok: A added ${jidB} as a contact`);
  // B sees the request and accepts it in the dialog the roster's "Accept" opens.
  await b.page.waitForFunction(
    (jid) => window.meerkat.converse.state.roster?.get(jid)?.get("requesting") === true,
    { timeout: 30_000 }, jidA,
  ).catch(() => { throw new Error(`B: no contact request from ${jidA} within 30 s`); });
  console.log(`ok: B got a contact request from ${jidA}`);
  await b.page.evaluate((jid) => {
    const contact = window.meerkat.converse.state.roster.get(jid);
    window.meerkat.api.modal.show("converse-accept-contact-request-modal", { contact });
  }, jidA);
  const form = "converse-accept-contact-request-modal form";
  await b.page.waitForSelector(`${form} input[name="name"]`, { visible: true, timeout: 30_000 });
  await b.page.type(`${form} input[name="name"]`, "alice");
  await b.page.click(`${form} button[type="submit"]`);
  console.log("ok: B accepted the request in Converse's dialog");
  // The dialog means to ask back too (`contact.authorize().subscribe()`), but Converse 14.0.0's
  // contact has no such `subscribe` (it has `subscribeToPresence`), so nothing is sent. B asks
  // A back the way the contact's own method does, once the approval is on its way.
  await b.page.waitForFunction(
    (jid) => window.meerkat.converse.state.roster?.get(jid)?.get("requesting") === false,
    { timeout: 30_000 }, jidA,
  ).catch(() => { throw new Error(`B: the request from ${jidA} still pending after accepting it`); });
  const askedBack = await b.page.evaluate((jid) => {
    const contact = window.meerkat.converse.state.roster.get(jid);
    if (contact.get("ask") === "subscribe") return "by the dialog";
    contact.subscribeToPresence();
    return "with the contact's subscribeToPresence()";
  }, jidA);
  console.log(`ok: B asked A back ${askedBack}`);
  await subscribed(a.page, "A", jidB, "bob", ["both"]);
  await subscribed(b.page, "B", jidA, "alice", ["both"]);


  await say(a.page, "A", jidB, "hello from A over WebSocket");
  await reads(b.page, "B", jidA, "hello from A over WebSocket");
  await say(b.page, "B", jidA, "hello from B over BOSH");
  await reads(a.page, "A", jidB, "hello from B over BOSH");

  await mkdir(shots, { recursive: true });
  for (const [name, p] of [["A-websocket", a.page], ["B-bosh", b.page]]) {
    const path = resolve(shots, `converse-${name}.png`);
    await p.screenshot({ path });
    console.log(`screenshot: ${path}`);
  }
  await browser.close();
  console.log("all steps passed");
  process.exit(0);
} catch (e) {
  await fail(e?.stack ?? String(e));
}
