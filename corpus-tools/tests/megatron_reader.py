#!/usr/bin/env python3
"""Reads token shards with numpy alone, from Megatron-LM's published indexed-dataset layout
(megatron/core/datasets/indexed_dataset.py), and decodes them with the vocab.txt.

usage: megatron_reader.py PREFIX VOCAB_TXT > decoded.txt
Prints one line per sequence (sentence): its word pieces joined back into words, and an
empty line after each document, like the text shards.
"""
import struct
import sys

import numpy as np

DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64,
          6: np.float64, 7: np.float32, 8: np.uint16}


def read_index(path):
    with open(path, "rb") as f:
        assert f.read(9) == b"MMIDIDX\x00\x00", "bad magic"
        (version,) = struct.unpack("<Q", f.read(8))
        assert version == 1, version
        (code,) = struct.unpack("<B", f.read(1))
        (sequences,) = struct.unpack("<Q", f.read(8))
        (documents,) = struct.unpack("<Q", f.read(8))
        offset = f.tell()
    buf = np.memmap(path, mode="r", order="C")
    lengths = np.frombuffer(buf, dtype=np.int32, count=sequences, offset=offset)
    offset += lengths.nbytes
    pointers = np.frombuffer(buf, dtype=np.int64, count=sequences, offset=offset)
    offset += pointers.nbytes
    doc_index = np.frombuffer(buf, dtype=np.int64, count=documents, offset=offset)
    return DTYPES[code], lengths, pointers, doc_index


def main(prefix, vocab_path):
    vocab = open(vocab_path, encoding="utf-8").read().split("\n")
    dtype, lengths, pointers, doc_index = read_index(prefix + ".idx")
    data = np.memmap(prefix + ".bin", mode="r", dtype=dtype, order="C")
    itemsize = np.dtype(dtype).itemsize
    out = sys.stdout
    for d in range(len(doc_index) - 1):
        for s in range(doc_index[d], doc_index[d + 1]):
            start = pointers[s] // itemsize
            ids = data[start:start + lengths[s]]
            words = []
            for i in ids:
                piece = vocab[int(i)]
                if piece.startswith("##") and words:
                    words[-1] += piece[2:]
                else:
                    words.append(piece)
            out.write(" ".join(words) + "\n")
        out.write("\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
