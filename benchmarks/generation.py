"""Generation with the carried state: cached vs uncached speed, and state bytes against context length.

python benchmarks/generation.py [--smoke]
"""

import argparse

import torch
from common import best_time, print_checks, write_results
from transformers import AutoModelForCausalLM

from hf_evolution import LSTMConfig
from hf_evolution.modeling_recurrent import RecurrentCache


def state_bytes(cache: RecurrentCache) -> int:
    return sum(
        layer.recurrent_states[i].nelement() * layer.recurrent_states[i].element_size()
        for layer in cache.layers
        for i in range(layer.number_of_states)
    )


def cached_vs_uncached(model, prompt, new_tokens: int, repeats: int) -> dict:
    def run(use_cache):
        return lambda: model.generate(
            prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, use_cache=use_cache
        )

    cached = best_time(run(True), repeats=repeats)
    uncached = best_time(run(False), repeats=max(1, repeats // 2))
    return {
        "new_tokens": new_tokens,
        "cached_tokens_per_s": round(new_tokens / cached, 1),
        "uncached_tokens_per_s": round(new_tokens / uncached, 1),
        "speedup": round(uncached / cached, 2),
    }


def main(smoke: bool = False) -> dict:
    torch.manual_seed(0)
    hidden, vocab = (64, 1000) if smoke else (650, 10000)
    config = LSTMConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=2)
    model = AutoModelForCausalLM.from_config(config).eval()
    prompt = torch.randint(0, vocab, (1, 16))
    lengths = (8, 32) if smoke else (64, 512)
    speed = [cached_vs_uncached(model, prompt, n, repeats=2 if smoke else 3) for n in lengths]

    contexts = (128, 512) if smoke else (1024, 8192)
    with torch.no_grad():
        sizes = {n: state_bytes(model(torch.randint(0, vocab, (1, n))).cache) for n in contexts}
    expected = 2 * 2 * hidden * 4  # layers x (h, c) x hidden x float32
    print(f"2-layer LSTM, hidden {hidden}, vocab {vocab}, greedy, batch 1, prompt 16 tokens")
    for row in speed:
        print(
            f"  {row['new_tokens']:4d} new tokens: cached {row['cached_tokens_per_s']} tok/s, "
            f"uncached {row['uncached_tokens_per_s']} tok/s, speedup {row['speedup']}x"
        )
    for n, size in sizes.items():
        print(f"  state after {n} tokens of context: {size} bytes")
    checks = [
        {
            "name": "state bytes constant in context length",
            "value": len(set(sizes.values())),
            "target": f"one size ({expected} B)",
            "passed": set(sizes.values()) == {expected},
        }
    ]
    print_checks("Generation (carried state)", checks)
    payload = {
        "model": {"family": "lstm", "hidden_size": hidden, "layers": 2, "vocab": vocab},
        "cached_vs_uncached": speed,
        "state_bytes": {str(n): size for n, size in sizes.items()},
        "checks": checks,
    }
    write_results("generation_smoke" if smoke else "generation", payload)
    return payload


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds")
    main(parser.parse_args().smoke)
