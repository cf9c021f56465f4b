#!/usr/bin/env python3
"""Scales the 2016 MEDLINE sample up: COPIES copies of medline16n0902.xml.gz, each with its
PMIDs given a distinct numeric prefix so that no copy supersedes another.

usage: make_input.py SOURCE_XML_GZ OUT_DIR COPIES
"""
import gzip
import os
import sys


def main(source, out_dir, copies):
    with gzip.open(source, "rt", encoding="utf-8") as f:
        xml = f.read()
    os.makedirs(out_dir, exist_ok=True)
    for k in range(1, copies + 1):
        path = os.path.join(out_dir, f"medline16n{k:04d}.xml.gz")
        if os.path.exists(path):
            continue
        text = xml.replace('<PMID Version="1">', f'<PMID Version="1">{k}')
        with gzip.open(path + ".tmp", "wt", encoding="utf-8", compresslevel=6) as g:
            g.write(text)
        os.rename(path + ".tmp", path)
    print(f"{copies} files, {copies * len(xml.encode()) / 1e6:.0f} MB of XML")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
