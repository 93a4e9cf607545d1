"""A stock XMPP client library (slixmpp, its XEP-0191 plugin) against two Meerkat DCs: the user
at DC 2 blocks a contact logged in at DC 1; the block is pushed to the user's other resource
(at DC 1) and listed; the contact's messages then get service-unavailable and never reach the
user; the user's own message to the contact gets not-acceptable; after unblocking, the contact
reaches the user again.

Usage: slixmpp_blocking.py HOST PORT_DC1 PORT_DC2 DOMAIN USER CONTACT PASSWORD
(both accounts exist at both DCs). Prints one line per step and exits 0 only if every step
passed.
"""

import asyncio
import logging
import os
import ssl
import sys

import slixmpp

HOST, PORT1, PORT2, DOMAIN = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
USER, CONTACT, PASSWORD = sys.argv[5], sys.argv[6], sys.argv[7]
logging.basicConfig(level=logging.DEBUG if os.environ.get("INTEROP_DEBUG") else logging.ERROR)
TIMEOUT = 15
# How long a block made at DC 2 may take to be enforced at DC 1 (data replication).
CONVERGE = 30


def step(name):
    print(f"ok: {name}", flush=True)


class Client(slixmpp.ClientXMPP):
    def __init__(self, user, resource, port):
        super().__init__(f"{user}@{DOMAIN}/{resource}", PASSWORD)
        self.port = port
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0191")
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.started = asyncio.get_event_loop().create_future()
        self.messages = asyncio.Queue()
        self.errors = asyncio.Queue()
        self.blocked = asyncio.Queue()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("message_error", lambda m: self.errors.put_nowait(m))
        self.add_event_handler("blocked", lambda iq: self.blocked.put_nowait(iq))
        self.add_event_handler("failed_auth", lambda _: self.started.done() or self.started.set_exception(RuntimeError("auth failed")))

    def on_message(self, m):
        if m["type"] != "error":
            self.messages.put_nowait(m)

    async def on_start(self, _event):
        await self.get_roster()
        # Asking for the block list makes this resource one the pushes go to.
        await self.plugin["xep_0191"].get_blocked_jids(timeout=TIMEOUT)
        self.send_presence()
        if not self.started.done():
            self.started.set_result(True)

    async def online(self):
        self.connect(host=HOST, port=self.port)
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


def drain(queue):
    while not queue.empty():
        queue.get_nowait()


async def refused(sender, to, body, condition, within):
    """Sends `body` again every second until it comes back as an error `condition`."""
    for n in range(within):
        mid = f"{body}-{n}"
        msg = sender.make_message(mto=to, mbody=body, mtype="chat")
        msg["id"] = mid
        msg.send()
        try:
            err = await wait(sender.errors, lambda m: m["id"] == mid, f"the error to {mid}", 1)
            if err["error"]["condition"] != condition:
                raise RuntimeError(f"{mid}: {err['error']['condition']}, not {condition}")
            return err
        except RuntimeError as e:
            if "timed out" not in str(e):
                raise
    raise RuntimeError(f"{body} never refused with {condition} within {within} s")


async def main():
    user_bare, contact_bare = f"{USER}@{DOMAIN}", f"{CONTACT}@{DOMAIN}"
    phone = Client(USER, "phone", PORT2)
    desk = Client(USER, "desk", PORT1)
    eve = Client(CONTACT, "laptop", PORT1)
    for c in (phone, desk, eve):
        await c.online()
    step("the user logged in at DC 2 and DC 1, the contact at DC 1")

    info = await phone.plugin["xep_0030"].get_info(jid=DOMAIN, timeout=TIMEOUT)
    if "urn:xmpp:blocking" not in info["disco_info"]["features"]:
        raise RuntimeError("disco#info lacks urn:xmpp:blocking")
    step("the server advertises blocking")

    eve.send_message(mto=user_bare, mbody="before the block", mtype="chat")
    await wait(phone.messages, lambda m: m["body"] == "before the block", "the contact's first message")
    step("the contact reaches the user")

    await phone.plugin["xep_0191"].block(contact_bare, timeout=TIMEOUT)
    await wait(desk.blocked, lambda iq: True, "the block push at DC 1")
    blocked = await phone.plugin["xep_0191"].get_blocked_jids(timeout=TIMEOUT)
    if {str(j) for j in blocked} != {contact_bare}:
        raise RuntimeError(f"block list {blocked}")
    step("blocked at DC 2, pushed to the resource at DC 1, listed")

    # Eve's messages are routed at DC 1: refused once the block has replicated there.
    await refused(eve, user_bare, "let me in", "service-unavailable", CONVERGE)
    drain(phone.messages)
    drain(desk.messages)
    msg = eve.make_message(mto=user_bare, mbody="still blocked", mtype="chat")
    msg["id"] = "still-blocked"
    msg.send()
    err = await wait(eve.errors, lambda m: m["id"] == "still-blocked", "the error to a blocked message")
    if err["error"]["condition"] != "service-unavailable":
        raise RuntimeError(f"blocked message answered {err['error']['condition']}")
    await asyncio.sleep(1)
    for c in (phone, desk):
        while not c.messages.empty():
            m = c.messages.get_nowait()
            if m["from"].bare == contact_bare and m["body"] in ("let me in", "still blocked"):
                raise RuntimeError(f"a blocked message reached {c.boundjid}: {m['body']}")
    step("the blocked contact at DC 1 gets service-unavailable and never reaches the user")

    out = phone.make_message(mto=contact_bare, mbody="to a blocked contact", mtype="chat")
    out["id"] = "to-blocked"
    out.send()
    err = await wait(phone.errors, lambda m: m["id"] == "to-blocked", "the error to the user's message")
    if err["error"]["condition"] != "not-acceptable":
        raise RuntimeError(f"the user's message to a blocked contact answered {err['error']['condition']}")
    step("the user's message to the blocked contact gets not-acceptable")

    await phone.plugin["xep_0191"].unblock(contact_bare, timeout=TIMEOUT)
    async def reaches():
        for n in range(CONVERGE):
            eve.send_message(mto=user_bare, mbody=f"after the unblock {n}", mtype="chat")
            try:
                await wait(phone.messages, lambda m: m["body"].startswith("after the unblock"), "a message after the unblock", 1)
                return
            except RuntimeError:
                pass
        raise RuntimeError("the contact never reached the user after the unblock")
    await reaches()
    step("unblocked: the contact reaches the user again")

    for c in (phone, desk, eve):
        c.disconnect()
    print("all steps passed", flush=True)


asyncio.run(main())
