"""Train the small language models that the `hf-evolution probe context` figure of docs/probes.md reads.

Each family (parameter-matched at --size) is trained for the same number of steps on the same blocks of the embedded
BBC News corpus with a shared byte-level BPE tokenizer, then saved with its tokenizer, so that any probe takes the
folder as `--model`. Each family trains as compare's default preset trains it: its own AdamW learning rate and
gradient clipping (each family's `learning_rates` and `max_grad_norm` in the family registry), no dropout, a 4,096-token vocabulary. A plain loop
rather than Trainer, to stay a few lines long. With several seeds, each model goes to <output>/seed<N>/<family>.

`--init transformers` replaces our recurrent initialisation by the generic one of transformers models (normal
weights of std 0.02, Xavier-uniform recurrent matrices, zero biases), to measure what the choice is worth.

python docs/train_probe_lms.py --output runs/probe-lms [--steps 600] [--size small] [--seeds 0,1]
    [--init {ours,transformers}]
"""

import argparse
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from hf_evolution.data import load_corpus, pack_for_lm
from hf_evolution.families import FAMILIES, build_model
from hf_evolution.tokenization import train_tokenizer


def blocks(dataset, tokenizer, block_size):
    return pack_for_lm(dataset, tokenizer, block_size).with_format("torch")[:]["input_ids"]


@torch.no_grad()
def generic_initialisation(model):
    """What a transformers model without RNN-specific init would start from."""
    for module in model.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
            torch.nn.init.normal_(module.weight, std=0.02)
        elif isinstance(module, torch.nn.RNNBase):
            for name, weight in module.named_parameters():
                if name.startswith("weight"):
                    torch.nn.init.xavier_uniform_(weight)
        for name, bias in module.named_parameters(recurse=False):
            if "bias" in name:
                torch.nn.init.zeros_(bias)


@torch.no_grad()
def validation_loss(model, data, batch_size):
    model.eval()
    losses = [model(input_ids=batch, labels=batch).loss.item() for batch in data.split(batch_size)]
    return sum(losses) / len(losses)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--families", default="rnn,lstm,gru,gpt2")
    parser.add_argument("--size", default="small")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--block-size", type=int, default=512)
    parser.add_argument("--lr", type=float, help="one learning rate for every family (default: each its own)")
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--seeds", default="0", help="comma-separated seeds of the models (the tokenizer is shared)")
    parser.add_argument("--init", choices=("ours", "transformers"), default="ours")
    args = parser.parse_args()

    corpus = load_corpus("bbc-news")
    tokenizer = train_tokenizer(corpus["train"], "bpe", vocab_size=args.vocab_size)
    train, validation = (
        blocks(corpus["train"], tokenizer, args.block_size),
        blocks(corpus["validation"], tokenizer, args.block_size),
    )
    warmup = max(args.steps // 10, 1)

    def learning_rate_factor(step):  # linear warm-up, then cosine decay to zero
        return min((step + 1) / warmup, 0.5 * (1 + math.cos(math.pi * step / args.steps)))

    seeds = [int(seed) for seed in args.seeds.split(",")]
    for seed in seeds:
        output = args.output / f"seed{seed}" if len(seeds) > 1 else args.output
        for family in args.families.split(","):
            train_one(family, seed, args, tokenizer, train, validation, learning_rate_factor, output / family)


def train_one(family, seed, args, tokenizer, train, validation, learning_rate_factor, output):
    dropout = dict.fromkeys(FAMILIES[family].dropout_fields, args.dropout)
    model = build_model(family, "lm", args.size, tokenizer, seed=seed, **dropout)
    if args.init == "transformers":
        generic_initialisation(model)
    learning_rate = args.lr or FAMILIES[family].learning_rates["lm"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate_factor)
    generator = torch.Generator().manual_seed(seed)  # every family reads the same blocks in the same order
    start = time.perf_counter()
    model.train()
    for _ in tqdm(range(args.steps), desc=f"{family} seed {seed}"):
        batch = train[torch.randint(len(train), (args.batch_size,), generator=generator)]
        model(input_ids=batch, labels=batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), FAMILIES[family].max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    minutes = (time.perf_counter() - start) / 60
    loss = validation_loss(model, validation, args.batch_size)
    print(f"{family} seed {seed}: {minutes:.1f} min, validation loss {loss:.3f} (perplexity {math.exp(loss):.1f})")
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)


if __name__ == "__main__":
    main()
