#!/usr/bin/env python3
"""Hugging Face's reference WordPiece ids for sentences, one sentence per input line.

usage: tokenizer_reference.py (--vocab VOCAB_TXT [--lowercase|--cased] | --json TOKENIZER_JSON) < sentences.txt
Prints the ids of each sentence without special tokens, space-separated, one line each.
BertWordPieceTokenizer is the tokenizers package's BERT tokenizer, the one that
transformers' BertTokenizerFast wraps (same normaliser, pre-tokenizer and model).
"""
import sys

from tokenizers import BertWordPieceTokenizer, Tokenizer


def main(args):
    if args[0] == "--json":
        tok = Tokenizer.from_file(args[1])
        tok.no_padding()
        tok.no_truncation()
    else:
        lowercase = "--cased" not in args
        tok = BertWordPieceTokenizer(args[1], lowercase=lowercase)
    lines = sys.stdin.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for enc in tok.encode_batch(lines, add_special_tokens=False):
        sys.stdout.write(" ".join(map(str, enc.ids)) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
