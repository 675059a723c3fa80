"""Each component switch that is on by default, turned off alone, on the built-in data with full-scene captions
(docs/benchmarks.md, "Switches kept and removed"): the demo's model and recipe (`centerfocus demo`), the periphery
described too, so that what the periphery's components do shows in the captions.

    python benchmarks/switch_ablation.py --max_steps 1000 --out benchmarks/results/switch_ablation.json
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from common import report  # benchmarks/ runs as scripts: python benchmarks/NAME.py

from centerfocus.tools.demo import DEMO_CONFIG
from centerfocus.tools.demo import main as demo_main


VARIANTS = {
    "default (demo model)": "",
    "channel_pruning_type=none": "channel_pruning_type=none",
    "channel_attention_type=none": "channel_attention_type=none",
    "modality_gate_type=none": "modality_gate_type=none",
    "modality_embedding_type=none": "modality_embedding_type=none",
    "center_weighting_type=none": "center_weighting_type=none",
    "contrastive_loss_weight=0.1": "contrastive_loss_weight=0.1",
}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max_steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="Comma-separated names of VARIANTS.")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name in args.variants.split(","):
            overrides = DEMO_CONFIG + ("," + VARIANTS[name] if VARIANTS[name] else "")
            start = time.perf_counter()
            metrics = demo_main(["--output_dir", f"{work}/{len(rows)}", "--describe_periphery", "--max_steps",
                                 str(args.max_steps), "--seed", str(args.seed), "--config_overrides", overrides])
            row = {"variant": name, "seconds": round(time.perf_counter() - start, 1),
                   **{k: round(metrics[k], 4) for k in ("exact_match", "center_phrase_exact_match", "bleu4", "cider")}}
            print(json.dumps(row), flush=True)
            rows.append(row)
    results = {"command": "python benchmarks/switch_ablation.py " + " ".join(argv or sys.argv[1:]), "rows": rows,
               "note": "one seed each; demo model (width 128, 1+2 layers, 64 px), 2000 training and 200 held-out "
                       "scenes with full-scene captions"}
    report(results, args.out)
    return results


if __name__ == "__main__":
    main()
