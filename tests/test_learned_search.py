"""The pieces of the learned-search recipe on a synthetic world: a BPE that spells unseen names with known
syllable tokens, a warm start whose traces search only some of the time, the trainer's split and evaluation
flags, and a short run of the main job that logs greedy held-out evaluations."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest

import research_env  # noqa: F401  (registers the env ids)
from research_env.assets import demo_dataset
from research_env.worlds import WorldConfig, generate_world, spell_out_names, split_syllables

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train_grpo_rllib.py"
WORLD = {"seed": 5, "num_questions": 24, "num_entities": 300, "top_k": 1}


def _script():
    spec = importlib.util.spec_from_file_location("train_grpo_rllib", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _crosses_a_syllable_boundary(tokenizer, word: str) -> bool:
    """Whether a token of `` word`` covers the end of one syllable and the start of the next."""
    from itertools import accumulate

    boundaries = set(list(accumulate(len(s) for s in split_syllables(word)))[:-1])
    position = -1  # the leading space
    for token in tokenizer.tokenize(" " + word):
        end = position + len(tokenizer.convert_tokens_to_string([token]))
        if any(position < b < end for b in boundaries):
            return True
        position = end
    return False


def test_spelled_out_names_give_a_bpe_whose_tokens_rarely_span_two_syllables():
    """Trained on whole names, the BPE merges training names into single tokens; trained on spelled-out names, it
    learns syllables, and names, seen or not, are cut at syllable boundaries (almost always)."""
    from agents.policies.small_vocab import train_small_tokenizer

    world = generate_world(WorldConfig(seed=1, num_questions=50, num_entities=600))
    assert spell_out_names("Bartes was founded by Gantar Besdun.") == "Bar-tes was founded by Gan-tar Bes-dun."
    train_text = world.passages[: len(world.passages) // 2]  # the train split's passages come first
    words = {
        split: sorted({w for r in world.questions[split] for w in r["answer"].split()}) for split in ("train", "test")
    }
    for split_names in (True, False):
        tokenizer = train_small_tokenizer(train_text, vocab_size=2048, split_names=split_names)
        crossing = {split: sum(_crosses_a_syllable_boundary(tokenizer, w) for w in ws) for split, ws in words.items()}
        if split_names:  # a few still do: "Darel" may be cut "Dar|el" when both pieces are syllable tokens
            assert all(crossing[split] <= 0.15 * len(words[split]) for split in words), crossing
        else:
            assert crossing["train"] > 0.5 * len(words["train"]) and crossing["test"] > 0, crossing


def test_warm_start_traces_answer_at_once_with_a_wrong_guess_of_the_same_type():
    from agents.generation.rollout import RolloutConfig, token_env
    from agents.policies.small_vocab import oracle_trace_texts, train_small_tokenizer
    from agents.training.sft import build_sft_dataset

    env = gym.make("ReSearch-Synthetic-v0", split="train", **WORLD)
    dataset = env.unwrapped.dataset
    ids = dataset.ids
    tokenizer = train_small_tokenizer(oracle_trace_texts(env, ids[:4]), vocab_size=512, split_names=True)
    examples = build_sft_dataset(
        token_env(env, tokenizer, RolloutConfig(max_tokens=2048)), ids, seed=3, no_search_share=0.5
    )
    guessed = [e for e in examples if "<search>" not in e.actions[0]]
    assert len(examples) == len(ids) and len(guessed) == len(ids) // 2
    for example in guessed:
        record = dataset[dataset.index_of(example.question_id)]
        guess = example.actions[0].split("\\boxed{")[1].split("}")[0]
        steps = record.metadata["question_decomposition"]
        same_type = {
            r.golden_answers[0]
            for r in dataset
            if r.metadata["question_decomposition"][-1]["answer_type"] == steps[-1]["answer_type"]
        }
        assert guess in same_type and guess not in record.golden_answers
        assert example.reward < 1.0 and sum(example.loss_mask) > 0  # a wrong answer, imitated all the same
    assert all(e.reward == 1.0 for e in examples if e not in guessed)


def test_split_flags_need_an_env_with_splits():
    script = _script()
    args = script.parse_args([])
    assert (args.env, args.split, args.sft_split, args.eval_split) == ("ReSearch-Synthetic-v0", "dev", "train", "test")
    with pytest.raises(SystemExit):
        script.parse_args(["--env", "ReSearch-MuSiQue-v0", "--split", "dev", "--eval-every", "0"])
    with pytest.raises(SystemExit):
        script.parse_args(["--env", "ReSearch-MuSiQue-v0"])  # --eval-every 5 but no held-out questions
    held_out = str(demo_dataset("musique"))
    args = script.parse_args(["--env", "ReSearch-MuSiQue-v0", "--eval-dataset", held_out])
    assert args.split is None and args.eval_dataset == held_out


@pytest.mark.slow
def test_main_job_logs_greedy_held_out_evaluations(tmp_path):
    output = tmp_path / "run"
    kwargs = json.dumps({k: v for k, v in WORLD.items() if k != "top_k"})
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--output",
            str(output),
            "--env-kwargs",
            kwargs,
            "--iterations",
            "2",
            "--eval-every",
            "1",
            "--eval-questions",
            "6",
            "--sft-epochs",
            "1",
            "--prompts",
            "2",
            "--group-size",
            "2",
            "--num-cpus",
            "2",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in rows] == [0, 1, 2]  # the warm-started policy is evaluated first
    for row in rows:
        assert 0.0 <= row["eval/reward"] <= 1.0 and row["eval/searches_per_episode"] >= 0.0
        assert {"eval/f1", "eval/format_ok_rate"} <= row.keys()
    assert "eval reward" in done.stdout and (output / "curves.png").stat().st_size > 0
