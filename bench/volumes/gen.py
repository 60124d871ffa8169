#!/usr/bin/env python3
"""Generated content for bench/volumes/make-profile.sh, reproducible from a
seed: what a volume holds that this machine's own files do not.

  gen.py mail DIR BYTES SEED          a maildir: text messages, some with
                                      base64 attachments
  gen.py noise FILE BYTES SEED        incompressible bytes (video, archives)
  gen.py sqlite FILE BYTES SEED       an SQLite database of orders and
                                      customers, then updates and deletes
  gen.py logs DIR BYTES SEED          rotated application logs
  gen.py mutate FILE PERCENT SEED     rewrites PERCENT of FILE's 4 KiB blocks
"""
import base64
import os
import random
import sqlite3
import sys

WORDS = None


def words(rng):
    """Words from this machine's documentation (text, not noise)."""
    global WORDS
    if WORDS is None:
        pool = []
        for root in ("/usr/share/common-licenses", "/usr/share/doc/bash", "/usr/share/doc/git"):
            for dirpath, _, files in os.walk(root):
                for f in sorted(files):
                    if f.endswith((".gz", ".xz", ".bz2")):
                        continue
                    try:
                        with open(os.path.join(dirpath, f), errors="ignore") as fh:
                            pool.extend(fh.read(200000).split())
                    except OSError:
                        pass
        WORDS = [w for w in pool if w.isprintable()] or ["lorem", "ipsum", "dolor"]
    return WORDS


def sentence(rng, n):
    w = words(rng)
    return " ".join(w[rng.randrange(len(w))] for _ in range(n))


def mail(d, budget, seed):
    rng = random.Random(seed)
    people = ["%s.%s@example.%s" % (rng.choice(words(rng)).lower()[:8], rng.choice(words(rng)).lower()[:8],
                                    rng.choice(["org", "com", "net"])) for _ in range(200)]
    total, i = 0, 0
    for box in ("INBOX", "Sent", "Archive/2024", "Archive/2025", "lists/dev"):
        os.makedirs(os.path.join(d, box, "cur"), exist_ok=True)
    boxes = ["INBOX", "Sent", "Archive/2024", "Archive/2025", "lists/dev"]
    while total < budget:
        body = "\n\n".join(sentence(rng, rng.randint(20, 120)) for _ in range(rng.randint(1, 12)))
        msg = ("From: %s\nTo: %s\nSubject: %s\nDate: Mon, %d Jan 2025 %02d:%02d:00 +0000\n"
               "Message-ID: <%d.%d@example.org>\nMIME-Version: 1.0\n" %
               (rng.choice(people), rng.choice(people), sentence(rng, 6), rng.randint(1, 28),
                rng.randint(0, 23), rng.randint(0, 59), seed, i))
        if rng.random() < 0.15:  # an attachment: a compressed or binary file
            att = base64.encodebytes(rng.randbytes(rng.randint(20000, 400000))).decode()
            msg += ("Content-Type: multipart/mixed; boundary=b\n\n--b\n\n%s\n--b\n"
                    "Content-Transfer-Encoding: base64\n\n%s--b--\n" % (body, att))
        else:
            msg += "Content-Type: text/plain\n\n" + body + "\n"
        path = os.path.join(d, boxes[i % len(boxes)], "cur", "%d.%d.mail:2,S" % (1700000000 + i, seed))
        with open(path, "w") as fh:
            fh.write(msg)
        total += len(msg)
        i += 1


def noise(path, budget, seed):
    rng = random.Random(seed)
    with open(path, "wb") as fh:
        left = budget
        while left > 0:
            n = min(left, 1 << 20)
            fh.write(rng.randbytes(n))
            left -= n


def sqlite(path, budget, seed):
    rng = random.Random(seed)
    db = sqlite3.connect(path)
    db.executescript("""
      pragma journal_mode=wal;
      create table customer(id integer primary key, name text, email text, address text, note text);
      create table orders(id integer primary key, customer integer, placed text, total real,
                          status text, lines text);
      create index orders_customer on orders(customer);
      create index orders_placed on orders(placed);
    """)
    n = 0
    while os.path.getsize(path) + os.path.getsize(path + "-wal") < budget:
        db.executemany("insert into customer(name,email,address,note) values(?,?,?,?)",
                       [(sentence(rng, 2), "c%d@example.org" % (n + k), sentence(rng, 6),
                         sentence(rng, rng.randint(0, 30))) for k in range(500)])
        db.executemany("insert into orders(customer,placed,total,status,lines) values(?,?,?,?,?)",
                       [(rng.randint(1, n + 500), "2025-%02d-%02d" % (rng.randint(1, 12), rng.randint(1, 28)),
                         rng.random() * 1000, rng.choice(["new", "paid", "shipped", "returned"]),
                         ";".join("sku%d:%d" % (rng.randint(1, 99999), rng.randint(1, 9))
                                  for _ in range(rng.randint(1, 8)))) for _ in range(2000)])
        db.commit()
        n += 500
        db.execute("pragma wal_checkpoint(truncate)")
    # A year of churn: updates in place, deletes that leave free pages.
    db.execute("update orders set status='archived' where id % 7 = 0")
    db.execute("delete from orders where id % 5 = 0")
    db.execute("delete from customer where id % 11 = 0")
    db.commit()
    db.execute("pragma wal_checkpoint(truncate)")
    db.close()


def logs(d, budget, seed):
    rng = random.Random(seed)
    os.makedirs(d, exist_ok=True)
    total, k = 0, 0
    levels = ["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"]
    while total < budget:
        lines = []
        for _ in range(20000):
            lines.append("2025-%02d-%02dT%02d:%02d:%02d.%03dZ %s [worker-%d] %s id=%08x took=%dms\n" %
                         (rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23), rng.randint(0, 59),
                          rng.randint(0, 59), rng.randint(0, 999), rng.choice(levels), rng.randint(1, 16),
                          sentence(rng, rng.randint(3, 12)), rng.getrandbits(32), rng.randint(1, 5000)))
        text = "".join(lines)
        with open(os.path.join(d, "app.log.%d" % k), "w") as fh:
            fh.write(text)
        total += len(text)
        k += 1


def mutate(path, percent, seed):
    rng = random.Random(seed)
    size = os.path.getsize(path)
    blocks = size // 4096
    with open(path, "r+b") as fh:
        for _ in range(int(blocks * percent / 100)):
            fh.seek(rng.randrange(blocks) * 4096)
            fh.write(rng.randbytes(64) + bytes(4032))


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    cmd, target, amount, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    if cmd == "mutate":
        mutate(target, float(amount), seed)
    else:
        {"mail": mail, "noise": noise, "sqlite": sqlite, "logs": logs}[cmd](target, int(amount), seed)


if __name__ == "__main__":
    main()
