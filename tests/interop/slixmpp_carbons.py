"""A stock XMPP client library (slixmpp, its XEP-0280 plugin) against two Meerkat DCs: Alice
has one resource at each DC, both with carbons enabled; Bob talks with each of them. Every
message of the conversation reaches Alice's other resource exactly once, as a carbon: what Bob
sends as `received`, what the other resource sends as `sent`.

Usage: slixmpp_carbons.py HOST1 PORT1 HOST2 PORT2 DOMAIN ALICE BOB
The accounts exist at both DCs already (password "secret-pw").
Prints one line per step and exits 0 only if every step passed.
"""

import asyncio
import logging
import os
import ssl
import sys

import slixmpp

HOST1, PORT1, HOST2, PORT2 = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
DOMAIN, ALICE, BOB = sys.argv[5], sys.argv[6], sys.argv[7]
logging.basicConfig(level=logging.DEBUG if os.environ.get("INTEROP_DEBUG") else logging.ERROR)
PASSWORD = "secret-pw"
TIMEOUT = 20
QUIET = 2


def step(name):
    print(f"ok: {name}", flush=True)


class Client(slixmpp.ClientXMPP):
    def __init__(self, user, resource, host, port):
        super().__init__(f"{user}@{DOMAIN}/{resource}", PASSWORD)
        self.host, self.port = host, port
        self.register_plugin("xep_0280")
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.started = asyncio.get_event_loop().create_future()
        # Everything this client reads, as ("msg"|"received"|"sent", body).
        self.seen = asyncio.Queue()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("carbon_received", lambda m: self.carbon("received", m))
        self.add_event_handler("carbon_sent", lambda m: self.carbon("sent", m))

    async def on_start(self, _event):
        await self.get_roster()
        self.send_presence()
        if not self.started.done():
            self.started.set_result(True)

    def on_message(self, m):
        # A carbon is a message too; the plugin's events report it.
        if m.xml.find("{urn:xmpp:carbons:2}received") is not None:
            return
        if m.xml.find("{urn:xmpp:carbons:2}sent") is not None:
            return
        if m["body"]:
            self.seen.put_nowait(("msg", m["body"]))

    def carbon(self, side, m):
        inner = m["carbon_received"] if side == "received" else m["carbon_sent"]
        self.seen.put_nowait((side, inner["body"]))

    async def online(self):
        self.connect(host=self.host, port=self.port)
        await asyncio.wait_for(self.started, TIMEOUT)


async def drain(c, quiet=QUIET):
    out = []
    while True:
        try:
            out.append(await asyncio.wait_for(c.seen.get(), quiet))
        except asyncio.TimeoutError:
            return sorted(out)


async def until(c, want, limit=TIMEOUT):
    """Reads until `want` arrives; everything read before it is returned too."""
    out = []
    while True:
        got = await asyncio.wait_for(c.seen.get(), limit)
        out.append(got)
        if got == want:
            return out


async def main():
    one = Client(ALICE, "one", HOST1, PORT1)
    two = Client(ALICE, "two", HOST2, PORT2)
    bob = Client(BOB, "desk", HOST2, PORT2)
    for c in (one, two, bob):
        await c.online()
    for c in (one, two):
        await c.plugin["xep_0280"].enable(timeout=TIMEOUT)
    step("alice online at both DCs with carbons, bob at DC 2")

    # Each DC learns the other's flag by session replication: probe until it has.
    async def converge(sender, to, watcher, want_side):
        for n in range(100):
            body = f"probe {n}"
            sender.send_message(mto=to, mbody=body, mtype="chat")
            try:
                await until(watcher, (want_side, body), limit=0.5)
                return
            except asyncio.TimeoutError:
                continue
        raise RuntimeError(f"no {want_side} carbon of a probe")

    await converge(bob, one.boundjid.full, two, "received")
    await converge(one, bob.boundjid.full, two, "sent")
    await converge(bob, two.boundjid.full, one, "received")
    await converge(two, bob.boundjid.full, one, "sent")
    for c in (one, two, bob):
        await drain(c)
    step("both DCs know both resources' carbons")

    bob.send_message(mto=one.boundjid.full, mbody="bob to one", mtype="chat")
    two.send_message(mto=bob.boundjid.full, mbody="two to bob", mtype="chat")
    one.send_message(mto=bob.boundjid.full, mbody="one to bob", mtype="chat")
    bob.send_message(mto=two.boundjid.full, mbody="bob to two", mtype="chat")
    got = {name: await drain(c) for name, c in (("one", one), ("two", two), ("bob", bob))}
    want = {
        "one": sorted([("msg", "bob to one"), ("sent", "two to bob"), ("received", "bob to two")]),
        "two": sorted([("received", "bob to one"), ("sent", "one to bob"), ("msg", "bob to two")]),
        "bob": sorted([("msg", "two to bob"), ("msg", "one to bob")]),
    }
    if got != want:
        raise RuntimeError(f"got {got}, wanted {want}")
    step("each side of the conversation once at each of alice's resources")

    await two.plugin["xep_0280"].disable(timeout=TIMEOUT)
    bob.send_message(mto=one.boundjid.full, mbody="after disable", mtype="chat")
    # Bob's own DC routes it: what the carbon would have followed, the barrier follows.
    bob.send_message(mto=two.boundjid.full, mbody="barrier", mtype="chat")
    got = await until(two, ("msg", "barrier"))
    if got != [("msg", "barrier")]:
        raise RuntimeError(f"after disabling, two got {got}")
    step("disabled: no more carbons")

    for c in (one, two, bob):
        c.disconnect()
    print("all steps passed", flush=True)


asyncio.run(main())
