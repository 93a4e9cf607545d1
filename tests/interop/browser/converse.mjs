// Converse.js (npm `converse.js`) in a real headless Chromium (Debian's `chromium`, driven by
// `puppeteer-core`): serves index.html and Converse's dist/ on 127.0.0.1, logs in over the
// WebSocket URL given, opens a chat with CONTACT (a bare JID), types a message into the chat box
// and presses Enter, then waits for CONTACT's reply ("hello back") to show in the chat. Prints
// one line per step, then "all steps passed"; exits non-zero on any failure or after 90 s, with
// the browser's console.
//
//   node converse.mjs wss://127.0.0.1:5281/xmpp-websocket USER@DOMAIN PASSWORD CONTACT
//
// CHROMIUM (default /usr/bin/chromium) names the browser. Certificate errors are ignored: test
// DCs have self-signed certificates.
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import puppeteer from "puppeteer-core";

const [ws, jid, password, contact] = process.argv.slice(2);
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
setTimeout(() => fail("timed out after 90 s"), 90_000).unref();

const types = {
  ".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".json": "application/json",
  ".wasm": "application/wasm", ".svg": "image/svg+xml", ".png": "image/png", ".woff2": "font/woff2",
  ".woff": "font/woff", ".ttf": "font/ttf", ".mp3": "audio/mpeg", ".ogg": "audio/ogg",
};
const server = createServer(async (req, res) => {
  const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname));
  const file = path === "/" ? join(here, "index.html")
    : path.startsWith("/dist/") ? join(dist, path.slice("/dist/".length)) : null;
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
const page_url = `${origin}?` +
  new URLSearchParams({ ws, jid, password });

try {
  browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    acceptInsecureCerts: true,
    args: ["--no-sandbox", "--ignore-certificate-errors", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  console.log(`ok: ${await browser.version()} started`);
  const page = await browser.newPage();
  // Everything the page needs is served here: nothing else is fetched (Converse's fullscreen
  // landing page shows sponsor logos from its website), so no run depends on the network.
  await page.setRequestInterception(true);
  page.on("request", (r) => (r.url().startsWith(origin) ? r.continue() : r.abort()));
  page.on("console", (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => consoleLines.push(`page error: ${e.message}`));
  page.on("requestfailed", (r) => consoleLines.push(`request failed: ${r.url()}`));
  page.on("response", (r) => r.status() >= 400 && consoleLines.push(`${r.status()}: ${r.url()}`));
  await page.goto(page_url);
  await page
    .waitForFunction(() => window.meerkat?.connected === true, { timeout: 60_000 })
    .catch(() => { throw new Error("Converse.js did not connect within 60 s"); });
  const bound = await page.evaluate(() => window.meerkat.api.connection.get().jid);
  console.log(`ok: Converse.js connected as ${bound} over ${ws}`);
  await page.evaluate((c) => window.meerkat.api.chats.open(c, {}, true), contact);
  const box = "textarea.chat-textarea";
  await page.waitForSelector(box, { visible: true, timeout: 30_000 });
  await page.type(box, "hello from Converse.js");
  await page.keyboard.press("Enter");
  console.log(`ok: typed a message to ${contact} and pressed Enter`);
  await page.waitForFunction(
    () => [...document.querySelectorAll(".chat-msg__text")].some((e) => e.textContent.includes("hello back")),
    { timeout: 60_000 },
  ).catch(() => { throw new Error("no reply showed in the chat within 60 s"); });
  const got = await page.evaluate(() => window.meerkat.received);
  if (!got.some((m) => m.body === "hello back" && m.from?.startsWith(contact))) {
    await fail(`the reply shown but not from ${contact}: ${JSON.stringify(got)}`);
  }
  console.log(`ok: the reply from ${contact} shows in the chat`);
  await browser.close();
  console.log("all steps passed");
  process.exit(0);
} catch (e) {
  await fail(e?.stack ?? String(e));
}
