"""GPU path, when a GPU is present: cuDNN kernels run the recurrent layers (no per-step Python loop), bf16 autocast
trains, and training tokens/s of an LSTM against GPT-2 at equal non-embedding parameters on that device.
Without a GPU it says so and checks nothing.

    python benchmarks/gpu.py [--smoke]
"""

import time

import torch
from common import check, print_checks, run_from_command_line, write_results

from hf_evolution.families import build_model

VOCAB = 10_000


def training_tokens_per_second(model, batch, length, steps) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, VOCAB, (batch, length), device="cuda")
    for step in range(steps + 3):  # 3 warm-up steps
        if step == 3:
            torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    return batch * length * steps / (time.perf_counter() - start)


def main(smoke: bool = False) -> dict:
    if not torch.cuda.is_available():
        print("GPU path: no CUDA device here, nothing measured (run this script on a GPU machine).")
        payload = {"skipped": "no CUDA device", "checks": []}
        write_results("gpu", payload, smoke=smoke)
        return payload
    torch.manual_seed(0)
    size = "small" if smoke else "base"
    batch, length, steps = (8, 128, 5) if smoke else (32, 512, 30)
    lstm = build_model("lstm", "lm", size, VOCAB).cuda().train()
    gpt2 = build_model("gpt2", "lm", size, VOCAB).cuda().train()
    ids = torch.randint(0, VOCAB, (batch, length), device="cuda")

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
        lstm(ids, labels=ids).loss.backward()
    kernels = [event.key for event in profile.key_averages()]
    cudnn = [name for name in kernels if "cudnn" in name.lower() or "RNN" in name]

    losses = []
    optimizer = torch.optim.AdamW(lstm.parameters(), lr=3e-3)
    for _ in range(20):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = lstm(ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())

    speeds = {
        name: training_tokens_per_second(model, batch, length, steps)
        for name, model in (("lstm", lstm), ("gpt2", gpt2))
    }
    checks = [
        {
            "name": "cuDNN kernels run the LSTM",
            "value": len(cudnn),
            "target": ">= 1 cuDNN kernel",
            "passed": bool(cudnn),
        },
        {
            "name": "bf16 autocast trains (loss finite and falling)",
            "value": round(losses[-1], 3),
            "target": f"< {round(losses[0], 3)}",
            "passed": all(map(torch.isfinite, map(torch.tensor, losses))) and losses[-1] < losses[0],
        },
        check(
            "LSTM / GPT-2 training tokens per second (recorded, no target)", speeds["lstm"] / speeds["gpt2"], 0.0, True
        ),
    ]
    print(f"GPU: {torch.cuda.get_device_name(0)}; cuDNN kernels: {cudnn[:3]}")
    print(f"  bf16 training loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    print(f"  training tok/s at batch {batch} x {length}: LSTM {speeds['lstm']:,.0f}, GPT-2 {speeds['gpt2']:,.0f}")
    print_checks("GPU path", checks)
    payload = {
        "device": torch.cuda.get_device_name(0),
        "cudnn_kernels": cudnn[:10],
        "bf16_losses": losses,
        "training_tokens_per_s": speeds,
        "checks": checks,
    }
    write_results("gpu", payload, smoke=smoke)
    return payload


if __name__ == "__main__":
    run_from_command_line(main, __doc__, "small sizes")
