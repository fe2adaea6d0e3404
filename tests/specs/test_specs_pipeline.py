"""specs/pipeline.py: the cross-field rules of the document that need a task or the model's ids,
checked by ``maskgrpo validate`` before anything runs (exit 2, one line per error naming the field
path, no traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest

from maskgrpo.cli import main

ROOT = Path(__file__).resolve().parents[2]
TOY_TEXT = str(ROOT / "pipelines" / "toy-text.yaml")
SUDOKU = ["--set", "task.name=sudoku-4x4", "--set", "task.params={}"]
WIDE_EVAL = ["--set", "evaluate.sampler={gen_length: 24, steps: 24, block_length: 24, temperature: 0.0}"]
WIDE_RL = ["--set", "rl.sampler={gen_length: 24, steps: 24, block_length: 8, temperature: 1.0}"]


def _validate(capsys, *args: str) -> tuple[int, list[str]]:
    code = main(["validate", TOY_TEXT, *args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, [line.removeprefix("maskgrpo: error: ") for line in captured.err.splitlines() if line.strip()]


@pytest.mark.parametrize("extra, field", [(WIDE_EVAL, "rl.sampler.gen_length"), (WIDE_RL, "evaluate.sampler.gen_length")],
                         ids=["rollout", "evaluate"])
def test_a_sampler_too_short_for_the_tasks_answers_is_refused(capsys, extra, field):
    # sudoku-4x4's answers are 16 digits + EOS = 17 tokens; toy-text's samplers make 8.
    code, lines = _validate(capsys, *SUDOKU, *extra)
    assert (code, lines) == (2, [f"{TOY_TEXT}: {field}: 8 is shorter than task sudoku-4x4's 17-token answers "
                                 "(the longest answer and its EOS)"])


def test_both_samplers_too_short_give_one_line_each(capsys):
    code, lines = _validate(capsys, *SUDOKU)
    assert code == 2 and [line.split(": ")[1] for line in lines] == ["rl.sampler.gen_length", "evaluate.sampler.gen_length"]


def test_the_issues_command_is_refused(capsys):
    # the command of the report: toy-text's params {length: 6} do not fit sudoku-4x4 (one line)
    code, lines = _validate(capsys, "--set", "task.name=sudoku-4x4")
    assert (code, lines) == (2, [f"{TOY_TEXT}: task.params: Value error, task 'sudoku-4x4' has no parameter 'length' "
                                 "(unknown: length; valid: min_blanks, max_blanks)"])


def test_long_enough_samplers_and_a_parameter_the_task_refuses(capsys):
    assert _validate(capsys, *SUDOKU, *WIDE_EVAL, *WIDE_RL)[0] == 0  # 24 >= 17: the rule, not something else, failed
    assert _validate(capsys, "--set", "task.params.length=7")[0] == 0  # sort 7 + EOS = 8 fits exactly
    code, lines = _validate(capsys, "--set", "task.params.length=8")
    assert code == 2 and lines[0] == f"{TOY_TEXT}: rl.sampler.gen_length: 8 is shorter than task sort's 9-token answers " \
                                     "(the longest answer and its EOS)"
    code, lines = _validate(capsys, "--set", "task.params.length=41")  # a value the task refuses: found now, not at SFT
    assert (code, lines) == (2, [f"{TOY_TEXT}: task.params: task 'sort': parameter length must be an integer in [1, 40], got 41"])


@pytest.mark.parametrize("path", sorted((ROOT / "pipelines").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_pipeline_still_validates(path, capsys):
    # the document alone (--offline: cluster documents name s3:// data; tests/test_preflight.py checks sources)
    assert main(["validate", str(path), "--offline"]) == 0, capsys.readouterr().err


MMADA = str(ROOT / "pipelines" / "mmada-t2i.yaml")


@pytest.mark.parametrize("setting, line", [
    # the codebook moved onto the text ids: 126000..134191 holds the mask id 126336
    ("model.special_tokens.image_token_offset=126000",
     "model.special_tokens.mask_id: ImageLayout.mask_id (126336) falls inside the codebook ids 126000..134191 "
     "(the codebook: image_token_offset + image_codebook_size)"),
    ("model.special_tokens.soi_id=126400",  # a marker inside the codebook 126349..134540
     "model.special_tokens.soi_id: ImageLayout.soi_id (126400) falls inside the codebook ids 126349..134540 "
     "(the codebook: image_token_offset + image_codebook_size)"),
    ("model.special_tokens.image_token_offset=130000",  # 130000 + 8192 - 1 = 138191 > 134655
     "model.special_tokens.image_codebook_size: ImageLayout ids reach 138191, outside MMaDA-8B's vocabulary of "
     "134656 ids (0..134655)"),
    ("model.special_tokens.t2i_id=134656",  # one past the last id
     "model.special_tokens.t2i_id: ImageLayout ids reach 134656, outside MMaDA-8B's vocabulary of 134656 ids (0..134655)"),
    ("model.special_tokens.soi_id=126085",
     "model.special_tokens.soi_id: ImageLayout.soi_id (126085) equals eoi_id: the mask and the image markers are distinct ids"),
    ("model.special_tokens.image_codebook_size=4096",
     "image.codebook_size: layout 'mmada' has a codebook of 4096 (model.special_tokens.image_codebook_size, MMaDA: "
     "8192), got 8192"),
], ids=["codebook-over-text-ids", "marker-in-codebook", "offset-outside-vocab", "id-outside-vocab", "markers-equal",
        "codebook-size"])
def test_inconsistent_image_ids_are_refused_with_the_field_path(capsys, setting, line):
    code = main(["validate", MMADA, "--set", setting])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert (code, [ln.removeprefix("maskgrpo: error: ") for ln in err.splitlines() if ln.strip()]) == (2, [f"{MMADA}: {line}"])


def test_image_ids_are_read_only_by_the_mmada_layout(capsys):
    assert main(["validate", MMADA, "--offline", "--set", "model.special_tokens.t2i_id=5"]) == 0  # a consistent id is used (test_image.py)
    assert main(["validate", MMADA, "--offline", "--set", "model.special_tokens.image_codebook_size=4096",
                 "--set", "image.codebook_size=4096"]) == 0
    capsys.readouterr()
    toy_image = str(ROOT / "pipelines" / "toy-image.yaml")
    assert main(["validate", toy_image, "--set", "model.special_tokens.t2i_id=5"]) == 2
    assert capsys.readouterr().err.strip() == (f"maskgrpo: error: {toy_image}: model.special_tokens.t2i_id: read only with "
                                               "image.layout 'mmada' (image.layout 'tiny' appends its ids after the "
                                               "character vocabulary)")
    assert main(["validate", TOY_TEXT, "--set", "model.special_tokens.soi_id=5"]) == 2
    assert capsys.readouterr().err.strip() == (f"maskgrpo: error: {TOY_TEXT}: model.special_tokens.soi_id: read only with "
                                               "image.layout 'mmada' (a text run has no image layout)")


def test_a_task_of_the_other_modality_is_refused(capsys):
    # tasks declare the modality their prompts ask for (tasks/base.py): an image task in a text
    # document (and a text task in an image one) would build the wrong sequences at the first stage
    code, lines = _validate(capsys, "--set", "task.name=toy-geneval", "--set", "task.params={}")
    assert (code, lines) == (2, [f"{TOY_TEXT}: task.name: task 'toy-geneval' makes image prompts (modality 'image'); "
                                 "this document's modality is 'text'"])
    image_doc = str(ROOT / "pipelines" / "toy-image.yaml")
    assert main(["validate", image_doc]) == 0
    capsys.readouterr()
    assert main(["validate", image_doc, "--set", "task.name=sort", "--set", "task.params={}"]) == 2
    assert capsys.readouterr().err.strip() == (f"maskgrpo: error: {image_doc}: task.name: task 'sort' makes text prompts "
                                               "(modality 'text'); this document's modality is 'image'")


def test_every_builtin_task_declares_its_modality():
    from maskgrpo.tasks import list_tasks, task_modality

    modalities = {name: task_modality(name) for name in list_tasks()}
    assert {n for n, m in modalities.items() if m == "image"} == {"toy-geneval", "geneval"}
    assert all(m == "text" for n, m in modalities.items() if n not in {"toy-geneval", "geneval"})


OTHER_TOYS = ["toy-countdown-lite", "toy-sudoku-4x4", "toy-add"]  # README "More than one toy"


@pytest.mark.parametrize("stem", OTHER_TOYS)
def test_the_other_toy_pipelines_plan_and_draw_their_splits(stem):
    from maskgrpo.plan import build_plan
    from maskgrpo.specs import load_run_spec
    from maskgrpo.tasks import get_task

    run = load_run_spec(ROOT / "pipelines" / f"{stem}.yaml")
    names = [call.name for call in build_plan(run, "r", "file:///tmp/s", 1)]
    assert names[:3] == ["sft", "evaluate_0", "rollout_1"] and names[-1] == f"evaluate_{run.rl.rounds}"
    task = get_task(run.task.name, **run.task.params)
    assert run.rl.sampler.gen_length >= task.answer_tokens and run.evaluate.sampler.gen_length >= task.answer_tokens
    train = task.examples("train", run.task.train_size, seed=run.seed)
    held_out = task.examples("eval", run.task.eval_size, seed=run.seed)
    assert len(held_out) == run.task.eval_size and not {e.prompt for e in train} & {e.prompt for e in held_out}
