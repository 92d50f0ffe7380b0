"""The report's text samples (``newllm.report.samples``): the real checkpoint continues every
prompt, greedy is reproducible, a failing prompt is an error string."""
from __future__ import annotations

from helpers.report import tiny_checkpoint
from newllm.config import ReportConfig
from newllm.report.samples import text_samples


def test_the_real_checkpoint_continues_every_prompt(tiny_report):
    _, _, data = tiny_report
    gen = data["generation"]
    assert [it["prompt"] for it in gen["items"]] == ReportConfig().prompts
    assert all(it["error"] is None and it["continuation"] for it in gen["items"]), gen["items"]
    assert gen["settings"]["mode"] == "greedy (temperature 0)" and gen["settings"]["max_new_tokens"] == 5


def test_samples_of_a_tiny_checkpoint(tmp_path):
    tiny_checkpoint(tmp_path)
    cfg = ReportConfig(prompts=["hello how are you ?", "the capital"], max_new_tokens=4)
    first = text_samples(tmp_path, cfg, seed=0)
    assert first == text_samples(tmp_path, cfg, seed=0)  # greedy: reproducible
    assert [len(it["continuation"].split()) for it in first["items"]] == [4, 4]
    sampled = text_samples(tmp_path, ReportConfig(prompts=["hello"], max_new_tokens=4, temperature=0.7, top_k=3), 9)
    assert sampled["settings"]["mode"] == "sampled: temperature 0.7, top_k 3, random seed 9"


def test_a_failing_prompt_is_an_error_string(tmp_path):
    tiny_checkpoint(tmp_path, vocab_size=6)  # the model cannot read "paris" (id 9)
    out = text_samples(tmp_path, ReportConfig(prompts=["paris", "hello how"], max_new_tokens=3), seed=0)
    bad, good = out["items"]
    assert bad["continuation"] is None and bad["error"].startswith("DataError: the prompt's token ids [9]")
    assert good["error"] is None and len(good["continuation"].split()) == 3
