"""Run every benchmark and print each ratio with its target and PASS/FAIL; each writes benchmarks/results/*.json.

python benchmarks/run_all.py           # full sizes (minutes on 2 CPU cores)
python benchmarks/run_all.py --smoke   # tiny sizes, under a minute: checks that the benchmarks run
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import classic_lm  # noqa: E402
import data_pipeline  # noqa: E402
import generation  # noqa: E402
import gpu  # noqa: E402
import quantization  # noqa: E402
import revival  # noqa: E402
import trainer_throughput  # noqa: E402
import wrapper_overhead  # noqa: E402
from common import print_checks, write_results  # noqa: E402

BENCHMARKS = {
    "wrapper overhead": wrapper_overhead,
    "generation": generation,
    "training throughput": trainer_throughput,
    "data pipeline": data_pipeline,
    "GPU path": gpu,
    "classic word LM": classic_lm,
    "recurrent revival": revival,
    "dynamic int8 quantization": quantization,
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, under a minute")
    parser.add_argument("--strict", action="store_true", help="exit with 1 when a target is missed")
    args = parser.parse_args(argv)
    summary, start = {}, time.perf_counter()
    for title, module in BENCHMARKS.items():
        print(f"\n===== {title} =====")
        summary[title] = module.main(smoke=args.smoke)["checks"]
    checks = [item for items in summary.values() for item in items]
    print(f"\n===== summary ({time.perf_counter() - start:.0f} s{', smoke sizes' if args.smoke else ''}) =====")
    print_checks("All targets", checks)
    write_results("summary", {"checks": summary}, smoke=args.smoke)
    return 1 if args.strict and not all(item["passed"] for item in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
