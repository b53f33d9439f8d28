"""A third-party log client feeding custody's built-in witness.

The log is built and signed with aics-tlog (an independent C2SP implementation) and fed with
aics-witness's feeder (`WitnessClient`), which verifies every cosignature it gets back.

usage:
  witness_feeder.py vkey SEED_FILE              print the log's verifier key (makes the seed)
  witness_feeder.py feed SEED_FILE URL VKEY     feed the witness at URL (cosigner key VKEY)
"""

import os
import sys
import urllib.request
from hashlib import sha256

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aics_tlog.checkpoint import Checkpoint, sign_checkpoint, verify_checkpoint
from aics_tlog.note import format_vkey, parse_note, parse_vkey, vkey_from_ed25519
from aics_tlog.tree import MerkleTree
from aics_witness.feeder import WitnessClient, WitnessRejected, merge_cosignatures

ORIGIN = "interop.example/aics-log"


def key(seed_file):
    if not os.path.exists(seed_file):
        with open(seed_file, "wb") as f:
            f.write(os.urandom(32))
    with open(seed_file, "rb") as f:
        return Ed25519PrivateKey.from_private_bytes(f.read())


def signed(tree, private):
    cp = Checkpoint(origin=ORIGIN, size=tree.size, root=tree.root())
    return sign_checkpoint(cp, private, ORIGIN).to_bytes()


def check(what, ok):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        sys.exit(1)


def feed(seed_file, url, witness_vkey):
    private = key(seed_file)
    log_vkey = vkey_from_ed25519(ORIGIN, private.public_key())
    wkey = parse_vkey(witness_vkey)
    tree = MerkleTree()

    def cosign(client, tree):
        note = signed(tree, private)
        lines = client.submit(note, tree.consistency_proof)
        merged = parse_note(merge_cosignatures(note, lines))
        result = verify_checkpoint(merged, log_vkey, [wkey], 1)
        return result

    with WitnessClient(url, wkey) as client:
        for grow in (3, 7, 40):
            tree.extend(f"entry {tree.size + i}".encode() for i in range(grow))
            r = cosign(client, tree)
            check(f"custody witness cosigned size {tree.size} for aics-witness's feeder; "
                  f"aics-tlog verifies it ({r.witnesses})", r.ok)
    # A new client knows nothing: 409 with the size, then a proof from there.
    tree.extend(b"more %d" % i for i in range(5))
    with WitnessClient(url, wkey) as client:
        r = cosign(client, tree)
        check(f"after a 409 re-sync, size {tree.size} cosigned", r.ok)
        # The same size with another root, signed by the log key: refused (422).
        forked = MerkleTree([b"forged"] + [tree.leaf_data(i) for i in range(1, tree.size)])
        try:
            client.submit(signed(forked, private), forked.consistency_proof)
            check("a forked checkpoint was refused", False)
        except WitnessRejected as e:
            check(f"a forked checkpoint was refused with {e.status}", e.status == 422)
    # The monitoring endpoint serves the cosigned checkpoint.
    origin_hash = sha256(ORIGIN.encode()).hexdigest()
    with urllib.request.urlopen(f"{url}/{origin_hash}/checkpoint") as resp:
        served = parse_note(resp.read())
    r = verify_checkpoint(served, log_vkey, [wkey], 1)
    check(f"the witness's monitoring checkpoint verifies with aics-tlog (size {r.size})",
          r.ok and r.size == tree.size)


def main(argv):
    if len(argv) == 3 and argv[1] == "vkey":
        private = key(argv[2])
        print(format_vkey(vkey_from_ed25519(ORIGIN, private.public_key())))
    elif len(argv) == 5 and argv[1] == "feed":
        feed(argv[2], argv[3], argv[4])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv)
