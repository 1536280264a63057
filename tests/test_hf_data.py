"""Datasets as users hold them: a Hugging Face Dataset or DatasetDict object, or a save_to_disk directory, in any
supported record format, give the same questions as the file they came from, also through gym.make."""

from __future__ import annotations

import datasets
import gymnasium as gym
import pytest

import research_env  # noqa: F401  (registers the env ids)
from research_env.data import DatasetFormatError, load_qa_dataset

MUSIQUE = "musique/musique_ans_v1.0_dev.sample100.jsonl"
FLASHRAG = "musique/dev.flashrag.sample100.jsonl"


def _records(dataset) -> list[tuple]:
    return [(r.id, r.question, r.golden_answers) for r in dataset]


@pytest.mark.parametrize("name", [MUSIQUE, FLASHRAG])
def test_dataset_objects_and_saved_directories_match_the_file(shared_data, tmp_path, name):
    from_file = load_qa_dataset(shared_data / name)
    table = datasets.load_dataset("json", data_files=str(shared_data / name), split="train")
    assert _records(load_qa_dataset(table)) == _records(from_file)
    splits = datasets.DatasetDict({"train": table.select(range(10)), "dev": table})
    assert _records(load_qa_dataset(splits)) == _records(from_file)  # "dev" before "train" by default
    assert _records(load_qa_dataset(splits, split="train[2:5]")) == _records(from_file)[2:5]
    splits.save_to_disk(str(tmp_path / "dict"))
    table.save_to_disk(str(tmp_path / "one"))
    assert _records(load_qa_dataset(tmp_path / "dict", split="dev")) == _records(from_file)
    one = load_qa_dataset(str(tmp_path / "one"), split="[:3]")
    assert (one.format, _records(one)) == (from_file.format, _records(from_file)[:3])


def test_gym_make_takes_a_dataset_object(shared_data):
    table = datasets.load_dataset("json", data_files=str(shared_data / FLASHRAG), split="train")
    env = gym.make("ReSearch-v0", dataset=table.select(range(5)))
    question_id = table[3]["id"]
    _, info = env.reset(options={"question_id": question_id})
    assert env.unwrapped.record.question == table[3]["question"] and len(env.unwrapped.dataset) == 5
    env.close()


def test_bad_hugging_face_datasets_are_clear_errors(tmp_path):
    splits = datasets.DatasetDict(
        {
            "a": datasets.Dataset.from_dict({"id": ["1"], "question": ["q"], "golden_answers": [["x"]]}),
            "b": datasets.Dataset.from_dict({"id": ["2"], "question": ["r"], "golden_answers": [["y"]]}),
        }
    )
    with pytest.raises(KeyError, match=r"splits \['a', 'b'\]; choose one with split=NAME"):
        load_qa_dataset(splits)
    with pytest.raises(ValueError, match="can only slice it"):
        load_qa_dataset(splits["a"], split="dev")
    with pytest.raises(DatasetFormatError, match=r"cannot tell the format from the keys \['text'\]"):
        load_qa_dataset(datasets.Dataset.from_dict({"text": ["hello"]}))
