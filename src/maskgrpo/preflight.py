"""Pre-flight: every model source and dataset a pipeline names exists, before anything runs.

``maskgrpo validate`` and ``maskgrpo run`` call ``check_sources(run, store_uri)`` after the document
validates and before any store is written or orchestrator started; each problem is one line naming
the field and the URI, and the command exits 2. Checked:

1. ``model.source``, ``retrain.initial_source`` and ``image.decoder.source``: ``builtin:tiny`` is
   always there; a local folder must be a folder; a store URI (``file://``/``s3://``, see
   ``models.loading.parse_store_source``) must name a committed output; ``registry:<name>@<ref>``
   must resolve in the run's store (``@champion`` of a registry with no champion yet is fine with
   a retrain section: the first tick starts from ``retrain.initial_source``, which is checked).
2. Dataset files of file tasks: ``task.params.path`` / ``task.params.eval_path`` (local files or
   store objects); every file task needs ``path`` (the task itself refuses it missing, at validate time).

3. A generated task's splits hold ``task.train_size`` / ``task.eval_size`` problems (enumerated
   spaces only, e.g. countdown-lite with small numbers: otherwise the first evaluation fails after SFT).
4. A file task whose dataset files are all local and together at most ``READ_LIMIT`` bytes is read
   and parsed now: a row that does not parse names its file and row, the splits must hold
   ``task.train_size`` / ``task.eval_size`` examples, and with ``model.source: builtin:tiny`` (the
   character tokenizer, one token per character) every prompt and answer must use its characters
   and every answer plus its EOS must fit each text sampler's ``gen_length``.

Store objects and larger files are only checked to exist (a HEAD or a listing, nothing
downloaded): one that does not parse still fails at the first stage, naming its file and line. Not
checked: ``retrain.data`` (a tick's data may land after the document is written) and URLs inside
reward params.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from maskgrpo.specs import RunSpec
    from maskgrpo.tasks.files import FileTask

__all__ = ["check_sources", "check_model_source", "check_dataset"]

BUILTIN = "builtin:tiny"
DATASET_PARAMS = ("path", "eval_path")
READ_LIMIT = 64 << 20  # local dataset files up to this many bytes in all are parsed by the check


def _store_error(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def check_model_source(field: str, source: str, store_uri: str | None = None, initial: str | None = None) -> list[str]:
    """Problems with one model source (empty: it is there). ``store_uri``: where ``registry:`` refs live."""
    from maskgrpo.models.loading import parse_store_source
    from maskgrpo.store import StoreError, open_store
    from maskgrpo.store.registry import parse_registry_source

    if source == BUILTIN:
        return []
    try:
        ref = parse_registry_source(source)
        if ref is not None:
            if store_uri is None:
                return []
            name, alias = ref
            if open_store(store_uri).registry(name).resolve(alias) is None:
                if alias == "champion" and initial is not None:
                    return []  # the first tick: resolve starts from retrain.initial_source
                return [f"{field}: {source!r}: the registry of {name!r} in {store_uri} has no version {alias!r}"]
            return []
        found = parse_store_source(source)
        if found is None:
            if not Path(source).is_dir():
                return [f"{field}: {source!r} is neither {BUILTIN}, a store URI nor an existing folder"]
            return []
        if open_store(found.store).committed(found.run_id, found.stage, found.round) is None:
            what = "imported checkpoint (maskgrpo import)" if found.round is None else f"committed {found.stage} output"
            return [f"{field}: {source!r}: no {what} there"]
    except (StoreError, OSError, ValueError) as err:
        return [f"{field}: {source!r}: {_store_error(err)}"]
    return []


def check_dataset(field: str, path: str | Path) -> list[str]:
    """Problems with one dataset file or store object (empty: it is there)."""
    from maskgrpo.store import StoreError
    from maskgrpo.store.backend import open_backend
    from maskgrpo.tasks.files import is_uri

    if not is_uri(path):
        return [] if Path(path).is_file() else [f"{field}: dataset file not found: {path}"]
    parent, _, name = str(path).rstrip("/").rpartition("/")
    if "://" not in parent or not name:
        return [f"{field}: dataset URI {str(path)!r}: expected <scheme>://<bucket or folder>/.../<file>"]
    try:
        keys = open_backend(parent).find(name)
    except (StoreError, OSError, ValueError) as err:
        return [f"{field}: {path}: {_store_error(err)}"]
    if name not in {k.removeprefix("./") for k in keys}:
        return [f"{field}: dataset object not found: {path}"]
    return []


def _task_datasets(run: "RunSpec") -> list[tuple[str, str | Path]]:
    """(field, path) of every dataset the task reads (its path params; a missing required path is
    the task's own validate-time error)."""
    out: list[tuple[str, str | Path]] = [(f"task.params.{k}", run.task.params[k]) for k in DATASET_PARAMS
                                         if isinstance(run.task.params.get(k), (str, Path))]
    if run.retrain is not None and run.retrain.data:
        out = [(f, p) for f, p in out if f != "task.params.path"]  # the tick's snapshot becomes the path
    return out


def check_split_sizes(run: "RunSpec") -> list[str]:
    """Problems with the sizes asked of an enumerated generated task's splits, and of a file task
    whose data is small and local (``check_local_file_task``)."""
    from maskgrpo.tasks import get_task
    from maskgrpo.tasks.base import GeneratedTask
    from maskgrpo.tasks.files import FileTask

    try:
        task = get_task(run.task.name, **run.task.params)
    except ValueError as err:  # a value the task refuses, e.g. a file task without its path
        return [f"task.params: {err}"]
    if isinstance(task, FileTask):
        return check_local_file_task(run, task)
    if not isinstance(task, GeneratedTask) or not task._enumerable():
        return []
    return _split_shortfalls(run, task, "problems")


def _split_shortfalls(run: "RunSpec", task: Any, what: str) -> list[str]:
    out = []
    for field, split, asked in (("task.train_size", "train", run.task.train_size), ("task.eval_size", "eval", run.task.eval_size)):
        have = task.split_size(split)
        if asked > have:
            out.append(f"{field}: {asked} asked, but the {split} split of {task!r} holds {have} {what}")
    return out


def check_local_file_task(run: "RunSpec", task: "FileTask") -> list[str]:
    """Item 4 of the module docstring; [] when a dataset is a store URI or the files are too large
    to read now (they are read at the first stage)."""
    from maskgrpo.tasks import CharTokenizer
    from maskgrpo.tasks.files import is_uri

    paths = [p for p in (task.path, task.eval_path) if p is not None]
    if any(is_uri(p) for p in paths) or not all(Path(p).is_file() for p in paths) \
            or sum(Path(p).stat().st_size for p in paths) > READ_LIMIT:
        return []
    try:
        out = _split_shortfalls(run, task, "examples")
    except (ValueError, OSError) as err:  # a row that does not parse: the task names file and row
        return [f"task.params.path: {str(err).splitlines()[0]}"]
    if run.model.source != BUILTIN or run.modality != "text":
        return out
    tokenizer = CharTokenizer()
    examples = task.split_examples("train") + task.split_examples("eval")
    known = set(tokenizer.chars)
    for ex in examples:
        for part, text in (("prompt", ex.prompt), ("answer", ex.answer)):
            bad = sorted(set(text) - known)
            if bad:
                return out + [f"task.params.path: {part} {_clip(text)!r} has characters {''.join(bad)!r} that "
                              f"builtin:tiny's character tokenizer lacks (it knows {tokenizer.chars!r}): "
                              "rewrite the data or use a model with its own tokenizer"]
    longest = max(examples, key=lambda ex: len(ex.answer), default=None)
    if longest is not None:
        for field, sampler in (("rl.sampler", run.rl.sampler), ("evaluate.sampler", run.evaluate.sampler)):
            if sampler.gen_length < len(longest.answer) + 1:
                out.append(f"{field}.gen_length: {sampler.gen_length} is shorter than the longest answer in the "
                           f"data ({len(longest.answer) + 1} tokens with its EOS: {_clip(longest.answer)!r})")
    return out


def _clip(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def check_sources(run: "RunSpec", store_uri: str | None = None) -> list[str]:
    """One line per missing model source or dataset of ``run`` (module docstring); [] = all there."""
    initial = run.retrain.initial_source if run.retrain is not None else None
    problems = check_model_source("model.source", run.model.source, store_uri, initial)
    if initial is not None:
        problems += check_model_source("retrain.initial_source", initial, store_uri)
    if run.image is not None and run.image.decoder is not None:
        problems += check_model_source("image.decoder.source", run.image.decoder.source, store_uri)
    for field, path in _task_datasets(run):
        problems += check_dataset(field, path)
    if run.retrain is None:
        problems += check_split_sizes(run)
    return problems
