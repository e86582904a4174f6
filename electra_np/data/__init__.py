"""The data pipeline: text in, tokens and batches out. One line per module, in the order data flows:

    tokenizer.py       BERT/ELECTRA WordPiece tokenizer, the vocabulary builder and the one vocabulary hash
    default_corpus.py  the embedded default corpus (CPython's own docstrings and reference manual)
    sources.py         corpus files (text, TSV columns) read as documents and lines; the held-out split
    packing.py         lines -> [CLS] A [SEP] B [SEP] examples, the official ExampleBuilder rules
    prepare.py         prepare_corpus: sources -> packed examples streamed into a prepared folder
    dataset.py         a prepared folder read back: meta, memory-mapped splits, batches, the resumable sampler
    cache.py           the vocabulary and prepared-corpus caches in the user cache folder
    labelled.py        labelled text for fine-tuning: GLUE and TSV readers, pair encoding, padded batches

Imports run downward only: these modules use the package root (atomic, config, ...) and each other, never
train/, cli/ or fast/.
"""
