"""Can the configured model be had? Answered before any data work, so a run whose model is neither on disk nor
downloadable fails in seconds, naming the id, the cache it checked and the remedy, instead of after minutes of
transformers' retries with a bare `OSError` (docs/reliability-inputs.md §1-2).

Nothing is downloaded here: a model that is on the hub but not cached is left to transformers to fetch.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from vlmchallenge.models.config import ModelConfig
from vlmchallenge.models.families import DEFAULT_TINY_FAMILY, FAMILIES
from vlmchallenge.utils.input_errors import InputError

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 5.0  # one request, no retries: a reachable hub answers well within this
CONFIG_FILE = "config.json"
# the names transformers' `from_pretrained` looks for; sharded weights are found only through their index
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


class ModelUnavailableError(InputError):
    """`model.pretrained` names a model that cannot be loaded here."""


@dataclass(frozen=True)
class HubAccess:
    """Where hub models are cached and whether the hub may be asked: what transformers will use."""

    cache: str  # the hub cache folder (HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub)
    offline: bool  # HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set
    endpoint: str  # HF_ENDPOINT, else https://huggingface.co

    @classmethod
    def from_environment(cls) -> HubAccess:
        from huggingface_hub import constants

        return cls(constants.HF_HUB_CACHE, constants.is_offline_mode(), constants.ENDPOINT)


def check_model_available(cfg: ModelConfig, hub: HubAccess | None = None) -> str:
    """Where the model will come from (for the log), or `ModelUnavailableError` saying why it cannot.

    tiny: built locally, always available. A folder: it must hold what `AutoProcessor` and
    `AutoModelForImageTextToText` load. A hub id: a complete snapshot in the hub cache, else (not offline) a hub
    that answers one short probe."""
    cfg.validate()
    if cfg.tiny is not None:
        return "the tiny model, built locally"
    ref = cfg.pretrained
    if Path(ref).is_dir():
        missing = missing_model_files(Path(ref))
        if missing:
            raise ModelUnavailableError(
                f"model.pretrained={ref}: the folder lacks {'; '.join(missing)}. Point model.pretrained at a "
                "folder written by `save_pretrained` (a training export, or `hf download <hub id> --local-dir "
                "<folder>`) or at a hub id"
            )
        return f"the local folder {ref}"
    hub = hub or HubAccess.from_environment()
    check_hub_id(ref)
    snapshot, why_not = cached_snapshot(ref, hub.cache)
    if snapshot is not None:
        return f"the hub cache: {snapshot}"
    if hub.offline:
        raise ModelUnavailableError(
            f"{not_here(ref, hub, why_not)}, and HF_HUB_OFFLINE is set, so it cannot be downloaded.\n"
            + how_to_fetch(ref, hub)
        )
    unreachable = probe_hub(ref, hub)
    if unreachable:
        raise ModelUnavailableError(
            f"{not_here(ref, hub, why_not)}, and {unreachable}.\n" + how_to_fetch(ref, hub)
        )
    return f"the hub at {hub.endpoint} (transformers downloads it into {hub.cache})"


def missing_model_files(folder: Path) -> list[str]:
    """What `folder` lacks to load as a model with its processor (empty: nothing)."""
    missing = []
    if not (folder / CONFIG_FILE).is_file():
        missing.append(f"a model config ({CONFIG_FILE})")
    weights = missing_weights(folder)
    if weights:
        missing.append(weights)
    if not any((folder / name).is_file() for name in PROCESSOR_FILES):
        missing.append(f"a processor config ({' or '.join(PROCESSOR_FILES)})")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        missing.append(f"a tokenizer ({', '.join(TOKENIZER_FILES[:-1])} or {TOKENIZER_FILES[-1]})")
    return missing


def missing_weights(folder: Path) -> str | None:
    if any((folder / name).is_file() for name in WEIGHT_FILES):
        return None
    for name in WEIGHT_INDEXES:
        index = folder / name
        if not index.is_file():
            continue
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            return f"readable weights ({name} has no `weight_map` of tensor -> shard file)"
        absent = [s for s in shards if not (folder / s).is_file()]  # a cache symlink to no blob counts too
        if absent:
            return f"{len(absent)} of the {len(shards)} weight shards {name} names (e.g. {absent[0]})"
        return None
    return f"weights ({' or '.join(WEIGHT_FILES)}, or {' or '.join(WEIGHT_INDEXES)} with its shards)"


def check_hub_id(ref: str) -> None:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(ref)
    except HFValidationError as e:
        raise ModelUnavailableError(
            f"model.pretrained={ref}: no such folder ({Path(ref).absolute()}), and not a hub id ({e}). Set "
            f"model.pretrained to a hub id such as {FAMILIES[DEFAULT_TINY_FAMILY].example_hub_id} or to an existing folder "
            "(model.pretrained=/local/dir)"
        ) from None


def cached_snapshot(repo_id: str, cache: str) -> tuple[str | None, str]:
    """The complete cached snapshot of `repo_id`'s main revision, or None and why not."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = snapshot_download(repo_id, cache_dir=cache, local_files_only=True)
    except LocalEntryNotFoundError as e:  # also an incomplete snapshot (IncompleteSnapshotError)
        folder_name = "models--" + repo_id.replace("/", "--")
        if not (Path(cache) / folder_name).is_dir():
            return None, f"no {folder_name} folder"
        return None, f"no complete snapshot in {folder_name} ({str(e).split('. ')[0]})"
    missing = missing_model_files(Path(folder))
    if missing:
        return None, f"its snapshot {folder} lacks {'; '.join(missing)}"
    return folder, ""


def probe_hub(repo_id: str, hub: HubAccess) -> str | None:
    """One request for the model's hub page, without retries: None if it answered, else what went wrong."""
    import httpx2
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    try:
        HfApi(endpoint=hub.endpoint).model_info(repo_id, timeout=PROBE_TIMEOUT_S)
    except GatedRepoError:
        return (
            f"it is gated on {hub.endpoint}: accept its terms at {hub.endpoint}/{repo_id} and log in with "
            "`hf auth login` (or set HF_TOKEN)"
        )
    except RepositoryNotFoundError:
        return (
            f"{hub.endpoint} has no model {repo_id} (check the id; a private one needs `hf auth login` or "
            "HF_TOKEN)"
        )
    except HfHubHTTPError as e:
        return f"the hub at {hub.endpoint} answered {e.response.status_code}"
    except (httpx2.TransportError, OSError) as e:
        return (
            f"the hub at {hub.endpoint} could not be reached within {PROBE_TIMEOUT_S:g} s "
            f"({type(e).__name__}: {e})"
        )
    return None


def not_here(repo_id: str, hub: HubAccess, why_not: str) -> str:
    return f"model.pretrained={repo_id}: not in the Hugging Face cache {hub.cache} ({why_not})"


def how_to_fetch(repo_id: str, hub: HubAccess) -> str:
    folder = Path(hub.cache) / ("models--" + repo_id.replace("/", "--"))
    return (
        f"To get it: on a machine with internet run `hf download {repo_id}` and copy its cache folder "
        f"(~/.cache/huggingface/hub/{folder.name}) to {folder} (or point HF_HUB_CACHE at a copied cache); "
        f"or run `hf download {repo_id} --local-dir /local/dir`, copy that folder here and set "
        "model.pretrained=/local/dir"
    )
