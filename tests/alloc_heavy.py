#!/usr/bin/env python3
"""Allocation-heavy, deterministic Python workload for test_python.sh.

Builds big dicts, lists and strings, does JSON round trips, sorts and
deletes, and prints one line "alloc_heavy checksum=<sha256>" that depends
only on the computed data (identical with and without tidemalloc).

With ALLOC_HEAVY_EXPECT_TIDEMALLOC=1 it also checks, from inside the
process, that libtidemalloc is mapped and that its tide_version() is
callable, and prints "tidemalloc: loaded <version>" on stderr (exit 3 if not).
"""
import ctypes
import gc
import hashlib
import json
import os
import random
import sys


def check_tidemalloc():
    with open("/proc/self/maps") as f:
        maps = f.read()
    if "libtidemalloc" not in maps:
        print("alloc_heavy: libtidemalloc is not mapped in this process", file=sys.stderr)
        sys.exit(3)
    try:
        lib = ctypes.CDLL(None)
        fn = lib.tide_version
    except (OSError, AttributeError) as e:
        print("alloc_heavy: tide_version not resolvable: %s" % e, file=sys.stderr)
        sys.exit(3)
    fn.restype = ctypes.c_char_p
    print("tidemalloc: loaded %s" % fn().decode(), file=sys.stderr)


def main():
    if os.environ.get("ALLOC_HEAVY_EXPECT_TIDEMALLOC") == "1":
        check_tidemalloc()

    rng = random.Random(20240601)
    h = hashlib.sha256()

    # 1. big dict of str -> list, many small objects
    d = {}
    for i in range(200000):
        key = "k%07d-%s" % (i, "x" * (i % 17))
        d[key] = [i, i * 3, str(i), (i, -i)]
    h.update(str(len(d)).encode())

    # 2. delete two thirds, re-insert with other sizes
    for i in range(0, 200000, 3):
        del d["k%07d-%s" % (i, "x" * (i % 17))]
    for i in range(0, 200000, 3):
        d["n%d" % i] = {"v": i, "s": "y" * (i % 300)}
    h.update(str(len(d)).encode())

    # 3. JSON round trip of a large nested structure
    records = [
        {
            "id": i,
            "name": "name-%d" % rng.randrange(10**9),
            "tags": [rng.choice("abcdefghij") * rng.randrange(1, 40) for _ in range(rng.randrange(0, 8))],
            "score": rng.randrange(-10**6, 10**6),
            "nested": {"a": list(range(i % 50)), "b": "z" * (i % 1000)},
        }
        for i in range(30000)
    ]
    text = json.dumps(records, sort_keys=True)
    back = json.loads(text)
    assert back == records
    h.update(hashlib.sha256(text.encode()).digest())
    del text, back

    # 4. sorting big lists of strings and tuples
    words = ["%x" % rng.getrandbits(64) * rng.randrange(1, 6) for _ in range(150000)]
    words.sort()
    h.update("".join(words[::997]).encode())
    pairs = sorted((len(w), w[::-1]) for w in words)
    h.update(repr(pairs[::1009]).encode())
    del words, pairs

    # 5. strings: growth by concatenation, join, split, bytes
    s = ""
    for i in range(20000):
        s += "%d," % (i * i)
    parts = s.split(",")
    joined = "|".join(reversed(parts))
    h.update(hashlib.sha256(joined.encode()).digest())
    blob = bytearray()
    for i in range(3000):
        blob += bytes([i % 251]) * (i % 700)
    h.update(hashlib.sha256(bytes(blob)).digest())
    del s, parts, joined, blob

    # 6. many medium/large objects created and dropped in waves
    total = 0
    for wave in range(20):
        big = [bytearray(rng.randrange(1, 200000)) for _ in range(50)]
        for b in big:
            b[0] = wave
            b[-1] = wave
        total += sum(len(b) for b in big)
        big = None
    h.update(str(total).encode())

    # 7. reference cycles collected by the GC
    class Node:
        __slots__ = ("next", "payload")

    for _ in range(5):
        nodes = [Node() for _ in range(20000)]
        for i, n in enumerate(nodes):
            n.next = nodes[(i + 1) % len(nodes)]
            n.payload = [i] * (i % 20)
        del nodes
        gc.collect()

    # 8. consistency of what is left of the dict
    acc = 0
    for k in sorted(d):
        v = d[k]
        acc = (acc * 31 + (v[0] if isinstance(v, list) else v["v"])) % (1 << 61)
    h.update(str(acc).encode())
    del d
    gc.collect()

    print("alloc_heavy checksum=%s" % h.hexdigest())


if __name__ == "__main__":
    main()
