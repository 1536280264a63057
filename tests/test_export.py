"""The way out of RLlib: a real training run exported as a Hugging Face checkpoint generates exactly what the
learner's module generates, and evaluate.py takes the export, the run directory or a checkpoint as --model."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN

pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import evaluate  # noqa: E402
import export_policy  # noqa: E402

from agents.generation.hf_backend import HFBackend  # noqa: E402

#: The smallest training run (tests/test_grpo_train.py's): 1 question x 2 rollouts, 4-token chunks, 1 iteration.
EVAL = [
    "--datasets",
    "musique",
    "--agent",
    "research",
    "--limit",
    "1",
    "--batch-size",
    "1",
    "--max-new-tokens",
    "4",
    "--max-turns",
    "1",
    "--no-progress",
]


def _module(run: Path):
    """The policy module as the learner held it (with its KL reference), rebuilt by RLlib from the checkpoint."""
    from ray.rllib.core.rl_module import RLModule

    from agents.policies.export import find_module_checkpoint

    return RLModule.from_checkpoint(str(find_module_checkpoint(run)))


def _greedy(backend: HFBackend, contexts: list[list[int]]) -> list[list[int]]:
    return [g.token_ids for g in backend.generate(contexts, max_new_tokens=12)]


@pytest.mark.slow
def test_train_export_evaluate(tmp_path):
    run, hf = tmp_path / "run", tmp_path / "hf"
    trained = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "train_grpo_rllib.py"),
            "--output",
            str(run),
            "--iterations",
            "1",
            *TINY_RUN,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    assert "starting Ray" in trained.stdout and "building the algorithm" in trained.stdout  # the slow steps say so
    assert re.search(r"episodes: +\d+%.*ep/s", trained.stderr)  # the bar of episodes finished in the iteration
    assert json.loads((run / "config.json").read_text())["group_size"] == 2

    assert export_policy.main([str(run), "--output", str(hf)]) == 0
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in hf.iterdir()}

    module = _module(run)
    exported = HFBackend.from_pretrained(hf, device="cpu")
    learner = HFBackend(module.model.eval(), module.tokenizer)
    tokenizer = exported.tokenizer
    questions = ["Who was the father of Edward Baring?", "When was the university founded?", "Where is it?"]
    contexts = [tokenizer.encode(f"User: {q}\nAssistant: <think>") for q in questions]
    assert _greedy(exported, contexts) == _greedy(learner, contexts)
    ids = torch.tensor([contexts[0]])
    with torch.no_grad():
        assert torch.equal(exported.model(ids).logits, module.model(ids).logits)
    # The export holds the trained weights, not the starting model's.
    start = HFBackend.from_pretrained(None, device="cpu").model.state_dict()
    assert any(not torch.equal(start[name], value) for name, value in exported.model.state_dict().items())

    for model in (hf, run, run / "checkpoints" / "iter_000001"):
        out = tmp_path / f"eval-{model.name}"
        evaluate.main([*EVAL, "--model", str(model), "--output", str(out)])
        results = json.loads((out / "results.json").read_text())
        assert results["musique"]["n"] == 1 and results["musique"]["tokens"] > 0


def test_a_directory_without_a_checkpoint_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        export_policy.main([str(tmp_path), "--output", str(tmp_path / "hf")])
    assert "not a training run or an RLlib checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "hf").exists()


@pytest.mark.slow
def test_lora_adapters_are_merged_into_the_exported_weights(tmp_path):
    from agents.policies.export import export_policy
    from agents.training.rllib.module import TOKEN_SPACE, TRANSCRIPT_SPACE, CausalLMModule

    lora = {"r": 4, "lora_alpha": 8, "target_modules": "all-linear", "lora_dropout": 0.0}
    module = CausalLMModule(
        observation_space=TRANSCRIPT_SPACE,
        action_space=TOKEN_SPACE,
        inference_only=False,
        model_config={"model": None, "dtype": "float32", "kl_coef": 0.001, "lora": lora},
    )
    with torch.no_grad():  # trained adapters: LoRA's B starts at zero, which would make the merge a no-op
        for name, parameter in module.model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5, generator=torch.Generator().manual_seed(len(name)))
    module.save_to_path(str(tmp_path / "module"))
    hf = export_policy(tmp_path / "module", tmp_path / "hf")
    exported = HFBackend.from_pretrained(hf, device="cpu").model
    assert not any("lora" in name for name in exported.state_dict())
    ids = torch.tensor([module.tokenizer.encode("Who was the father of Edward Baring?")])
    with torch.no_grad():
        adapted, base = module.model(ids).logits, exported(ids).logits
        with module.model.disable_adapter():
            assert not torch.allclose(module.model(ids).logits, adapted, atol=1e-3)  # the adapters matter
    assert torch.allclose(base, adapted, atol=1e-4)


@pytest.mark.slow
def test_a_warm_started_run_exports_from_any_working_directory(tmp_path, monkeypatch):
    from agents.policies.export import MODULE_IN_CHECKPOINT, export_policy
    from agents.policies.models import tiny_qwen2_path
    from agents.training.rllib.module import TOKEN_SPACE, TRANSCRIPT_SPACE, CausalLMModule

    monkeypatch.chdir(tmp_path)  # training ran here, with --output run: its policy is recorded as "run/policy"
    shutil.copytree(tiny_qwen2_path(), tmp_path / "run" / "policy")
    module = CausalLMModule(
        observation_space=TRANSCRIPT_SPACE,
        action_space=TOKEN_SPACE,
        inference_only=False,
        model_config={"model": "run/policy", "dtype": "float32", "kl_coef": 0.0, "lora": None},
    )
    module.save_to_path(str(tmp_path / "run" / "checkpoints" / "iter_000001" / MODULE_IN_CHECKPOINT))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    hf = export_policy(tmp_path / "run", tmp_path / "hf")
    ids = torch.tensor([module.tokenizer.encode("Who was the father of Edward Baring?")])
    with torch.no_grad():
        assert torch.equal(HFBackend.from_pretrained(hf, device="cpu").model(ids).logits, module.model(ids).logits)
