"""The operator's attack on a custody data directory: change one entry's bytes, rebuild every
hash (RFC 9162), and re-sign a checkpoint of the new tree with the log's real key, replacing
every record of the old checkpoints (database, checkpoints.jsonl, log.head).

usage: rewrite_log.py DATA_DIR INDEX     (needs the `cryptography` package for Ed25519)
"""

import base64
import hashlib
import json
import sqlite3
import sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def leaf_hash(b: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + b).digest()


def node_hash(l: bytes, r: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + l + r).digest()


def root(leaves):
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(root(leaves[:k]), root(leaves[k:]))


def subtrees(leaves):
    """The roots of the perfect subtrees of the tree, largest first (a compact range)."""
    out, start, n = [], 0, len(leaves)
    for level in range(63, -1, -1):
        if n & (1 << level):
            out.append((level, start >> level, root(leaves[start:start + (1 << level)])))
            start += 1 << level
    return out


def main() -> None:
    data_dir, index = sys.argv[1], int(sys.argv[2])
    key = open(f"{data_dir}/log.key").read().strip()
    # PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || seed)>
    _, _, name, _, blob = key.split("+", 4)
    seed = base64.b64decode(blob)[1:]
    signer = Ed25519PrivateKey.from_private_bytes(seed)
    public = signer.public_key().public_bytes_raw()
    key_id = hashlib.sha256(name.encode() + b"\n\x01" + public).digest()[:4]

    db = sqlite3.connect(f"{data_dir}/log.sqlite")
    rows = db.execute("SELECT idx, data FROM entries ORDER BY idx").fetchall()
    datas = [bytearray(d) for _, d in rows]
    # Change one letter inside a JSON string value of the entry (its message or detail): the
    # entry still decodes, only what it says has changed.
    d = datas[index]
    at = d.find(b'":"')
    while at != -1 and not chr(d[at + 3]).isalpha():
        at = d.find(b'":"', at + 1)
    if at == -1:
        raise SystemExit(f"entry {index} has no JSON string value to change")
    d[at + 3] ^= 0x20
    leaves = [leaf_hash(bytes(d)) for d in datas]
    db.execute("DELETE FROM entries")
    db.execute("DELETE FROM nodes")
    db.execute("DELETE FROM checkpoints")
    for i, (d, leaf) in enumerate(zip(datas, leaves)):
        db.execute("INSERT INTO entries (idx, leaf, data) VALUES (?, ?, ?)", (i, leaf, bytes(d)))
    level = 8
    while (1 << level) <= len(leaves):
        width = 1 << level
        for i in range(len(leaves) // width):
            db.execute(
                "INSERT INTO nodes (level, idx, hash) VALUES (?, ?, ?)",
                (level, i, root(leaves[i * width:(i + 1) * width])),
            )
        level += 1
    size = len(leaves)
    text = f"{name}\n{size}\n{base64.b64encode(root(leaves)).decode()}\n"
    sig = signer.sign(text.encode())
    note = text + "\n" + f"\u2014 {name} {base64.b64encode(key_id + sig).decode()}\n"
    db.execute("INSERT INTO checkpoints (size, note, signed_ns) VALUES (?, ?, 0)", (size, note))
    db.commit()
    with open(f"{data_dir}/checkpoints.jsonl", "w") as f:
        f.write(json.dumps({"size": size, "signed_ns": 0, "note": note}) + "\n")
    compact = size.to_bytes(8, "big") + b"".join(h for _, _, h in subtrees(leaves))
    with open(f"{data_dir}/log.head", "w") as f:
        f.write(json.dumps({"size": size, "signed_ns": 0,
                            "range": base64.b64encode(compact).decode(), "note": note}) + "\n")
    print(f"rewrote entry {index} of {size} and re-signed the log with its own key")


main()
