"""The benchmarks run (tiny sizes) and report every target, so they never rot; the ratios themselves are measured by
`python benchmarks/run_all.py`, not asserted here (a shared CI machine is too noisy for speed targets)."""

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_run_all_smoke_reports_every_target_and_writes_its_results():
    for stale in (BENCHMARKS / "results").glob("*_smoke.json"):  # what is read below must come from this run
        stale.unlink()
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "run_all.py"), "--smoke"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((BENCHMARKS / "results" / "summary_smoke.json").read_text())
    checks = summary["checks"]
    assert set(checks) == {
        "wrapper overhead",
        "generation",
        "training throughput",
        "data pipeline",
        "GPU path",
        "classic word LM",
        "recurrent revival",
        "dynamic int8 quantization",
    }
    names = [item["name"] for items in checks.values() for item in items]
    for family in ("lstm", "gru", "rnn", "mingru", "minlstm"):
        assert f"{family} training step, ours / plain PyTorch" in names
    assert "minGRU training step speed-up over GRU, 128 tokens x 2, causal LM" in names
    assert "minGRU training step speed-up over GRU, 128 tokens x 2, without the vocabulary head" in names
    assert "minGRU per-token time, 256 / 16 tokens of context" in names
    for batch in (1, 8):
        assert f"generate() / hand-written loop tokens/s, batch {batch}" in names
    assert "Trainer / plain loop tokens per second" in names and "tokenise + pack / tokenizer alone" in names
    for item in (item for items in checks.values() for item in items):
        assert item["target"] and isinstance(item["passed"], bool), item
        status = "PASS" if item["passed"] else "FAIL"
        assert f"{status}  {item['name']}" in result.stdout, "each target is printed with PASS/FAIL"
    assert "test perplexity, ours / classic (same recipe)" in names
    assert any(name.startswith("test perplexity, ours with the AWD options / classic") for name in names)
    assert "validation perplexity, int8 / float" in names
    assert "per-token decoding time at batch 1, int8 / float, 1 thread" in names
    assert any(name.startswith("saved weights, int8 / float") for name in names)
    for name in (
        "wrapper_overhead",
        "generation",
        "trainer_throughput",
        "data_pipeline",
        "gpu",
        "classic_lm",
        "revival",
        "quantization",
    ):
        assert json.loads((BENCHMARKS / "results" / f"{name}_smoke.json").read_text())["machine"]["versions"]["torch"]
    # The one invariant that is not a speed: the recurrent state does not grow with the context.
    state = next(item for item in checks["generation"] if item["name"].startswith("LSTM state bytes"))
    assert state["passed"], state
