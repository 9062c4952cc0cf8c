"""Reading and encoding a big book: time and peak memory.

    python benchmarks/big_book.py --mb 100
    python benchmarks/big_book.py --mb 10 --tokenizer bpe --vocab-size 512

Builds a text of about --mb megabytes in a temp dir (tinyshakespeare repeated, plus a few
non-ASCII characters so the decode is not ASCII-only), then times read_text, building the
vocabulary, encoding and the book's fingerprint (kept for --resume), and reports the peak
resident memory of this process and the size of the id array. Laying out the streams is a
reshape of that array (a view), so no per-window copies exist; the script checks that too.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAKESPEARE = Path(__file__).resolve().parents[1] / "corpora" / "tinyshakespeare.txt"


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--tokenizer", choices=("char", "bpe"), default="char")
    ap.add_argument("--vocab-size", type=int, default=512, help="with --tokenizer bpe")
    args = ap.parse_args()
    import numpy as np

    from chargen.checkpoint import book_fingerprint
    from chargen.corpus import read_text
    from chargen.streams import Streams, split
    from chargen.tokenizer import build_tokenizer

    base = SHAKESPEARE.read_text(encoding="utf-8") + "\nÉté — naïve café 中文 😀\n"
    with tempfile.TemporaryDirectory() as d:
        book = Path(d) / "big.txt"
        with open(book, "w", encoding="utf-8") as f:
            written = 0
            while written < args.mb * 1_000_000:
                f.write(base)
                written += len(base.encode("utf-8"))
        del base
        size = book.stat().st_size
        start_rss = peak_mb()
        t0 = time.perf_counter()
        text = read_text(book)
        t_read = time.perf_counter() - t0
        t0 = time.perf_counter()
        tok = build_tokenizer(args.tokenizer, text, args.vocab_size)  # char: the distinct characters; bpe: + merges
        t_vocab = time.perf_counter() - t0
        t0 = time.perf_counter()
        ids = tok.encode(text)
        t_encode = time.perf_counter() - t0
        n_chars = len(text)
        del text
        t0 = time.perf_counter()
        book_fingerprint(ids)  # what every snapshot keeps so that --resume can refuse another text
        t_fingerprint = time.perf_counter() - t0
        tr, _ = split(ids, 0.1)
        s = Streams.from_ids(tr, 64, 128)
        view = np.shares_memory(s.batch(5)[0], ids)
    total = t_read + t_vocab + t_encode
    print(f"book: {size / 1e6:.1f} MB, {n_chars:,} characters, {args.tokenizer} vocabulary {tok.vocab_size}, "
          f"{len(ids):,} tokens")
    print(f"read_text {t_read:.2f} s   vocabulary {t_vocab:.2f} s   encode {t_encode:.2f} s   total {total:.2f} s "
          f"(target < 20 s: {total / 20:.2f} of it)")
    print(f"fingerprint of the ids (token count + SHA-256) {t_fingerprint:.2f} s: {ids.nbytes / t_fingerprint / 1e9:.2f} GB/s, "
          f"{t_fingerprint / t_encode:.2f} x the encode")
    print(f"peak RSS {peak_mb():.0f} MB (before reading: {start_rss:.0f} MB; target < 1,500 MB: "
          f"{peak_mb() / 1500:.2f} of it); ids: {ids.dtype}, {ids.nbytes / 1e6:.0f} MB; batches are views: {view}")


if __name__ == "__main__":
    main()
