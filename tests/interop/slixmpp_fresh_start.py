"""What a new user tries first, with a stock client (slixmpp), right after `cargo xtask up --dcs 2`
returns: alice registers at DC 1 and bob at DC 2, both log in and send initial presence, alice
asks bob for a subscription and writes to him; bob must get both at once, not at his next login.
Exits non-zero otherwise. A manual check (docs/testing.md); the multi-DC test
`stored::right_after_a_fresh_start_...` does the same in the suite.

Usage: slixmpp_fresh_start.py PREFIX     (account names PREFIXalice, PREFIXbob)"""
import asyncio, ssl, sys, time
import slixmpp
from slixmpp.exceptions import IqError

DOMAIN, PW, T = "example.com", "fresh-secret", 15
P = sys.argv[1]

class C(slixmpp.ClientXMPP):
    def __init__(self, user):
        super().__init__(f"{user}@{DOMAIN}/fresh", PW)
        self.register_plugin("xep_0077")
        self.plugin["xep_0077"].force_registration = True
        self.add_event_handler("register", self.on_register)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.started = asyncio.get_event_loop().create_future()
        self.subs, self.msgs = asyncio.Queue(), asyncio.Queue()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("presence_subscribe", lambda p: self.subs.put_nowait(p))
        self.add_event_handler("message", lambda m: self.msgs.put_nowait(m))
        self.roster.auto_authorize = None
        self.roster.auto_subscribe = False
    async def on_register(self, _):
        iq = self.Iq(); iq["type"] = "set"
        iq["register"]["username"] = self.boundjid.user; iq["register"]["password"] = self.password
        try: await iq.send()
        except IqError as e:
            if e.iq["error"]["condition"] != "conflict": raise
    async def on_start(self, _):
        await self.get_roster(); self.send_presence(); self.started.set_result(True)
    async def online(self, port):
        self.connect(host="127.0.0.1", port=port); await asyncio.wait_for(self.started, T)

async def main():
    t0 = time.monotonic()
    alice, bob = C(f"{P}alice"), C(f"{P}bob")
    await asyncio.gather(alice.online(5222), bob.online(5232))
    alice.send_presence(pto=f"{P}bob@{DOMAIN}", ptype="subscribe")
    alice.send_message(mto=f"{P}bob@{DOMAIN}", mbody="hello bob", mtype="chat")
    await asyncio.wait_for(bob.subs.get(), T)
    m = await asyncio.wait_for(bob.msgs.get(), T)
    assert m["body"] == "hello bob", m
    print(f"ok: bob got the request and the message ({time.monotonic()-t0:.1f} s after the first connect)")
    alice.disconnect(); bob.disconnect()
asyncio.run(main())
