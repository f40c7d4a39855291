"""The first step of the GPU check: the versions this Python runs with, and one line per thing the product
needs that they lack. Exits 1 when something needed is missing, so the step table shows it at once.

    python3 bench/device/versions.py

The versions the product is developed and tested with are pinned in pyproject.toml; the lent GPU machine runs
its own (docs/gpu-check.md §1). What is checked here is what the code uses: each family's model and processor
classes in this transformers, and each library the entry points import.
"""

from __future__ import annotations

import importlib.metadata as metadata
import re
import sys

# imported by the entry points and benches; the image supplies some, the bundle (bench/device/bundle.txt) the rest
DISTRIBUTIONS = [
    "torch", "torchvision", "transformers", "tokenizers", "peft", "pytorch-lightning", "torchmetrics",
    "bitsandbytes", "hydra-core", "omegaconf", "webdataset", "litserve", "fastapi", "pydantic", "uvicorn",
    "pillow", "numpy", "scikit-learn", "matplotlib", "rich", "pytest", "psutil",
]  # fmt: skip


# the oldest release that has what the product calls, and what that is (docs/gpu-check.md §3)
MINIMUM = {
    "transformers": (
        "5.23.0",
        "a boolean (batch, seq) logits_to_keep, answer-only logits in training (5.21), and "
        "activation_checkpointing_enable (5.23)",
    ),
}


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def installed() -> tuple[dict[str, str], list[str]]:
    found, missing = {}, []
    for name in DISTRIBUTIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(f"{name}: not installed (bench/device/bundle.txt must carry it)")
            continue
        if name in MINIMUM and version_tuple(found[name]) < version_tuple(MINIMUM[name][0]):
            least, needs = MINIMUM[name]
            missing.append(f"{name} {found[name]} is older than {least}, which the product needs for {needs}")
    return found, missing


def family_gaps() -> list[str]:
    """Each family whose model or processor class this transformers lacks, in one line."""
    import transformers

    from vlmchallenge.models.families import FAMILIES

    gaps = []
    for family in FAMILIES.values():
        absent = [c for c in (family.model_class, family.processor_class) if not hasattr(transformers, c)]
        if absent:
            gaps.append(
                f"{family.title}: transformers {transformers.__version__} lacks {', '.join(absent)}; "
                f"this family needs a transformers that has them"
            )
    return gaps


def main() -> int:
    found, problems = installed()
    print(f"python {sys.version.split()[0]}; " + "; ".join(f"{k} {v}" for k, v in found.items()))
    import torch

    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"CUDA device: {cuda}; torch CUDA {torch.version.cuda}")
    if "transformers" in found:
        problems += family_gaps()
    for line in problems:
        print(f"missing: {line}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
