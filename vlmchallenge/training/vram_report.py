"""Human-readable VRAM breakdowns (a text table) and an optional stacked-bar chart."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from vlmchallenge.training.vram_math import GIB, BatchPlan, FootprintInputs


def plan_table(p: BatchPlan) -> str:
    width = max(len(k) for k in p.terms) + 2
    lines = [f"{'term':<{width}}{'GiB':>9}"]
    lines += [f"{k:<{width}}{v / GIB:>9.3f}" for k, v in p.terms.items()]
    lines.append(
        f"{'total':<{width}}{p.predicted_bytes / GIB:>9.3f}  of budget {p.budget_bytes / GIB:.2f} GiB"
    )
    lines.append(
        f"micro-batch {p.micro_batch} x accumulation {p.accumulate} x world {p.world_size} "
        f"= global batch {p.global_batch}"
    )
    if p.counts:
        lines.append(counts_line(p.counts))
    return "\n".join(lines)


def counts_line(counts: dict[str, int]) -> str:
    """`parameters: total 8,291,375,616 | vision tower 675,759,104 | ...`"""
    return "parameters: " + " | ".join(f"{k} {v:,}" for k, v in counts.items())


def breakdown_png(terms_by_label: dict[str, dict[str, int]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(terms_by_label)
    names = list(next(iter(terms_by_label.values())))
    fig, ax = plt.subplots(figsize=(1.5 + 1.2 * len(labels), 5))
    bottom = [0.0] * len(labels)
    for name in names:
        values = [terms_by_label[lb][name] / GIB for lb in labels]
        ax.bar(labels, values, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel("GiB")
    ax.set_title("Predicted peak memory by term")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_plan(name: str, inputs: FootprintInputs, p: BatchPlan, family=None) -> None:
    table = Table(
        title=f"{name}: predicted peak per GPU (micro-batch {p.micro_batch}, seq {inputs.seq_len} tokens = "
        f"{inputs.vision_tokens} vision + text; logits at {inputs.loss_tokens} answer tokens)"
    )
    table.add_column("term")
    table.add_column("GiB", justify="right")
    table.add_column("share", justify="right")
    for k, v in p.terms.items():
        table.add_row(k, f"{v / GIB:.3f}", f"{100 * v / p.predicted_bytes:.0f}%")
    table.add_row(
        "[bold]total", f"[bold]{p.predicted_bytes / GIB:.3f}", f"of {p.budget_bytes / GIB:.1f} GiB budget"
    )
    console = Console()
    console.print(table)
    if p.counts:
        counts = Table(title="parameters behind the table")
        counts.add_column("parameters")
        counts.add_column("count", justify="right")
        counts.add_column("share of total", justify="right")
        for k, v in p.counts.items():
            counts.add_row(k, f"{v:,}", f"{100 * v / p.counts['total']:.2f}%")
        console.print(counts)
    if family is not None:
        console.print(
            f"family: {family} (time encoding: {family.time_encoding.value}; "
            f"4-bit QLoRA: {'allowed' if family.qlora.allowed else 'refused'} - {family.qlora.why})",
            markup=False,
        )
    console.print(
        f"plan: micro-batch {p.micro_batch} x accumulation {p.accumulate} x world {p.world_size} = "
        f"global batch {p.global_batch} ({inputs.method}, {inputs.optimizer}, checkpointing "
        f"{'on' if inputs.gradient_checkpointing else 'off'})"
    )
