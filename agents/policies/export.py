"""The way out of RLlib: turn a training run, one of its checkpoints, or the policy module inside one into a
Hugging Face checkpoint (weights and tokenizer, LoRA adapters merged) that any HF/vLLM tool can load."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any

from research_env.staging import staged_directory, write_once
from research_env.tokenizer import default_cache_root

#: Where the policy module sits inside an RLlib algorithm checkpoint (single-agent, the default module id).
MODULE_IN_CHECKPOINT = Path("learner_group", "learner", "rl_module", "default_policy")


class NotACheckpointError(FileNotFoundError):
    """A path that holds neither a Hugging Face checkpoint nor an RLlib run or checkpoint."""


def is_hf_checkpoint(path: str | os.PathLike) -> bool:
    """A ``config.json`` with a ``model_type``: a training run's own ``config.json`` (its flags) is not one."""
    config = Path(path) / "config.json"
    try:
        return config.is_file() and "model_type" in json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def is_rllib_run(path: str | os.PathLike) -> bool:
    """A training run directory, an RLlib algorithm checkpoint, or the policy module directory of one."""
    try:
        find_module_checkpoint(path)
    except NotACheckpointError:
        return False
    return True


def find_module_checkpoint(path: str | os.PathLike) -> Path:
    """The policy module's directory of ``path``: a run directory (its newest ``checkpoints/iter_*``), its
    ``checkpoints/`` directory, one algorithm checkpoint, or the module directory itself."""
    path = Path(path).expanduser()
    if (path / "module_state.pkl").is_file() or (path / "module_state").is_dir():
        return path
    if (path / MODULE_IN_CHECKPOINT).is_dir():
        return path / MODULE_IN_CHECKPOINT
    for checkpoints in (path / "checkpoints", path):
        found = sorted(p for p in checkpoints.glob("iter_*") if (p / MODULE_IN_CHECKPOINT).is_dir())
        if found:
            return found[-1] / MODULE_IN_CHECKPOINT
    raise NotACheckpointError(
        f"{path} is not a training run or an RLlib checkpoint (no checkpoints/iter_*/{MODULE_IN_CHECKPOINT.as_posix()}"
        " inside); pass the --output directory of scripts/train_grpo_rllib.py or one of its checkpoints/iter_* "
        "directories"
    )


def load_policy(path: str | os.PathLike) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of the policy saved in ``path`` (see :func:`find_module_checkpoint`).

    Built the way RLlib's ``from_checkpoint`` builds it (the class and constructor arguments saved beside the
    state, then ``restore_from_path``), but inference-only, so no frozen KL reference is built, and with its
    starting model found again: a warm-started run trains from ``DIR/policy``, recorded as a path relative to
    where training ran, so from anywhere else it is looked up in the checkpoint's own run directory.
    """
    from ray.rllib.utils.checkpoints import Checkpointable

    module_dir = find_module_checkpoint(path).resolve()
    with (module_dir / Checkpointable.CLASS_AND_CTOR_ARGS_FILE_NAME).open("rb") as f:
        saved = pickle.load(f)
    args, kwargs = saved["ctor_args_and_kwargs"]
    config = dict(kwargs["model_config"])
    base = config.get("model")
    if base is not None and not Path(base).is_dir():
        run_dir = module_dir.parents[5] if len(module_dir.parents) > 5 else module_dir
        if not is_hf_checkpoint(run_dir / Path(base).name):
            raise NotACheckpointError(
                f"the policy in {module_dir} was trained from {base}, which is not there from {Path.cwd()} nor in "
                f"{run_dir}; run the export from the directory training ran in"
            )
        config["model"] = str(run_dir / Path(base).name)
    module = saved["class"](*args, **{**kwargs, "inference_only": True, "model_config": config})
    module.restore_from_path(str(module_dir))
    return module.model, module.tokenizer


def export_policy(source: str | os.PathLike, output: str | os.PathLike) -> Path:
    """Write the policy of ``source`` to ``output`` as a Hugging Face checkpoint with its tokenizer.

    LoRA adapters are merged into the base weights (``merge_and_unload``), so the result loads without peft.
    Written to a staging directory and renamed into place: an interrupted export leaves no half checkpoint.
    """
    with staged_directory(output) as staging:
        _write_hf_checkpoint(source, staging)
    return Path(output)


def _write_hf_checkpoint(source: str | os.PathLike, directory: Path) -> None:
    model, tokenizer = load_policy(source)
    if hasattr(model, "merge_and_unload"):  # a peft model: fold the adapters into the base weights
        model = model.merge_and_unload()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def exported_policy_path(source: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """A Hugging Face checkpoint of ``source`` (a run or RLlib checkpoint), exported once into the cache
    (``<cache>/exports/<hash>``) and reused while the module checkpoint is unchanged."""
    module = find_module_checkpoint(source).resolve()
    stamp = f"{module}:{max(p.stat().st_mtime_ns for p in module.iterdir())}"
    key = hashlib.sha256(stamp.encode()).hexdigest()[:16]
    target = Path(cache_dir if cache_dir is not None else default_cache_root()) / "exports" / key
    return write_once(target, lambda staging: _write_hf_checkpoint(module, staging), complete="config.json")
