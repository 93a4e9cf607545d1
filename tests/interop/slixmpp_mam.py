"""A stock XMPP client library (slixmpp, its XEP-0313 plugin) against two Meerkat DCs: two users
chat at DC 1; a query of the archive at DC 2 returns that conversation, paged, with the ids the
recipient saw as stanza ids (XEP-0359).

Usage: slixmpp_mam.py HOST PORT_DC1 PORT_DC2 DOMAIN PREFIX
Prints one line per step and exits 0 only if every step passed.
"""

import asyncio
import logging
import os
import ssl
import sys

import slixmpp
from slixmpp.exceptions import IqError

HOST, PORT1, PORT2, DOMAIN, PREFIX = (
    sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
logging.basicConfig(level=logging.DEBUG if os.environ.get("INTEROP_DEBUG") else logging.ERROR)
PASSWORD = "interop-secret"
TIMEOUT = 15
SID = "urn:xmpp:sid:0"


def step(name):
    print(f"ok: {name}", flush=True)


class Client(slixmpp.ClientXMPP):
    def __init__(self, user, resource, register=False):
        super().__init__(f"{user}@{DOMAIN}/{resource}", PASSWORD)
        for p in ("xep_0030", "xep_0059", "xep_0297", "xep_0313", "xep_0359"):
            self.register_plugin(p)
        if register:
            self.register_plugin("xep_0077")
            self.plugin["xep_0077"].force_registration = True
            self.add_event_handler("register", self.on_register)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.started = asyncio.get_event_loop().create_future()
        self.messages = asyncio.Queue()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", lambda m: self.messages.put_nowait(m))

    async def on_register(self, _form):
        iq = self.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = self.boundjid.user
        iq["register"]["password"] = self.password
        try:
            await iq.send()
        except IqError as e:
            if e.iq["error"]["condition"] != "conflict":
                raise

    async def on_start(self, _event):
        await self.get_roster()
        self.send_presence()
        if not self.started.done():
            self.started.set_result(True)

    async def online(self, port):
        self.connect(host=HOST, port=port)
        await asyncio.wait_for(self.started, TIMEOUT)


async def wait(queue, pred, what):
    async def loop():
        while True:
            item = await queue.get()
            if pred(item):
                return item
    try:
        return await asyncio.wait_for(loop(), TIMEOUT)
    except asyncio.TimeoutError:
        raise RuntimeError(f"timed out waiting for {what}")


def stanza_id(msg, by):
    for el in msg.xml.findall(f"{{{SID}}}stanza-id"):
        if el.get("by") == by:
            return el.get("id")
    return None


async def archive(client, page):
    """Every archived message as (id, body), oldest first, read in pages of `page`."""
    out = []
    async for m in client.plugin["xep_0313"].iterate(rsm={"max": page}):
        result = m["mam_result"]
        out.append((result["id"], result["forwarded"]["stanza"]["body"]))
    return out


async def main():
    alice_name, bob_name = f"{PREFIX}alice", f"{PREFIX}bob"
    alice = Client(alice_name, "phone", register=True)
    await alice.online(PORT1)
    bob = Client(bob_name, "desk", register=True)
    await bob.online(PORT1)
    bob_bare = f"{bob_name}@{DOMAIN}"
    step("two accounts online at DC 1")

    info = await bob.plugin["xep_0030"].get_info(jid=bob_bare, timeout=TIMEOUT)
    features = info["disco_info"]["features"]
    for f in ("urn:xmpp:mam:2", SID):
        if f not in features:
            raise RuntimeError(f"the account's disco#info lacks {f}: {features}")
    step("the account advertises the archive and stanza ids")

    bodies = [f"message {i}" for i in range(5)]
    seen = []
    for body in bodies:
        alice.send_message(mto=bob_bare, mbody=body, mtype="chat")
        msg = await wait(bob.messages, lambda m, b=body: m["body"] == b, body)
        sid = stanza_id(msg, bob_bare)
        if not sid:
            raise RuntimeError(f"no stanza-id by {bob_bare} on {msg}")
        seen.append(sid)
    step("chat at DC 1, each message with its stanza id")

    here = await archive(bob, 2)
    if here != list(zip(seen, bodies)):
        raise RuntimeError(f"DC 1 archive {here} != {list(zip(seen, bodies))}")
    step("the archive at DC 1, in pages of 2")

    bob2 = Client(bob_name, "tablet")
    await bob2.online(PORT2)
    there = []
    for _ in range(100):
        there = await archive(bob2, 2)
        if len(there) >= len(bodies):
            break
        await asyncio.sleep(0.2)
    if there != list(zip(seen, bodies)):
        raise RuntimeError(f"DC 2 archive {there} != {list(zip(seen, bodies))}")
    step("the archive at DC 2: the same messages, ids and order, paged")

    for c in (alice, bob, bob2):
        c.disconnect()
    print("all steps passed", flush=True)


asyncio.run(main())
