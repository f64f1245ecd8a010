"""Training throughput through Trainer (our example script, run_clm.py) against a plain PyTorch loop of the kind
in PyTorch's word_language_model example, for the same model, data, batch and optimizer. Target: at least 0.9x.

    python benchmarks/trainer_throughput.py [--smoke]
"""

import importlib.util
import tempfile
import time
from pathlib import Path

import torch
from common import check, print_checks, run_from_command_line, write_results
from torch.utils.data import DataLoader
from transformers import default_data_collator, get_linear_schedule_with_warmup

from hf_evolution.data import load_corpus, pack_for_lm
from hf_evolution.families import build_model
from hf_evolution.tokenization import load_tokenizer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_run_clm():
    spec = importlib.util.spec_from_file_location("run_clm", EXAMPLES / "run_clm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def plain_loop(model, blocks, batch_size, steps, learning_rate) -> float:
    """Tokens per second of: shuffle, collate, forward, backward, clip, AdamW step, schedule."""
    loader = DataLoader(blocks, batch_size=batch_size, shuffle=True, collate_fn=default_data_collator, drop_last=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, steps)
    model.train()
    tokens, start = 0, time.perf_counter()
    for step, batch in enumerate(loader):
        if step == steps:
            break
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += batch["input_ids"].numel()
    return tokens / (time.perf_counter() - start)


def main(smoke: bool = False) -> dict:
    size, batch, block, steps = ("tiny", 8, 32, 20) if smoke else ("small", 16, 64, 120)
    learning_rate = 1e-3
    run_clm = load_run_clm()
    with tempfile.TemporaryDirectory() as folder:
        trainer_tokens_per_s = []
        for family in ("lstm",):
            output = Path(folder) / family
            results = run_clm.main(
                [
                    "--model_type",
                    family,
                    "--size",
                    size,
                    "--output_dir",
                    str(output),
                    "--do_train",
                    "--max_steps",
                    str(steps),
                    "--per_device_train_batch_size",
                    str(batch),
                    "--block_size",
                    str(block),
                    "--learning_rate",
                    str(learning_rate),
                    "--lr_scheduler_type",
                    "linear",
                    "--weight_decay",
                    "0",
                    "--sample_tokens",
                    "0",
                    "--save_strategy",
                    "no",
                    "--logging_steps",
                    "50",
                    "--report_to",
                    "none",
                    "--disable_tqdm",
                    "true",
                    "--seed",
                    "0",
                ]
            )
            trainer_tokens_per_s.append(results["train_tokens_per_second"])
            tokenizer = load_tokenizer(output)
            corpus = load_corpus("bbc-news")
            blocks = pack_for_lm(corpus["train"], tokenizer, block)
            model = build_model(family, "lm", size, tokenizer)
            plain_tokens_per_s = plain_loop(model, blocks, batch, steps, learning_rate)
    ratio = trainer_tokens_per_s[0] / plain_tokens_per_s
    rows = [
        {
            "family": "lstm",
            "size": size,
            "batch": batch,
            "block": block,
            "steps": steps,
            "trainer_tokens_per_s": round(trainer_tokens_per_s[0], 1),
            "plain_tokens_per_s": round(plain_tokens_per_s, 1),
            "ratio": round(ratio, 3),
        }
    ]
    print(f"Training throughput, LSTM at size {size}, batch {batch} x {block} tokens, {steps} steps")
    print(
        f"  Trainer (run_clm.py) {rows[0]['trainer_tokens_per_s']} tok/s, plain loop "
        f"{rows[0]['plain_tokens_per_s']} tok/s, ratio {rows[0]['ratio']}"
    )
    checks = [check("Trainer / plain loop tokens per second", ratio, 0.9, True)]
    print_checks("Training throughput", checks)
    payload = {"rows": rows, "checks": checks}
    write_results("trainer_throughput", payload, smoke=smoke)
    return payload


if __name__ == "__main__":
    run_from_command_line(main, __doc__, "tiny sizes, a few seconds")
