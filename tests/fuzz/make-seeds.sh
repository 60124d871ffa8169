#!/usr/bin/env bash
# Regenerates the fuzz targets' seed corpora (tests/fuzz/corpus/<target>/)
# from a real repository the gnomon binary writes: a full and an incremental
# backup of a small volume (so a patch is stored), a subset verify (a check
# file) and a verify after damage (a quarantine file). Frame bodies are cut
# out of their frames, patches out of their packs; the VSS documents, the
# volume stamp and a writer-protocol exchange come from the stored record.
# Run it after a format change and commit the result (ids and times in the
# files differ from run to run; what they exercise does not).
# Usage: tests/fuzz/make-seeds.sh   (GNOMON=path/to/gnomon to pick a build)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
gnomon=${GNOMON:-$here/../../build/tools/gnomon}
work=$(mktemp -d /tmp/gnomon-seeds.XXXXXX)
trap 'rm -rf "$work"' EXIT
export GNOMON_STATE_DIR=$work/state GNOMON_RUNTIME_DIR=$work/run
export GNOMON_WRITER_DIR=$work/run/writers GNOMON_HOOKS_DIR=$work/hooks
repo=$work/repo vol=$work/volume.img
"$gnomon" init -q --repo "$repo" --chunk-size 64 --pack-size 1
# 512 KiB: text in two 64 KiB chunks, zeros elsewhere (zero chunks are not stored).
python3 - "$vol" <<'PY'
import sys
words = b"gnomon snapshot image chunk pack index volume backup restore verify ".split()
text = b" ".join(words[(i * 7) % len(words)] for i in range(30000))
img = bytearray(512 * 1024)
img[0:65536] = text[:65536]
img[3 * 65536:4 * 65536] = text[1000:1000 + 65536]
open(sys.argv[1], "wb").write(img)
PY
"$gnomon" -q --repo "$repo" backup --json "$vol" >"$work/full.json"
python3 - "$vol" <<'PY'
import sys
f = open(sys.argv[1], "r+b")
f.seek(4096); f.write(b"CHANGED" * 100)   # a few blocks of the first chunk: a patch
PY
"$gnomon" -q --repo "$repo" backup --json --type incremental "$vol" >"$work/inc.json"
"$gnomon" -q --repo "$repo" verify --read-data-subset 50% >/dev/null
"$gnomon" -q --repo "$repo" show --json latest >"$work/show.json"
# Damage one stored byte of a pack in a copy, so verify quarantines its chunk.
cp -a "$repo" "$work/damaged"
python3 - "$work/damaged" <<'PY'
import os, sys
packs = sorted(os.path.join(d, f) for d, _, fs in os.walk(os.path.join(sys.argv[1], "packs")) for f in fs)
with open(packs[0], "r+b") as f:
    f.seek(16); b = f.read(1); f.seek(16); f.write(bytes([b[0] ^ 0xff]))
PY
"$gnomon" -q --repo "$work/damaged" verify --read-data >/dev/null 2>&1 || true
cp -a "$work/damaged/quarantine" "$repo/"

# Replace only the generated seeds (seed-*): inputs that once crashed a
# target (crash-*) stay, as regression tests.
mkdir -p "$here/corpus"
find "$here/corpus" -name 'seed-*' -delete
# Two tiny filesystems for the block-map reader: ext2, and ext4 with
# checksums (no journal: 64 KiB has no room for one).
mkdir -p "$here/corpus/block_map"
for t in ext2 ext4; do
  truncate -s 64K "$work/$t.img"
  mke2fs -q -F -t "$t" -O ^has_journal -b 1024 -N 16 -U 00000000-0000-0000-0000-0000000000f5 \
    -E hash_seed=00000000-0000-0000-0000-000000000000 "$work/$t.img"
  cp "$work/$t.img" "$here/corpus/block_map/seed-$t-1k"
done
python3 - "$repo" "$work/show.json" "$here/corpus" <<'PY'
import json, os, struct, subprocess, sys
repo, show, out = sys.argv[1:4]
def put(target, name, data):
    os.makedirs(os.path.join(out, target), exist_ok=True)
    open(os.path.join(out, target, "seed-" + name), "wb").write(data)
frames = {b"GNMCONF\x01": (0, "config", b""), b"GNMINDX\x01": (1, "chunk_index", b""),
          b"GNMFIDX\x01": (2, "volume_index", b""), b"GNMBKUP\x01": (3, "backup_record", b""),
          b"GNMQUAR\x01": (4, "check_file", b"\x00"), b"GNMCHEK\x01": (5, "check_file", b"\x01")}
for d, _, files in os.walk(repo):
    for f in sorted(files):
        data = open(os.path.join(d, f), "rb").read()
        name = os.path.relpath(os.path.join(d, f), repo).replace("/", "_")
        if data[:8] in frames:
            kind, target, prefix = frames[data[:8]]
            put("frame", name, bytes([kind]) + data)
            put(target, name, prefix + data[24:-8])
        elif data[-8:] == b"GNMPACK\x01" and len(data) <= 256 * 1024:
            put("pack", name, data)
            count = struct.unpack_from("<I", data, len(data) - 24)[0]
            entries = data[len(data) - 24 - 32 * count:len(data) - 24]
            off = 0
            for i in range(count):
                raw, stored, codec = struct.unpack_from("<III", entries, 32 * i + 16)
                blob = data[off:off + stored]
                off += stored
                if codec & 0x100:  # a patch
                    if codec & 0xff == 1:
                        blob = subprocess.run(["zstd", "-dc"], input=blob, capture_output=True).stdout
                    put("patch", "%s_%d" % (name, i), blob)
vss = json.load(open(show))["vss"]
put("vss_documents", "bcd", b"\x01" + json.dumps(vss["bcd"]).encode())
for i, w in enumerate(vss.get("writers", [])):
    put("vss_documents", "wmd_%d" % i, b"\x00" + json.dumps(w).encode())
for c in vss["bcd"]["components"]:
    if c.get("backup_stamp", "").startswith("{"):
        put("vss_documents", "stamp", b"\x02" + c["backup_stamp"].encode())
put("vss_documents", "options", b"\x03checkpoint=fast\nmode=x\n")
session = {"backup_type": "incremental", "select_components": True,
           "bootable_system_state": False, "partial_file_support": False, "context": 0,
           "snapshot_set_id": "6e1bb1d4-3f2a-4c55-9b1e-67a0d5c0f7e1", "volumes": ["/dev/loop0"],
           "snapshot_devices": {"/dev/loop0": "/var/lib/x.img"},
           "volume_providers": {"/dev/loop0": "reflink"},
           "snapshot_ids": {"/dev/loop0": "6e1bb1d4-3f2a-4c55-9b1e-67a0d5c0f7e2"}}
stream = b""
for seq, ev in enumerate(["PrepareForBackup", "PostSnapshot"], 1):
    msg = json.dumps({"type": "event", "seq": seq, "event": ev, "session": session,
                      "components": vss["bcd"]["components"], "read_only": False}).encode()
    stream += struct.pack("<I", len(msg)) + msg
put("writer_protocol", "events", stream)
PY
for t in "$here"/corpus/*; do echo "$(basename "$t"): $(ls "$t" | wc -l) seeds, $(du -sh "$t" | cut -f1)"; done
