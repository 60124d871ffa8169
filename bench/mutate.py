#!/usr/bin/env python3
"""Changes PERCENT of a volume image's 4 KiB blocks, in place, reproducibly.

Usage: mutate.py IMAGE PERCENT PATTERN SEED
  PATTERN scattered: single 4 KiB blocks at random positions (the worst case
          for any chunked format: a 1 % change touches most 4 MiB chunks)
  PATTERN clustered: runs of 256 blocks (1 MiB), as when files are rewritten
  PATTERN mixed: half in 1 MiB runs, half single blocks (a day of use:
          files rewritten, and metadata, logs and databases updated in place)
New content comes from this machine's libraries (real, partly compressible
bytes), so compression sees what it would see on a disk.
"""
import os, random, sys

image, percent, pattern, seed = sys.argv[1], float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
rng = random.Random(seed)
size = os.path.getsize(image)
blocks = size // 4096
target = int(blocks * percent / 100)
if pattern not in ("scattered", "clustered", "mixed"):
    sys.exit(f"mutate.py: unknown pattern {pattern}")
src = open("/usr/lib/x86_64-linux-gnu/libLLVM-14.so.1", "rb").read() \
    if os.path.exists("/usr/lib/x86_64-linux-gnu/libLLVM-14.so.1") else os.urandom(64 << 20)
fd = os.open(image, os.O_WRONLY)
done = set()
while len(done) < target:
    run = 1 if pattern == "scattered" or (pattern == "mixed" and len(done) >= target // 2) else 256
    start = rng.randrange(0, blocks - run)
    for b in range(start, start + run):
        if len(done) >= target:
            break
        if b in done:
            continue
        done.add(b)
        off = rng.randrange(0, len(src) - 4096) & ~4095
        os.pwrite(fd, src[off:off + 4096], b * 4096)
os.fsync(fd)
os.close(fd)
print(f"changed {len(done)} of {blocks} blocks ({pattern})")
