"""A stock XMPP client library (slixmpp) against a running Meerkat DC:
register -> login -> subscribe -> presence -> chat -> offline delivery -> ping -> disco.

Usage: slixmpp_flow.py HOST PORT DOMAIN PREFIX
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
logging.basicConfig(level=logging.DEBUG if os.environ.get("INTEROP_DEBUG") else logging.ERROR)
PASSWORD = "interop-secret"
TIMEOUT = 15


def step(name):
    print(f"ok: {name}", flush=True)


class Client(slixmpp.ClientXMPP):
    def __init__(self, user, register=False):
        super().__init__(f"{user}@{DOMAIN}/interop", PASSWORD)
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0199")
        self.register_plugin("xep_0203")
        if register:
            self.register_plugin("xep_0077")
            self.plugin["xep_0077"].force_registration = True
            self.add_event_handler("register", self.on_register)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.started = asyncio.get_event_loop().create_future()
        self.messages = asyncio.Queue()
        self.presences = asyncio.Queue()
        self.subscriptions = asyncio.Queue()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", lambda m: self.messages.put_nowait(m))
        self.add_event_handler("presence_available", lambda p: self.presences.put_nowait(p))
        self.add_event_handler("presence_subscribe", lambda p: self.subscriptions.put_nowait(p))
        self.add_event_handler("failed_auth", lambda _: self.started.done() or self.started.set_exception(RuntimeError("auth failed")))
        # Answer subscription requests ourselves, explicitly (None: neither accept nor deny).
        self.roster.auto_authorize = None
        self.roster.auto_subscribe = False

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


async def main():
    alice_name, bob_name = f"{PREFIX}alice", f"{PREFIX}bob"
    alice = Client(alice_name, register=True)
    await alice.online()
    bob = Client(bob_name, register=True)
    await bob.online()
    step("register and login (SCRAM) for two accounts")

    bob_bare, alice_bare = f"{bob_name}@{DOMAIN}", f"{alice_name}@{DOMAIN}"
    alice.send_presence(pto=bob_bare, ptype="subscribe")
    await wait(bob.subscriptions, lambda p: p["from"].bare == alice_bare, "alice's subscription request")
    bob.send_presence(pto=alice_bare, ptype="subscribed")
    bob.send_presence(pto=alice_bare, ptype="subscribe")
    await wait(alice.subscriptions, lambda p: p["from"].bare == bob_bare, "bob's subscription request")
    alice.send_presence(pto=bob_bare, ptype="subscribed")
    step("mutual subscription")

    await wait(alice.presences, lambda p: p["from"].bare == bob_bare, "bob's presence at alice")
    bob.send_presence(pstatus="here")
    await wait(alice.presences, lambda p: p["from"].bare == bob_bare and p["status"] == "here", "bob's new status")
    step("presence")

    alice.send_message(mto=bob.boundjid.full, mbody="hello bob", mtype="chat")
    await wait(bob.messages, lambda m: m["body"] == "hello bob", "chat message")
    bob.send_message(mto=alice_bare, mbody="hello alice", mtype="chat")
    await wait(alice.messages, lambda m: m["body"] == "hello alice", "reply")
    step("chat both ways")

    bob.disconnect()
    await asyncio.wait_for(bob.disconnected, TIMEOUT)
    alice.send_message(mto=bob_bare, mbody="while you were away", mtype="chat")
    await asyncio.sleep(1)
    bob = Client(bob_name)
    await bob.online()
    msg = await wait(bob.messages, lambda m: m["body"] == "while you were away", "offline message")
    if not msg["delay"]["stamp"]:
        raise RuntimeError("offline message without a delay stamp")
    step("offline message delivered at next login, with delay")

    await alice.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)
    await alice.plugin["xep_0199"].ping(jid=bob.boundjid.full, timeout=TIMEOUT)
    step("ping the server and a contact")

    info = await alice.plugin["xep_0030"].get_info(jid=DOMAIN, timeout=TIMEOUT)
    features = info["disco_info"]["features"]
    if "urn:xmpp:ping" not in features:
        raise RuntimeError(f"disco#info lacks ping: {features}")
    step("disco#info on the server")

    alice.disconnect()
    bob.disconnect()
    print("all steps passed", flush=True)


asyncio.run(main())
