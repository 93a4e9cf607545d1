"""A stock XMPP client library (slixmpp: its XEP-0045, XEP-0313, XEP-0359 and XEP-0199 plugins)
against two Meerkat DCs, doing what group chat clients do with a room whose users are at both DCs.

- Alice at DC 1 creates the room (join, then the configuration form fetched and submitted as
  it came: the default configuration); Bob at DC 2 and Carol at DC 1 join.
- All three speak, interleaved; each sees every message, in one order, with the same
  `<stanza-id by='room'/>` ids.
- Bob changes his nick: Alice and Carol see 303 with the new nick, then the new nick.
- Alice kicks Carol: Carol sees 307 (with 110) and can no longer speak; Alice and Bob see
  her leave with 307.
- The room's archive (MAM) asked by Alice at DC 1 and by Bob at DC 2: the messages seen live,
  same ids, same order.
- Dave joins at DC 2 afterwards and gets the history, with `<delay from='room'/>`, the same
  ids and order.

Usage: slixmpp_muc.py HOST1 PORT1 HOST2 PORT2 DOMAIN ROOM ALICE BOB CAROL DAVE
The accounts exist at both DCs already (password "secret-pw"); ROOM is a new room's bare JID.
Prints one line per step and exits 0 only if every step passed.
"""

import asyncio
import logging
import os
import ssl
import sys

import slixmpp
from slixmpp import JID
from slixmpp.exceptions import IqError, IqTimeout

HOST1, PORT1, HOST2, PORT2 = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
DOMAIN, ROOM = sys.argv[5], JID(sys.argv[6])
ALICE, BOB, CAROL, DAVE = sys.argv[7:11]
logging.basicConfig(level=logging.DEBUG if os.environ.get("INTEROP_DEBUG") else logging.ERROR)
PASSWORD = "secret-pw"
TIMEOUT = 20
# How long a session opened at one DC may take to be known at the other (replication lag).
CONVERGE = 15
SID = "urn:xmpp:sid:0"


def step(name):
    print(f"ok: {name}", flush=True)


def stanza_id(msg):
    """The id the room gave the message (XEP-0359 `<stanza-id by='room'/>`)."""
    for el in msg.xml.findall(f"{{{SID}}}stanza-id"):
        if el.get("by") == ROOM.bare:
            return el.get("id")
    return None


class Client(slixmpp.ClientXMPP):
    def __init__(self, user, resource, host, port):
        super().__init__(f"{user}@{DOMAIN}/{resource}", PASSWORD)
        self.host, self.port = host, port
        for p in ("xep_0030", "xep_0045", "xep_0059", "xep_0199", "xep_0203", "xep_0313",
                  "xep_0359"):
            self.register_plugin(p)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.started = asyncio.get_event_loop().create_future()
        # Live groupchat messages from the room, as (nick, body, stanza id).
        self.live = []
        self.live_changed = asyncio.Event()
        # The room's presences this client gets, in order.
        self.presences = asyncio.Queue()
        # Errors the room answers a message with.
        self.errors = asyncio.Queue()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler(f"muc::{ROOM}::message", self.on_message)
        self.add_event_handler(f"muc::{ROOM}::presence", self.presences.put_nowait)
        self.add_event_handler(f"muc::{ROOM}::message_error", self.errors.put_nowait)

    async def on_start(self, _event):
        await self.get_roster()
        self.send_presence()
        if not self.started.done():
            self.started.set_result(True)

    def on_message(self, msg):
        if msg.get_plugin("delay", check=True) is not None:
            return  # history, not live
        self.live.append((msg["from"].resource, msg["body"], stanza_id(msg)))
        self.live_changed.set()

    async def online(self):
        self.connect(host=self.host, port=self.port)
        await asyncio.wait_for(self.started, TIMEOUT)

    async def seen(self, count, who):
        """The first `count` live messages, once this client has them."""
        async def wait():
            while len(self.live) < count:
                self.live_changed.clear()
                await self.live_changed.wait()
        try:
            await asyncio.wait_for(wait(), TIMEOUT)
        except asyncio.TimeoutError:
            raise RuntimeError(f"{who} got {len(self.live)} of {count} messages: {self.live}")
        return self.live[:count]


async def presence(c, who, what, pred):
    """The next room presence `c` gets that satisfies `pred`."""
    async def loop():
        while True:
            p = await c.presences.get()
            if pred(p):
                return p
    try:
        return await asyncio.wait_for(loop(), TIMEOUT)
    except asyncio.TimeoutError:
        raise RuntimeError(f"{who} never saw {what}")


def codes(p):
    return set(p["muc"]["status_codes"])


async def knows(asker, target):
    """Until `asker`'s DC routes to `target`'s session: a ping to its full JID is answered."""
    last = None
    for _ in range(CONVERGE * 2):
        try:
            await asker.plugin["xep_0199"].send_ping(target.boundjid.full, timeout=2)
            return
        except IqError as e:
            last = e.iq["error"]["condition"]
        except IqTimeout:
            last = "timeout"
        await asyncio.sleep(0.5)
    raise RuntimeError(
        f"{asker.boundjid.full} could not reach {target.boundjid.full} (last: {last})")


async def archive(c):
    """The room's archive as `c` reads it: (body, id), oldest first."""
    out = []
    async for m in c.plugin["xep_0313"].iterate(jid=ROOM, rsm={"max": 4}):
        result = m["mam_result"]
        out.append((result["forwarded"]["stanza"]["body"], result["id"]))
    return out


async def main():
    muc = lambda c: c.plugin["xep_0045"]  # noqa: E731
    alice = Client(ALICE, "desk", HOST1, PORT1)
    bob = Client(BOB, "phone", HOST2, PORT2)
    carol = Client(CAROL, "laptop", HOST1, PORT1)
    dave = Client(DAVE, "tablet", HOST2, PORT2)
    for c in (alice, bob, carol, dave):
        await c.online()
    # The room's home routes to every session, at either DC.
    for a, b in ((alice, bob), (alice, dave), (bob, alice), (bob, carol)):
        await knows(a, b)
    step("Alice and Carol logged in at DC 1, Bob and Dave at DC 2, each DC knows the others")

    pres, _subject, _, _ = await muc(alice).join_muc_wait(ROOM, "alice", timeout=TIMEOUT)
    if not {110, 201} <= codes(pres):
        raise RuntimeError(f"Alice's self-presence on creation has codes {codes(pres)}")
    if pres["muc"]["affiliation"] != "owner":
        raise RuntimeError(f"the creator's affiliation is {pres['muc']['affiliation']}")
    form = await muc(alice).get_room_config(ROOM, timeout=TIMEOUT)
    await muc(alice).set_room_config(ROOM, form, timeout=TIMEOUT)
    step("Alice at DC 1 created the room (201, owner) and submitted the default configuration")

    for c, nick in ((bob, "bob"), (carol, "carol")):
        pres, _, occupants, _ = await muc(c).join_muc_wait(ROOM, nick, timeout=TIMEOUT)
        if 110 not in codes(pres):
            raise RuntimeError(f"{nick}'s self-presence has codes {codes(pres)}")
        if "alice" not in [p["muc"]["nick"] for p in occupants]:
            raise RuntimeError(f"{nick} joined without seeing alice")
    for c, who in ((alice, "Alice"), (bob, "Bob"), (carol, "Carol")):
        roster = sorted(muc(c).get_roster(ROOM))
        if roster != ["alice", "bob", "carol"]:
            raise RuntimeError(f"{who}'s view of the room: {roster}")
    step("Bob at DC 2 and Carol at DC 1 joined; all three see alice, bob and carol")

    for i in range(3):
        for c, nick in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
            c.send_message(mto=ROOM, mbody=f"{nick} {i}", mtype="groupchat")
    views = [await c.seen(9, who) for c, who in ((alice, "Alice"), (bob, "Bob"), (carol, "Carol"))]
    if not views[0] == views[1] == views[2]:
        raise RuntimeError(f"the three views differ:\n{views[0]}\n{views[1]}\n{views[2]}")
    live = views[0]
    ids = [i for _, _, i in live]
    if None in ids or len(set(ids)) != len(ids):
        raise RuntimeError(f"stanza ids missing or repeated: {live}")
    for nick in ("alice", "bob", "carol"):
        said = [b for n, b, _ in live if n == nick]
        if said != [f"{nick} {i}" for i in range(3)]:
            raise RuntimeError(f"{nick}'s messages out of order: {said}")
    step("nine interleaved messages seen by all three in one order with the same stanza ids")

    new = await muc(bob).set_self_nick(ROOM, "robert", timeout=TIMEOUT)
    if new != "robert":
        raise RuntimeError(f"Bob's new nick is {new}")
    for c, who in ((alice, "Alice"), (carol, "Carol")):
        p = await presence(c, who, "bob's 303", lambda p: p["from"].resource == "bob"
                           and p["type"] == "unavailable")
        if 303 not in codes(p) or p["muc"]["item_nick"] != "robert":
            raise RuntimeError(f"{who} saw bob leave with codes {codes(p)}, "
                               f"nick {p['muc']['item_nick']!r}")
        p = await presence(c, who, "robert", lambda p: p["from"].resource == "robert")
        if p["type"] == "unavailable":
            raise RuntimeError(f"{who} saw robert unavailable")
        roster = sorted(muc(c).get_roster(ROOM))
        if roster != ["alice", "carol", "robert"]:
            raise RuntimeError(f"{who}'s view of the room after the nick change: {roster}")
    step("Bob became robert: Alice and Carol at DC 1 saw 303 and the new nick")

    await muc(alice).set_role(ROOM, "carol", "none", reason="enough", timeout=TIMEOUT)
    p = await presence(carol, "Carol", "her own kick",
                       lambda p: p["from"].resource == "carol" and p["type"] == "unavailable")
    if not {110, 307} <= codes(p):
        raise RuntimeError(f"Carol's kick presence has codes {codes(p)}")
    for c, who in ((alice, "Alice"), (bob, "Bob")):
        p = await presence(c, who, "carol's kick",
                           lambda p: p["from"].resource == "carol" and p["type"] == "unavailable")
        if 307 not in codes(p) or 110 in codes(p):
            raise RuntimeError(f"{who} saw carol's kick with codes {codes(p)}")
        roster = sorted(muc(c).get_roster(ROOM))
        if roster != ["alice", "robert"]:
            raise RuntimeError(f"{who}'s view of the room after the kick: {roster}")
    carol.send_message(mto=ROOM, mbody="still here?", mtype="groupchat")
    try:
        err = await asyncio.wait_for(carol.errors.get(), TIMEOUT)
    except asyncio.TimeoutError:
        raise RuntimeError("Carol's message after the kick got no error")
    if err["error"]["condition"] != "not-acceptable":
        raise RuntimeError(f"Carol's message after the kick: {err['error']['condition']}")
    step("Alice kicked Carol: Carol saw 307 and is out (not-acceptable); the others saw her go")

    want = [(b, i) for _, b, i in live]
    for c, who in ((alice, "Alice at DC 1"), (bob, "Bob at DC 2")):
        got = await archive(c)
        if got != want:
            raise RuntimeError(f"the room's archive read by {who}:\n{got}\nnot\n{want}")
    step("the room's archive read at DC 1 and at DC 2: the same messages, ids and order")

    _, _, occupants, history = await muc(dave).join_muc_wait(
        ROOM, "dave", maxstanzas=20, timeout=TIMEOUT)
    got = [(m["body"], stanza_id(m)) for m in history]
    if got != want:
        raise RuntimeError(f"Dave's history:\n{got}\nnot\n{want}")
    # slixmpp counts the newcomer's own presence among the occupants.
    nicks = sorted(p["muc"]["nick"] for p in occupants)
    if nicks != ["alice", "dave", "robert"]:
        raise RuntimeError(f"Dave joined seeing {nicks}")
    step("Dave joined at DC 2 and got the nine messages as history, delayed, same ids")

    for c in (alice, bob, carol, dave):
        c.disconnect()
    print("all steps passed", flush=True)


asyncio.run(main())
