"""A stock XMPP client library (slixmpp, its XEP-0198 plugin) against a running Meerkat DC:
stream management is enabled, the TCP connection drops without a stream close, the client
reconnects and resumes; it gets every message sent meanwhile exactly once and in order, and
its contact never sees it go offline. With a second port (another gateway of the DC, or a
gateway of another DC: WHERE2 names it), it drops again and resumes there (the session moves),
then once more back at the first, with the same resumption id.

Usage: slixmpp_sm.py HOST PORT DOMAIN PREFIX [PORT2 [WHERE2]]
Prints one line per step and exits 0 only if every step passed.
"""

import asyncio
import logging
import os
import ssl
import sys

import slixmpp
from slixmpp.exceptions import IqError

HOST, PORT, DOMAIN, PREFIX = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
PORT2 = int(sys.argv[5]) if len(sys.argv) > 5 else None
WHERE2 = sys.argv[6] if len(sys.argv) > 6 else "at another gateway"
logging.basicConfig(level=logging.DEBUG if os.environ.get("INTEROP_DEBUG") else logging.ERROR)
PASSWORD = "interop-secret"
TIMEOUT = 15


def step(name):
    print(f"ok: {name}", flush=True)


class Client(slixmpp.ClientXMPP):
    def __init__(self, user, sm=False):
        super().__init__(f"{user}@{DOMAIN}/interop", PASSWORD)
        self.register_plugin("xep_0077")
        self.plugin["xep_0077"].force_registration = True
        self.add_event_handler("register", self.on_register)
        if sm:
            self.register_plugin("xep_0198")
            # A mobile client: a lost connection is not the end of the session.
            self.end_session_on_disconnect = False
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        loop = asyncio.get_event_loop()
        self.started = loop.create_future()
        self.sm_enabled = loop.create_future()
        self.resumed = loop.create_future()
        self.messages = asyncio.Queue()
        self.presences = asyncio.Queue()
        self.unavailable = []
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("sm_enabled", lambda _: self.sm_enabled.done() or self.sm_enabled.set_result(True))
        self.add_event_handler("session_resumed", lambda _: self.resumed.done() or self.resumed.set_result(True))
        self.add_event_handler("message", lambda m: self.messages.put_nowait(m))
        self.add_event_handler("presence_available", lambda p: self.presences.put_nowait(p))
        self.add_event_handler("presence_unavailable", lambda p: self.unavailable.append(p))
        self.roster.auto_authorize = True
        self.roster.auto_subscribe = True

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

    async def online(self):
        self.connect(host=HOST, port=PORT)
        await asyncio.wait_for(self.started, TIMEOUT)


async def bodies(queue, quiet):
    out = []
    while True:
        try:
            m = await asyncio.wait_for(queue.get(), quiet)
        except asyncio.TimeoutError:
            return out
        if m["body"]:
            out.append(m["body"])


async def main():
    alice_name, bob_name = f"{PREFIX}alice", f"{PREFIX}bob"
    alice = Client(alice_name)
    await alice.online()
    bob = Client(bob_name, sm=True)
    await bob.online()
    await asyncio.wait_for(bob.sm_enabled, TIMEOUT)
    if not bob.plugin["xep_0198"].sm_id:
        raise RuntimeError("stream management enabled without a resumption id")
    step("stream management enabled with resumption")

    bob_bare, alice_bare = f"{bob_name}@{DOMAIN}", f"{alice_name}@{DOMAIN}"
    alice.send_presence(pto=bob_bare, ptype="subscribe")
    async def bob_seen():
        while True:
            p = await alice.presences.get()
            if p["from"].bare == bob_bare:
                return
    await asyncio.wait_for(bob_seen(), TIMEOUT)
    step("alice sees bob")

    before = [f"before {i}" for i in range(3)]
    for b in before:
        alice.send_message(mto=bob.boundjid.full, mbody=b, mtype="chat")
    got = await bodies(bob.messages, 2)
    if got != before:
        raise RuntimeError(f"before the drop bob got {got}")
    step("messages before the drop")

    # The network goes away: no stream close, the socket is just gone.
    async def drop_and_resume(port, where):
        bob.resumed = asyncio.get_event_loop().create_future()
        bob.abort()
        await asyncio.sleep(0.5)
        meanwhile = [f"meanwhile {where} {i}" for i in range(5)]
        for b in meanwhile:
            alice.send_message(mto=bob.boundjid.full, mbody=b, mtype="chat")
        await asyncio.sleep(0.5)
        bob.connect(host=HOST, port=port)
        await asyncio.wait_for(bob.resumed, TIMEOUT)
        step(f"resumed {where}")
        got = await bodies(bob.messages, 2)
        if got != meanwhile:
            raise RuntimeError(f"after resuming {where} bob got {got}, wanted {meanwhile}")
        step(f"every message sent meanwhile, once, in order ({where})")

    await drop_and_resume(PORT, "at the same gateway")
    if PORT2 is not None:
        await drop_and_resume(PORT2, WHERE2)
        await drop_and_resume(PORT, "back where it started")

    alice.send_message(mto=bob.boundjid.full, mbody="after", mtype="chat")
    got = await bodies(bob.messages, 2)
    if got != ["after"]:
        raise RuntimeError(f"after resumption bob got {got}")
    if any(p["from"].bare == bob_bare for p in alice.unavailable):
        raise RuntimeError("alice saw bob go offline")
    step("the same session goes on; alice saw no flap")

    alice.disconnect()
    bob.disconnect()
    print("all steps passed", flush=True)


asyncio.run(main())
