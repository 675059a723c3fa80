"""Draw the benchmark plots of docs/benchmarks.md from the JSON files the benchmark scripts write.

    python benchmarks/plots.py docs/benchmarks
"""

import json
import sys
from pathlib import Path

import matplotlib


matplotlib.use("Agg")
import matplotlib.pyplot as plt


def bar(ax, names, values, title, unit):
    bars = ax.bar(range(len(names)), values, color=["tab:orange" if n.startswith("centerfocus") else "tab:blue"
                                                    for n in names])
    ax.set_xticks(range(len(names)), [n.replace("_", "\n") for n in names], fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(unit, fontsize=8)
    for rect, value in zip(bars, values):
        ax.annotate(f"{value:.3g}", (rect.get_x() + rect.get_width() / 2, rect.get_height()), ha="center",
                    va="bottom", fontsize=7)


def compare_plot(data: dict, path: Path) -> None:
    models = {k: v for k, v in data["models"].items() if "error" not in v}
    names = list(models)
    figure, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    bar(axes[0], names, [models[n]["train_samples_per_second"] for n in names], "training samples/s (batch 8)",
        "samples/s")
    fractions = [models[n].get("fraction_of_interleaved_peak", models[n]["fraction_of_matmul_peak"]) for n in names]
    bar(axes[1], names, fractions, "fraction of fp32 matmul peak (re-measured between steps)", "")
    bar(axes[2], names, [models[n]["generate_b1_cache_s"] for n in names], "generate 32 tokens, batch 1, cache",
        "s")
    bar(axes[3], names, [models[n]["generate_b8_cache_s"] for n in names], "generate 32 tokens, batch 8, cache",
        "s")
    setup = data["setup"]
    figure.suptitle(f"width {setup['width']}, {setup['layers']}+{setup['layers']} layers, 224 px, random weights, "
                    f"{data['machine']['cpu_threads']} CPU threads", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def quality_plot(data: dict, path: Path) -> None:
    figure, ax = plt.subplots(figsize=(6, 4))
    for name, values in data["models"].items():
        ax.scatter(values["training_tflops"], values["center_phrase_exact_match"], s=60, label=name)
        ax.annotate(f"BLEU-4 {values['bleu4']:.3f}", (values["training_tflops"], values["center_phrase_exact_match"]),
                    fontsize=7, xytext=(4, -10), textcoords="offset points")
    ax.set_xlabel("training TFLOPs (forward + backward)")
    ax.set_ylabel("held-out centre-phrase exact match")
    ax.set_title(f"built-in data, {data['steps']} steps x batch {data['batch_size']}", fontsize=9)
    ax.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/benchmarks")
    if (folder / "compare.json").exists():
        compare_plot(json.loads((folder / "compare.json").read_text()), folder / "compare.png")
    if (folder / "quality_per_compute.json").exists():
        quality_plot(json.loads((folder / "quality_per_compute.json").read_text()), folder / "quality_per_compute.png")


if __name__ == "__main__":
    main()
