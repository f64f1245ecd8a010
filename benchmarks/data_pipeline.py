"""Data pipeline: tokenising and packing the embedded corpus against the tokenizer alone on the same text (target:
at most 2x), and the second run served from the datasets cache (target: under a second).

    python benchmarks/data_pipeline.py [--smoke]
"""

import tempfile
import time

from common import check, print_checks, run_from_command_line, write_results

from hf_evolution.data import load_corpus, pack_for_lm
from hf_evolution.tokenization import train_tokenizer


def main(smoke: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as cache_dir:
        corpus = load_corpus("bbc-news", cache_dir=cache_dir, max_documents=100 if smoke else None)
        tokenizer = train_tokenizer(corpus["train"], "bpe", vocab_size=1024 if smoke else None)
        texts = [text for split in corpus.values() for text in split["text"]]

        start = time.perf_counter()
        tokenizer(texts, add_special_tokens=False, verbose=False)
        tokenizer_alone = time.perf_counter() - start

        start = time.perf_counter()
        blocks = pack_for_lm(corpus, tokenizer, 128)
        first = time.perf_counter() - start

        start = time.perf_counter()
        pack_for_lm(corpus, tokenizer, 128)
        cached = time.perf_counter() - start
    tokens = sum(len(split) for split in blocks.values()) * 128
    ratio = first / tokenizer_alone
    print(
        f"Tokenise and pack {len(texts)} documents (~{tokens:,} tokens in blocks of 128, byte-level BPE "
        f"{len(tokenizer)} tokens)"
    )
    print(
        f"  tokenizer alone {tokenizer_alone:.2f} s, tokenise + pack {first:.2f} s (x{ratio:.2f}), "
        f"again from cache {cached:.3f} s"
    )
    checks = [
        check("tokenise + pack / tokenizer alone", ratio, 2.0, False),
        check("second run from the cache (seconds)", cached, 1.0, False, unit=" s"),
    ]
    print_checks("Data pipeline", checks)
    payload = {
        "documents": len(texts),
        "tokenizer_alone_s": round(tokenizer_alone, 3),
        "first_s": round(first, 3),
        "cached_s": round(cached, 4),
        "checks": checks,
    }
    write_results("data_pipeline", payload, smoke=smoke)
    return payload


if __name__ == "__main__":
    run_from_command_line(main, __doc__, "a slice of the corpus, a few seconds")
