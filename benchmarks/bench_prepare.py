"""How fast does prepare_corpus turn the 15 MB Gutenberg corpus into examples, and does memory stay flat?

    python benchmarks/bench_prepare.py [--repeat 3] [--max-seq-length 128] [--split-sentences] [--baseline]

1. Vocabulary: build_vocab(size 8000) over the corpus once, cached as a vocab.txt under the electra_np
   cache folder ($ELECTRA_NP_CACHE, else ~/.cache/electra_np); built in a child process so that its
   memory does not count below.
2. Check: on the first ~1 MB of the corpus, prepare_corpus with the word cache gives byte-identical
   files to the reference path, `tokenizer.encode(line)` on every line (cache_words=False).
3. Time: each run prepares the whole corpus in a fresh process (so peak RSS is that run's own) and
   reports wall time, lines/s, tokens/s, peak RSS (resource.getrusage ru_maxrss) and the resident
   memory sampled at about 10% and at 100% of the input (flat memory: the two are close).
   --baseline alternates runs of the reference path (cache_words=False) for a ratio.
Skips with a message when ../shared/data is absent.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from electra_np.data import prepare as data  # noqa: E402
from electra_np.data.default_corpus import cache_dir  # noqa: E402
from electra_np.data.tokenizer import Tokenizer, build_vocab, load_vocab, save_vocab  # noqa: E402

CORPUS = ROOT.parent / "shared" / "data" / "en_gutenberg" / "gutenberg_en.txt"
VOCAB_SIZE = 8000
CHECK_BYTES = 1_000_000


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def vocab_path() -> Path:
    path = cache_dir() / f"bench_gutenberg_vocab{VOCAB_SIZE}.txt"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--build-vocab", str(path)], check=True)
        print(f"built vocabulary ({VOCAB_SIZE}) in {time.perf_counter() - t0:.1f} s -> {path}")
    return path


def worker(args) -> None:
    """One timed prepare_corpus in this fresh process; prints a JSON line of measurements."""
    tokenizer = Tokenizer(load_vocab(args.vocab))
    rss_start = rss_mb()
    samples = {}

    def progress(p):
        if p["fraction"] >= 0.1 and "10%" not in samples:
            samples["10%"] = rss_mb()

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        meta = data.prepare_corpus([args.input], tokenizer, Path(tmp) / "out", args.max_seq_length,
                                   progress=progress, split_sentences=args.split_sentences,
                                   cache_words=not args.no_cache)
        wall = time.perf_counter() - t0
    samples["100%"] = rss_mb()
    tokens = sum(s["tokens"] for s in meta["splits"].values())
    print(json.dumps({"wall": wall, "lines": meta["lines"], "tokens": tokens,
                      "examples": {k: v["examples"] for k, v in meta["splits"].items()},
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "rss_start_mb": rss_start, "rss_10_mb": samples.get("10%", float("nan")),
                      "rss_end_mb": samples["100%"], "word_cache": meta["word_cache"]}))


def run_worker(vocab: Path, args, no_cache: bool) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--vocab", str(vocab), "--input", str(args.input),
           "--max-seq-length", str(args.max_seq_length)]
    cmd += ["--split-sentences"] * args.split_sentences + ["--no-cache"] * no_cache
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def check_against_reference(tokenizer, args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        head = Path(tmp) / "head.txt"
        with open(args.input, "rb") as src, open(head, "wb") as dst:
            for line in src:
                dst.write(line)
                if dst.tell() >= CHECK_BYTES:
                    break
        kwargs = dict(max_seq_length=args.max_seq_length, eval_fraction=0.0, progress=False,
                      split_sentences=args.split_sentences)
        cached = data.prepare_corpus([head], tokenizer, Path(tmp) / "cached", **kwargs)
        data.prepare_corpus([head], tokenizer, Path(tmp) / "reference", cache_words=False, **kwargs)
        assert cached["word_cache"], "the word cache switched itself off: tokenizer splits across spaces?"
        for name in ("train.ids.npy", "train.types.npy"):
            same = (Path(tmp) / "cached" / name).read_bytes() == (Path(tmp) / "reference" / name).read_bytes()
            assert same, f"{name}: word-cached output differs from tokenizer.encode(line)"
        n = cached["splits"]["train"]["examples"]
    print(f"check: word-cached == tokenizer.encode(line) on the first {CHECK_BYTES / 1e6:.0f} MB ({n} examples)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, default=CORPUS)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--split-sentences", action="store_true")
    parser.add_argument("--baseline", action="store_true", help="also time cache_words=False, alternating")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-cache", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--vocab", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--build-vocab", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build_vocab:
        with open(args.input, encoding="utf-8") as f:
            save_vocab(build_vocab(f, VOCAB_SIZE), args.build_vocab)
        return
    if args.worker:
        worker(args)
        return
    if not args.input.is_file():
        print(f"skipped: corpus {args.input} is absent (the real corpora live in ../shared/data)")
        return
    vocab = vocab_path()
    check_against_reference(Tokenizer(load_vocab(vocab)), args)
    run_worker(vocab, args, no_cache=False)  # warm-up: file cache, imports
    runs = {"word cache": []}
    if args.baseline:
        runs["reference"] = []
    for _ in range(args.repeat):
        for name in runs:
            runs[name].append(run_worker(vocab, args, no_cache=name == "reference"))

    size = args.input.stat().st_size
    print(f"\n{args.input.name}: {size / 1e6:.1f} MB, T={args.max_seq_length}, vocab {VOCAB_SIZE}, "
          f"split_sentences={args.split_sentences}, {args.repeat} runs each, python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cores")
    print(f"{'path':<11} {'median s':>9} {'min-max s':>12} {'lines/s':>9} {'tokens/s':>10} {'examples':>15} "
          f"{'peak RSS':>9} {'RSS 10%->100%':>14} {'ratio':>6}")
    base = statistics.median(r["wall"] for r in runs.get("reference", runs["word cache"]))
    for name, results in runs.items():
        walls = [r["wall"] for r in results]
        med, r0 = statistics.median(walls), results[0]
        examples = f"{r0['examples']['train']}+{r0['examples']['eval']}"
        print(f"{name:<11} {med:9.2f} {min(walls):5.2f}-{max(walls):<6.2f} {r0['lines'] / med:9,.0f} "
              f"{r0['tokens'] / med:10,.0f} {examples:>15} {max(r['peak_rss_mb'] for r in results):7.0f}MB "
              f"{r0['rss_10_mb']:6.0f}->{r0['rss_end_mb']:<5.0f}MB {base / med:5.2f}x")


if __name__ == "__main__":
    main()
