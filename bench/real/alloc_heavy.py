#!/usr/bin/env python3
"""alloc_heavy.py: an allocation-heavy python3 workload for bench/real/python.sh.

Usage: alloc_heavy.py SCALE ROUNDS

Run it with PYTHONMALLOC=malloc so that every object allocation goes to
malloc/free (and so to the preloaded allocator) instead of pymalloc's arenas.

Each round builds a dict of SCALE entries with values of mixed kinds and sizes
(short and long strings, lists of ints, small dicts, bytes, tuples), round-trips
every 8th list/dict value through json, sorts the keys and the string values,
deletes half of the entries (a pseudo-random half: every other key in sorted
order), inserts SCALE/2 new and larger entries, splits and counts the words of a
text built from the string values, and keeps every 64th value in a list that
lives across rounds (long-lived objects among freed ones, as in real programs).
Then the round's dict is dropped.

Everything is driven by a 64-bit LCG with a fixed seed and does not depend on
hash randomization, addresses or the allocator, so the checksum (a CRC-32 of
the round results) is the same under every allocator: python.sh checks it.

One line is printed:
  alloc_heavy: scale=S rounds=R ops=N seconds=T ops_per_sec=X checksum=XXXXXXXX
ops counts the entries built, round-tripped, sorted, deleted and rebuilt and
the words counted; seconds is the time of the rounds (startup excluded).
"""

import json
import sys
import time
import zlib

MASK = (1 << 64) - 1
ALPHA = "abcdefghijklmnopqrstuvwxyz"


class Lcg:
    __slots__ = ("x",)

    def __init__(self, seed):
        self.x = seed & MASK

    def next(self):
        self.x = (self.x * 6364136223846793005 + 1442695040888963407) & MASK
        return self.x >> 33


def make_value(i, r, big):
    kind = r % 10
    if kind <= 3:
        n = 8 + (r >> 4) % (120 if not big else 400)
        return ALPHA[r % 26] * n + "%x" % r
    if kind <= 5:
        return [r + j for j in range((r >> 5) % (16 if not big else 48))]
    if kind == 6:
        return {
            "id": i,
            "name": "n%d" % r,
            "tags": ["t%d" % (r % 7), "t%d" % (r % 11), "t%d" % (r % 13)],
            "score": (r % 1000) / 7.0,
        }
    if kind == 7:
        return b"x" * (100 + (r >> 3) % (2000 if not big else 6000))
    if kind == 8:
        return (i, str(r), r / 3.0)
    return ALPHA[(r >> 7) % 26] * (1000 + (r >> 9) % 7000)


def one_round(rnd, scale, rno, keep):
    ops = 0
    crc = 0
    d = {}
    for i in range(scale):
        r = rnd.next()
        d["k%d:%x" % (rno, r)] = make_value(i, r, False)
    ops += scale
    crc = zlib.crc32(b"%d" % len(d), crc)

    # json round trips
    n = 0
    for i, v in enumerate(d.values()):
        if i % 8 == 0 and isinstance(v, (dict, list)):
            s = json.dumps(v, sort_keys=True)
            w = json.loads(s)
            if w != v:
                raise SystemExit("alloc_heavy: json round trip mismatch")
            if n % 64 == 0:
                crc = zlib.crc32(s.encode(), crc)
            n += 1
    ops += n

    # sorting
    keys = sorted(d)
    strs = sorted(v for v in d.values() if isinstance(v, str))
    crc = zlib.crc32((keys[0] + keys[-1] + strs[0][:16] + strs[-1][:16]).encode(), crc)
    ops += len(keys) + len(strs)
    del strs

    # delete half, build again with larger values
    for k in keys[::2]:
        v = d.pop(k)
        if len(keep) < 1000000 and (len(k) + len(keys)) % 64 == 0:
            keep.append(v)
    ops += (len(keys) + 1) // 2
    del keys
    for i in range(scale // 2):
        r = rnd.next()
        d["m%d:%x" % (rno, r)] = make_value(i, r, True)
    ops += scale // 2
    crc = zlib.crc32(b"%d" % len(d), crc)

    # words
    text = " ".join(v[:24] + " " + v[-4:] for v in d.values() if isinstance(v, str))
    counts = {}
    for w in text.split():
        counts[w] = counts.get(w, 0) + 1
    ops += len(counts)
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
    crc = zlib.crc32(repr(top).encode(), crc)
    crc = zlib.crc32(b"%d %d" % (len(counts), len(keep)), crc)
    del text, counts, d
    return ops, crc


def main(argv):
    if len(argv) != 3:
        sys.stderr.write("usage: alloc_heavy.py SCALE ROUNDS\n")
        return 2
    scale = int(argv[1])
    rounds = int(argv[2])
    if scale < 16 or rounds < 1:
        sys.stderr.write("alloc_heavy: SCALE >= 16 and ROUNDS >= 1\n")
        return 2
    rnd = Lcg(0x12345678)
    keep = []
    total_ops = 0
    crc = 0
    t0 = time.perf_counter()
    for rno in range(rounds):
        ops, c = one_round(rnd, scale, rno, keep)
        total_ops += ops
        crc = zlib.crc32(b"%08x" % c, crc)
    t = time.perf_counter() - t0
    print(
        "alloc_heavy: scale=%d rounds=%d ops=%d seconds=%.3f ops_per_sec=%.0f checksum=%08x"
        % (scale, rounds, total_ops, t, total_ops / t, crc)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
