"""`hf-evolution probe`: measure the claims of the RNN -> Transformer story on the models you train.

Every account of this history says that vanilla RNNs lose gradients and memories over distance, that LSTM and GRU
gates fix much of that, that RNNs are slow because they are sequential, and that Transformers parallelise but pay a
memory cost growing with the context. Each probe measures one of these claims, for fresh models at matched sizes
(`--models rnn,lstm,gru,gpt2 --size small`) and for checkpoint folders (`--model FOLDER`):

- `gradients`: the norm of d loss(t) / d h(t - k) against the distance k, before and after a short training, and the
  gradient norm of each layer during that training;
- `memory`: synthetic long-range tasks (copy after a delay, the adding problem, multi-query associative recall), each
  trained from scratch for a fixed budget at several distances: accuracy against distance;
- `speed`: training-step and forward time against sequence length; generation time per token and cache bytes against
  context length;
- `context`: the loss on each token against how many tokens precede it, for trained language models;
- `scaling`: test loss against non-embedding parameters, each family trained at several sizes, with a power-law fit
  per family and the sizes where families cross (Kaplan et al. 2020, Fig. 7).

Each writes `results.json` (updated after every model, so an interrupted run keeps what finished) and PNG plots into
its run folder, and prints a table.
"""

from __future__ import annotations

import argparse

from . import context, gradients, memory, scaling, speed

PROBES = {"gradients": gradients, "memory": memory, "speed": speed, "context": context, "scaling": scaling}


def add_parser(subcommands) -> None:
    parser = subcommands.add_parser(
        "probe",
        help="measure gradients through time, memory, speed, context use and scaling with size",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    probes = parser.add_subparsers(dest="probe", required=True, metavar="{" + ",".join(PROBES) + "}")
    for module in PROBES.values():
        module.add_parser(probes)
