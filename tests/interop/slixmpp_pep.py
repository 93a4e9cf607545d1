"""A stock XMPP client library (slixmpp: its XEP-0060, XEP-0163, XEP-0084, XEP-0115, XEP-0402
and XEP-0048 plugins) against two Meerkat DCs, doing what Conversations, Dino and Gajim do with
PEP: an avatar, an OMEMO device list open to anyone, and bookmarks.

- Alice is at DC 1 (and later also at DC 2), Bob at DC 2, subscribed to each other; Carol at
  DC 2 is a stranger.
- Alice publishes an avatar (XEP-0084 data, then metadata): Bob, whose entity capabilities say
  he wants avatar metadata, is notified at DC 2 and fetches the data there.
- Alice publishes an OMEMO device list with publish-options access_model=open (XEP-0384):
  Carol, not subscribed, fetches it at DC 2; a publish whose options contradict the node's
  configuration gets precondition-not-met (XEP-0060 §7.1.5).
- Alice's XEP-0402 client at DC 1 adds a bookmark with the options XEP-0402 requires; her
  second resource at DC 2 is notified, fetches it, and an XEP-0048 client (private storage,
  XEP-0411) sees the same room.

Usage: slixmpp_pep.py HOST1 PORT1 HOST2 PORT2 DOMAIN ALICE BOB CAROL
The accounts exist at both DCs already (password "secret-pw").
Prints one line per step and exits 0 only if every step passed.
"""

import asyncio
import hashlib
import logging
import os
import ssl
import sys

import slixmpp
from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0004 import Form
from slixmpp.xmlstream import ET

HOST1, PORT1, HOST2, PORT2 = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
DOMAIN, ALICE, BOB, CAROL = sys.argv[5], sys.argv[6], sys.argv[7], sys.argv[8]
logging.basicConfig(level=logging.DEBUG if os.environ.get("INTEROP_DEBUG") else logging.ERROR)
PASSWORD = "secret-pw"
TIMEOUT = 20
# How long data written at one DC may take to be readable at the other (replication lag).
CONVERGE = 15

AVATAR = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
AVATAR_ID = hashlib.sha1(AVATAR).hexdigest()
DEVICES_NODE = "eu.siacs.conversations.axolotl.devicelist"
AXOLOTL = "eu.siacs.conversations.axolotl"
BOOKMARKS = "urn:xmpp:bookmarks:1"
ROOM = f"lounge@conference.{DOMAIN}"


def step(name):
    print(f"ok: {name}", flush=True)


class Client(slixmpp.ClientXMPP):
    def __init__(self, user, resource, host, port, interests=()):
        super().__init__(f"{user}@{DOMAIN}/{resource}", PASSWORD)
        self.host, self.port = host, port
        for p in ("xep_0030", "xep_0060", "xep_0115", "xep_0163", "xep_0084", "xep_0402",
                  "xep_0048", "xep_0049", "xep_0223"):
            self.register_plugin(p)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.interests = interests
        self.started = asyncio.get_event_loop().create_future()
        # Pubsub notifications this client gets, as (node, item id, item payload).
        self.events = asyncio.Queue()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("pubsub_publish", self.on_publish)

    async def on_start(self, _event):
        for ns in self.interests:
            # "+notify" in the entity capabilities (XEP-0163 §4), announced with the presence.
            self.plugin["xep_0163"].add_interest(ns)
        await self.get_roster()
        self.send_presence()
        if not self.started.done():
            self.started.set_result(True)

    def on_publish(self, msg):
        items = msg["pubsub_event"]["items"]
        for item in items["substanzas"]:
            self.events.put_nowait((items["node"], item["id"], item.xml))

    async def online(self):
        self.connect(host=self.host, port=self.port)
        await asyncio.wait_for(self.started, TIMEOUT)


async def wait(queue, pred, what, timeout=TIMEOUT):
    async def loop():
        while True:
            item = await queue.get()
            if pred(item):
                return item
    try:
        return await asyncio.wait_for(loop(), timeout)
    except asyncio.TimeoutError:
        raise RuntimeError(f"timed out waiting for {what}")


async def until(what, attempt, within=CONVERGE):
    """Runs `attempt` every half second until it returns something true."""
    last = None
    for _ in range(within * 2):
        try:
            got = await attempt()
            if got:
                return got
        except IqError as e:
            last = e.iq["error"]["condition"]
        await asyncio.sleep(0.5)
    raise RuntimeError(f"{what}: not within {within} s (last error: {last})")


def options(fields):
    """A publish-options data form (XEP-0060 §7.1.5)."""
    form = Form()
    form["type"] = "submit"
    form.add_field(var="FORM_TYPE", ftype="hidden",
                   value="http://jabber.org/protocol/pubsub#publish-options")
    for var, value in fields.items():
        form.add_field(var=var, value=value)
    return form


async def subscribe_both(a, b):
    """Alice asks Bob; both clients approve and ask back (slixmpp's auto_authorize and
    auto_subscribe); done when each roster says both."""
    a.send_presence_subscription(pto=b.boundjid.bare)

    seen = {}

    async def both():
        seen["a"] = a.client_roster[b.boundjid.bare]["subscription"]
        seen["b"] = b.client_roster[a.boundjid.bare]["subscription"]
        return seen["a"] == "both" and seen["b"] == "both"
    try:
        await until("mutual subscription", both, TIMEOUT)
    except RuntimeError as e:
        raise RuntimeError(f"{e}; rosters say {seen}")


async def main():
    alice_bare = f"{ALICE}@{DOMAIN}"
    alice = Client(ALICE, "desk", HOST1, PORT1)
    bob = Client(BOB, "phone", HOST2, PORT2, interests=("urn:xmpp:avatar:metadata",))
    carol = Client(CAROL, "laptop", HOST2, PORT2)
    # Logged in first: the server learns what her client wants (its caps, verified by a
    # disco#info query) before anything is published.
    desk2 = Client(ALICE, "tablet", HOST2, PORT2, interests=(BOOKMARKS,))
    for c in (alice, bob, carol, desk2):
        await c.online()
    step("Alice logged in at DC 1 and DC 2 (there interested in bookmarks), Bob and Carol at DC 2")

    await subscribe_both(alice, bob)
    step("Alice and Bob subscribed to each other across the DCs")

    # XEP-0084: data first, then the metadata that points at it.
    await alice.plugin["xep_0084"].publish_avatar(AVATAR, timeout=TIMEOUT)
    await alice.plugin["xep_0084"].publish_avatar_metadata(
        {"id": AVATAR_ID, "type": "image/png", "bytes": len(AVATAR)}, timeout=TIMEOUT)
    node, item_id, _ = await wait(
        bob.events, lambda e: e[0] == "urn:xmpp:avatar:metadata", "Bob's avatar notification")
    if item_id != AVATAR_ID:
        raise RuntimeError(f"avatar metadata item {item_id}, not {AVATAR_ID}")
    step("Bob at DC 2 was notified of Alice's avatar published at DC 1")

    got = await bob.plugin["xep_0084"].retrieve_avatar(alice_bare, AVATAR_ID, timeout=TIMEOUT)
    data = got["pubsub"]["items"]["item"]["avatar_data"]["value"]
    if data != AVATAR:
        raise RuntimeError(f"Bob fetched {len(data)} bytes of avatar, not the {len(AVATAR)} published")
    step("Bob fetched the avatar data at DC 2 right after the notification")

    devices = ET.Element(f"{{{AXOLOTL}}}list")
    ET.SubElement(devices, f"{{{AXOLOTL}}}device", {"id": "31415"})
    await alice.plugin["xep_0060"].publish(
        alice_bare, DEVICES_NODE, id="current", payload=devices,
        options=options({"pubsub#access_model": "open"}), timeout=TIMEOUT)

    async def carol_reads():
        iq = await carol.plugin["xep_0060"].get_items(alice_bare, DEVICES_NODE, timeout=TIMEOUT)
        return [d.get("id") for item in iq["pubsub"]["items"]["substanzas"]
                for d in item.xml.iter(f"{{{AXOLOTL}}}device")]
    found = await until("Carol reading Alice's device list at DC 2", carol_reads)
    if found != ["31415"]:
        raise RuntimeError(f"Carol read devices {found}")
    step("Carol, a stranger at DC 2, read Alice's open OMEMO device list")

    try:
        await alice.plugin["xep_0060"].publish(
            alice_bare, DEVICES_NODE, id="current", payload=devices,
            options=options({"pubsub#access_model": "whitelist"}), timeout=TIMEOUT)
        raise RuntimeError("a publish contradicting the node's access model was accepted")
    except IqError as e:
        err = e.iq["error"]
        pre = err.xml.find("{http://jabber.org/protocol/pubsub#errors}precondition-not-met")
        if err["condition"] != "conflict" or pre is None:
            raise RuntimeError(f"contradicting publish-options answered {err['condition']}")
    step("publish-options contradicting the node got conflict/precondition-not-met")

    conference = ET.Element(f"{{{BOOKMARKS}}}conference", {"name": "The Lounge", "autojoin": "true"})
    ET.SubElement(conference, f"{{{BOOKMARKS}}}nick").text = "alice"
    # The options XEP-0402 §3.1 tells clients to publish with.
    await alice.plugin["xep_0060"].publish(
        alice_bare, BOOKMARKS, id=ROOM, payload=conference,
        options=options({
            "pubsub#persist_items": "true",
            "pubsub#max_items": "max",
            "pubsub#send_last_published_item": "never",
            "pubsub#access_model": "whitelist",
        }), timeout=TIMEOUT)
    await wait(desk2.events, lambda e: e[0] == BOOKMARKS and e[1] == ROOM,
               "the bookmark notification at DC 2")
    iq = await desk2.plugin["xep_0060"].get_items(alice_bare, BOOKMARKS, timeout=TIMEOUT)
    ids = [item["id"] for item in iq["pubsub"]["items"]["substanzas"]]
    if ids != [ROOM]:
        raise RuntimeError(f"bookmarks at DC 2: {ids}")
    step("the bookmark added at DC 1 reached the resource at DC 2 and was fetched there")

    legacy = await desk2.plugin["xep_0048"].get_bookmarks(method="xep_0049", timeout=TIMEOUT)
    rooms = [str(c["jid"]) for c in legacy["private"]["bookmarks"]["conferences"]]
    if rooms != [ROOM]:
        raise RuntimeError(f"XEP-0048 bookmarks at DC 2: {rooms}")
    step("an XEP-0048 client at DC 2 sees the same room through private storage (XEP-0411)")

    try:
        await bob.plugin["xep_0060"].get_items(alice_bare, BOOKMARKS, timeout=TIMEOUT)
        raise RuntimeError("Bob read Alice's whitelisted bookmarks")
    except IqError as e:
        # XEP-0060 §6.5.9.6: not on the whitelist.
        err = e.iq["error"]
        closed = err.xml.find("{http://jabber.org/protocol/pubsub#errors}closed-node")
        if err["condition"] != "not-allowed" or closed is None:
            raise RuntimeError(f"Bob's bookmark read answered {err['condition']}")
    step("Bob cannot read Alice's bookmarks (not-allowed, closed-node)")

    for c in (alice, bob, carol, desk2):
        c.disconnect()
    print("all steps passed", flush=True)


asyncio.run(main())
