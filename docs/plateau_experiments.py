"""The loop behind "Why the recurrent runs stalled" in docs/compare.md: one language model of compare's default size on
shuffled 16 x 64-token blocks of the embedded corpus, as compare trains it (AdamW, weight decay 0.01, 5% warm-up then
linear decay, gradients clipped to --clip), with any config field set from the command line, so that one suspect at
a time can be changed. Prints the validation loss (256 blocks) at each quarter of the run, the unigram loss of the
training split and the last loss in bits per byte. A plain loop rather than compare: seconds per suspect, not minutes.

python docs/plateau_experiments.py --family rnn --lr 3e-3 --steps 200 --set initializer_range=0.1
python docs/plateau_experiments.py --family gpt2 --lr 3e-3 --steps 600 --vocab-size 4096 --set resid_pdrop=0 \
    --set embd_pdrop=0 --set attn_pdrop=0
"""

import argparse
import json
import math
import time

import torch

from hf_evolution.data import load_corpus, pack_for_lm, unigram_loss
from hf_evolution.families import build_model
from hf_evolution.tokenization import train_tokenizer


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", required=True)
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--vocab-size", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--clip", type=float, default=0.25)
    parser.add_argument("--threads", type=int, default=1, help="the figures of docs/compare.md: 1")
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="a config field (JSON value)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fields = {name: json.loads(value) for name, value in (item.split("=", 1) for item in args.set)}

    corpus = load_corpus("bbc-news", seed=42)
    tokenizer = train_tokenizer(corpus["train"], "bpe", vocab_size=args.vocab_size)
    blocks = pack_for_lm(corpus, tokenizer, 64)
    train = torch.tensor(blocks["train"]["input_ids"])
    validation = torch.tensor(blocks["validation"]["input_ids"][:256])
    unigram = unigram_loss(blocks["train"], len(tokenizer))
    bytes_per_token = sum(len(text.encode()) for text in corpus["train"]["text"]) / train.numel()

    model = build_model(args.family, "lm", "small", tokenizer, seed=args.seed, **fields)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = max(1, args.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (args.steps - step) / (args.steps - warmup)))
    )
    generator = torch.Generator().manual_seed(args.seed)

    @torch.no_grad()
    def validation_loss():
        model.eval()
        losses = [model(input_ids=batch, labels=batch).loss.item() for batch in validation.split(64)]
        model.train()
        return sum(losses) / len(losses)

    start, curve = time.perf_counter(), []
    model.train()
    for step in range(args.steps):
        batch = train[torch.randint(len(train), (16,), generator=generator)]
        model(input_ids=batch, labels=batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % (args.steps // 4) == 0:
            curve.append(round(validation_loss(), 3))
    print(
        f"{args.family} lr {args.lr:g} {fields} seed {args.seed}: validation loss {curve}, unigram {unigram:.3f}, "
        f"last / unigram {curve[-1] / unigram:.3f}, {curve[-1] / math.log(2) / bytes_per_token:.3f} bits per byte, "
        f"{time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
