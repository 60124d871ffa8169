#!/usr/bin/env python3
"""Turns bench/corpus.sh's per-profile compare-peers tables into the corpus
report (Markdown on stdout) and DIR/points.tsv for the chart.

  corpus_report.py DIR PROFILE...    reads DIR/PROFILE.md for each profile
"""
import math
import os
import re
import sys


def rows(path):
    """tool -> dict of the numbers compare-peers.sh prints."""
    out = {}
    for line in open(path):
        cells = [c.strip().replace("\0", "|")
                 for c in line.replace("\\|", "\0").strip().strip("|").split("|")]
        if len(cells) != 11 or cells[0] in ("tool", "---") or cells[1].startswith("-"):
            continue
        tool = cells[0]
        out[tool] = dict(backup=float(cells[2]), cpu=float(cells[3]), rss=float(cells[4]),
                         bytes=float(cells[5]), ratio=float(cells[6]), restore=float(cells[8]),
                         restore_rss=float(cells[10]))
    return out


def family(tool):
    """A tool's name without its version (the word after the name), so rows
    match across profiles."""
    words = tool.split()
    if len(words) > 1 and re.fullmatch(r"v?[0-9]+(\.[0-9]+)*", words[1]):
        del words[1]
    return " ".join(words)


def geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def main():
    d, profiles = sys.argv[1], sys.argv[2:]
    table = {p: {family(t): v for t, v in rows(os.path.join(d, p + ".md")).items()} for p in profiles}
    tools = [t for t in table[profiles[0]] if all(t in table[p] for p in profiles)]
    print("| tool | " + " | ".join(profiles) + " | geometric mean |")
    print("|---|" + "---:|" * (len(profiles) + 1))
    for t in tools:
        cells = ["%.0f MB/s, %.2f" % (table[p][t]["backup"], table[p][t]["ratio"]) for p in profiles]
        g = (geomean([table[p][t]["backup"] for p in profiles]),
             geomean([table[p][t]["ratio"] for p in profiles]))
        print("| %s | %s | **%.0f MB/s, %.2f** |" % (t.replace("|", "\\|"), " | ".join(cells), g[0], g[1]))
    print("\nEach cell: backup MB/s of volume, volume ÷ stored bytes.\n")

    g, pc, z1 = "gnomon (used blocks)", "partclone.ext4 | zstd -T2 -3", "zstd -T2 -1"
    print("| target (issue 19) | " + " | ".join(profiles) + " | geometric mean |")
    print("|---|" + "---:|" * (len(profiles) + 1))

    def line(name, f, fmt="%.2f"):
        xs = [f(table[p]) for p in profiles]
        print("| %s | %s | %s |" % (name, " | ".join(fmt % x for x in xs), fmt % geomean(xs)))
    line("gnomon bytes ÷ partclone\\|zstd -3 bytes (≤ 1, mean ≤ 0.9)", lambda r: r[g]["bytes"] / r[pc]["bytes"])
    line("gnomon backup ÷ zstd -T2 -1 MB/s (≥ 1.5, mean ≥ 2)", lambda r: r[g]["backup"] / r[z1]["backup"])
    line("gnomon restore ÷ zstd -d MB/s (≥ 1)", lambda r: r[g]["restore"] / r[z1]["restore"])
    line("gnomon peak RSS MiB, backup / restore (< 200)",
         lambda r: max(r[g]["rss"], r[g]["restore_rss"]), "%.0f")

    with open(os.path.join(d, "points.tsv"), "w") as fh:
        for i, p in enumerate(profiles):
            fh.write("# %s\n" % p)
            for t in tools:
                fh.write('%s\t%.1f\t%.3f\t"%s"\n' % (p, table[p][t]["backup"], table[p][t]["ratio"], t))
            fh.write("\n\n")


if __name__ == "__main__":
    main()
