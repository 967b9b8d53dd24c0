"""Issue 15 items 5 and 8 on the release binary over [::1]: owned names and the enrolment second
factor.

- Owned names: the first key to publish a name owns it, at the origin (`stoq name publish`) and
  in the DHT (`stoq name set`); another key is refused with a clear message, the owner can still
  update, the bindings survive a restart; a claim in the CT log (`stoq name claim`) decides the
  owner, and a transfer in the log hands the name over.
- Second factor: a node with a CT-logged certificate is refused by a node run with
  `--require-enrolment` unless it proves the enrolment secret issued with its certificate."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import Procs, User, content_id, make_tree


def issue(user: User, name: str, ct: Path, table: Path | None = None) -> None:
    """A certificate in the CT log (and, with `table`, an enrolment secret NAME.enrol)."""
    with user.lock:
        if name in user.issued:
            return
        extra = ["--enrol", table] if table else []
        user.ok("certs", "issue", "--ca-dir", user.ca_dir, "--name", name, "--out", user.ca_dir, "--ct-log", ct, *extra)
        user.issued.add(name)


def test_owned_names_and_enrolment(user: User, tmp_path: Path, procs: Procs) -> None:
    ct = tmp_path / "ct"
    table = tmp_path / "enrolments.json"
    for name in ["names-dht", "names-origin", "names-client"]:
        issue(user, name, ct)
    tls = user.tls("names-client")
    alice, bob = tmp_path / "alice.pem", tmp_path / "bob.pem"
    user.ok("name", "keygen", "--out", alice)
    user.ok("name", "keygen", "--out", bob)

    # ---- the origin: first publisher owns the name (names-client is a listed publisher: names
    # are closed to other certificates, test_names_are_closed_by_default)
    publisher = ["--publisher", user.ca_dir / "names-client.pem"]
    source = make_tree(tmp_path / "data", seed=5, big=20_000)
    origin_store = tmp_path / "stores" / "origin"
    cid = content_id(user.ok("put", source, "--store", origin_store).stdout)
    origin = user.node(procs, "names-origin", "--role", "origin", "--require-ct", ct, *publisher, store=origin_store)
    dht = user.node(procs, "names-dht", "--dht", "--require-ct", ct, store=tmp_path / "stores" / "dht")

    def publish(name: str, owner: Path, node: str):  # type: ignore[no-untyped-def]
        return user.run("name", "publish", name, cid, "--node", node, "--owner-key", owner, *tls)

    assert publish("site", alice, origin.address).ok().stdout.startswith("published site v1")
    refused = publish("site", bob, origin.address)
    assert refused.rc != 0 and "owned by another key" in refused.stderr, refused.stderr
    assert "published site v2" in publish("site", alice, origin.address).ok().stdout  # the owner still updates

    # ---- the DHT: first setter owns the name, even after its record is gone
    def dht_set(name: str, owner: Path):  # type: ignore[no-untyped-def]
        return user.run("name", "set", name, cid, "--owner", owner, "--bootstrap", dht.address, *tls)

    dht_set("shop.example", alice).ok()
    refused = dht_set("shop.example", bob)
    assert refused.rc != 0 and "owned by another key" in refused.stderr, refused.stderr
    dht_set("shop.example", alice).ok()  # a higher version by the owner

    # ---- the CT log decides: a logged claim binds a name nobody published yet, for both systems
    assert "claimed 'logged.example'" in user.ok("name", "claim", "logged.example", "--owner", bob, "--ct-log", ct).stdout
    again = user.run("name", "claim", "logged.example", "--owner", alice, "--ct-log", ct)
    assert again.rc != 0 and "already owned by another key" in again.stderr, again.stderr
    refused = dht_set("logged.example", alice)
    assert refused.rc != 0 and "refused" in refused.stderr, refused.stderr
    dht_set("logged.example", bob).ok()
    refused = publish("logged.example", alice, origin.address)
    assert refused.rc != 0 and "bound in the CT log" in refused.stderr, refused.stderr

    # ---- a hand-over: alice logs her claim on "site" and transfers it to bob, who may then publish
    user.ok("name", "claim", "site", "--owner", alice, "--ct-log", ct)
    user.ok("name", "transfer", "site", "--owner", alice, "--to", bob, "--ct-log", ct)
    assert "published site v3" in publish("site", bob, origin.address).ok().stdout
    refused = publish("site", alice, origin.address)
    assert refused.rc != 0 and "owned by another key" in refused.stderr, refused.stderr

    # ---- bindings survive a restart (the DHT node forgets its records, not who owns them)
    for node in (origin, dht):
        node.proc.terminate()
    origin = user.node(procs, "names-origin", "--role", "origin", "--require-ct", ct, *publisher, store=origin_store)
    dht = user.node(procs, "names-dht", "--dht", "--require-ct", ct, store=tmp_path / "stores" / "dht")
    refused = publish("site", alice, origin.address)
    assert refused.rc != 0 and "owned by another key" in refused.stderr, refused.stderr
    refused = dht_set("shop.example", bob)
    assert refused.rc != 0 and "refused" in refused.stderr, refused.stderr
    dht_set("shop.example", alice).ok()

    # ---- the second factor: CT-logged certificates, with and without the enrolment proof
    for name in ["names-verifier", "names-good", "names-nosecret", "names-wrong"]:
        issue(user, name, ct, table)
    other = tmp_path / "other.json"  # the "wrong" node proves with a secret this network never enrolled
    user.ok("certs", "issue", "--ca-dir", user.ca_dir, "--name", "names-stray", "--out", tmp_path, "--enrol", other)
    verifier = user.node(procs, "names-verifier", "--dht", "--require-ct", ct, "--require-enrolment", table,
                         store=tmp_path / "stores" / "verifier")
    good = user.node(procs, "names-good", "--bootstrap", verifier.address, "--enrolment-secret", user.ca_dir / "names-good.enrol",
                     store=tmp_path / "stores" / "good")
    joined = good.proc.wait_line(r"^dht \S+ (joined contacts=(\d+)|could not join.*)", timeout=30)
    assert joined.group(2) and int(joined.group(2)) >= 1, joined.group(0)
    nosecret = user.node(procs, "names-nosecret", "--bootstrap", verifier.address, store=tmp_path / "stores" / "nosecret")
    nosecret.proc.wait_line(r"^dht \S+ (joined contacts=0|could not join)", timeout=30)
    wrong = user.node(procs, "names-wrong", "--bootstrap", verifier.address, "--enrolment-secret", tmp_path / "names-stray.enrol",
                      store=tmp_path / "stores" / "wrong")
    wrong.proc.wait_line(r"^dht \S+ (joined contacts=0|could not join)", timeout=30)
    log = verifier.proc.stderr()
    assert re.search(r"enrolment proof missing.*holds no enrolment secret.*refusing peer", log), log[-3000:]
    assert re.search(r"wrong enrolment proof.*refusing peer", log), log[-3000:]
    # The refused nodes are told why (the connection's close reason).
    for refused_node in (nosecret, wrong):
        assert "enrolment" in refused_node.proc.stdout() + refused_node.proc.stderr(), refused_node.proc.stdout()[-2000:]


def test_names_are_closed_by_default(user: User, tmp_path: Path, procs: Procs) -> None:
    """Issue 15, "claim any unclaimed name": an origin started with no --publisher takes
    NAME_PUBLISH only from itself, its operator (the client.pem beside the CA), or a grant with the
    publish right whose name: scope covers the name. Before, any certificate of the network took a
    new name there (the first owner key then bound it); now that is ERROR 7 with a message that
    says what to present."""
    source = make_tree(tmp_path / "data", seed=8, big=20_000)
    store = tmp_path / "origin"
    cid = content_id(user.ok("put", source, "--store", store).stdout)
    origin = user.node(procs, "nc-origin", "--role", "origin", store=store)
    stranger = user.tls("nc-stranger")
    owner = tmp_path / "owner.pem"

    def publish(name: str, tls: list[str], *extra: object):  # type: ignore[no-untyped-def]
        return user.run("name", "publish", name, cid, "--node", origin.address, "--owner-key", owner, *tls, *extra)

    # A plain certificate of the network: a new, unclaimed name is refused, and nothing is bound.
    refused = publish("fresh/home", stranger)
    assert refused.rc != 0, refused.stdout
    assert "publishing the name 'fresh/home' needs the right publish for scope name 'fresh/home'" in refused.stderr, refused.stderr
    assert "takes names only from itself, its operators (--operator), its publishers (--publisher)" in refused.stderr, refused.stderr
    assert "is none of these" in refused.stderr and "stoq name publish --grant" in refused.stderr, refused.stderr
    missing = user.run("name", "show", "fresh/home", "--node", origin.address, *user.tls())
    assert missing.rc != 0, missing.stdout

    # A publish grant for the prefix name:fresh/ (issued by the origin's own key: it lists no
    # publishers) lets the same certificate publish under the prefix, and nowhere else.
    node_cert, node_key = user.cert("nc-origin")
    grant = user.ok("grant", "create", "--rights", "publish", "--scope", "name:fresh/", "--expires", "10m",
                    "--cert", node_cert, "--key", node_key).stdout.strip()
    assert "published fresh/home v1" in publish("fresh/home", stranger, "--grant", grant).ok().stdout
    outside = publish("other/home", stranger, "--grant", grant)
    assert outside.rc != 0 and "right publish for scope name 'other/home'" in outside.stderr, outside.stderr

    # The operator (client.pem beside the CA) publishes without a grant.
    assert "published other/home v1" in publish("other/home", user.tls(), "--store", tmp_path / "op").ok().stdout
