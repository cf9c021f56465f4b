#!/usr/bin/env python3
"""The usual Python pipeline for BERT pretraining data from PubMed, as a baseline:
xml.etree.iterparse (streamed, elements cleared), NLTK's Punkt sentence splitter,
transformers' BertTokenizerFast, token ids appended to a numpy .bin with a lengths file.
Same filters as corpus-tools' defaults: English, with an abstract, deletions applied.

usage: python_pipeline.py VOCAB_TXT OUT_DIR FILE...
Prints: documents sentences tokens
"""
import gzip
import os
import sys
import xml.etree.ElementTree as ET

import numpy as np
from nltk.tokenize.punkt import PunktSentenceTokenizer
from transformers import BertTokenizerFast


def records(path):
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        for _, elem in ET.iterparse(f, events=("end",)):
            if elem.tag == "MedlineCitation":
                pmid = elem.findtext("PMID")
                art = elem.find("Article")
                title = "".join(art.find("ArticleTitle").itertext()) if art is not None and art.find("ArticleTitle") is not None else ""
                abstract = [" ".join("".join(t.itertext()).split()) for t in art.findall("Abstract/AbstractText")] if art is not None else []
                langs = [l.text for l in art.findall("Language")] if art is not None else []
                yield "add", pmid, title, [a for a in abstract if a], langs
                elem.clear()
            elif elem.tag == "DeleteCitation":
                for p in elem.findall("PMID"):
                    yield "delete", p.text, None, None, None
                elem.clear()


def main(vocab, out_dir, files):
    splitter = PunktSentenceTokenizer()
    tokenizer = BertTokenizerFast(vocab, do_lower_case=True)
    deleted = set()
    for path in files:  # deletions first pass, as they may come after the records
        for kind, pmid, *_ in records(path):
            if kind == "delete":
                deleted.add(pmid)
    os.makedirs(out_dir, exist_ok=True)
    docs = sents = toks = 0
    with open(os.path.join(out_dir, "tokens.bin"), "wb") as bin_file, open(os.path.join(out_dir, "lengths.bin"), "wb") as len_file:
        for path in files:
            for kind, pmid, title, abstract, langs in records(path):
                if kind != "add" or pmid in deleted or not abstract or (langs and "eng" not in langs):
                    continue
                sentences = []
                for paragraph in [title] + abstract:
                    sentences.extend(splitter.tokenize(paragraph))
                ids = tokenizer(sentences, add_special_tokens=False)["input_ids"]
                lengths = np.array([len(i) for i in ids], dtype=np.int32)
                np.fromiter((t for seq in ids for t in seq), dtype=np.uint16).tofile(bin_file)
                lengths.tofile(len_file)
                docs += 1
                sents += len(sentences)
                toks += int(lengths.sum())
    print(docs, sents, toks)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
