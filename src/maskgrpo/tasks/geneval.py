"""Toy GenEval: text-to-image prompts over small grids of colour codes (docs/algorithm.md §9).

Implements:
1. The world: a palette (code 0 = background, then red, green, blue, yellow) and four shape
   templates (square 2x2, bar 1x3, plus 3x3, diamond 3x3 ring). An image is a
   ``grid_size x grid_size`` grid of colour codes; as text it is one digit per cell, row-major
   (``grid_to_text`` / ``text_to_grid``), which is also the codes of the model's image slots.
2. A codec between grids and RGB images (``grid_to_image`` draws each cell as a ``cell x cell``
   block; ``image_to_grid`` reads the nearest palette colour at each cell centre), PNG via Pillow.
3. GenEval's metadata schema, shared by the toy generator and the loader of the REAL GenEval file
   (``load_geneval_metadata``): ``{tag, include: [{class, count, color?, position?: [rel, i]}],
   exclude?: [{class, count}], prompt}``.
4. ``detect_objects``: connected components per colour (8-connectivity), each matched against
   the shape templates (``class`` None when it matches none).
5. ``ToyGenEvalTask`` (registry name ``toy-geneval``): every prompt of tags single_object,
   two_object, counting, colors, color_attr and position, each with a seeded reference placement
   (objects never touch; the reference is re-checked with the detector). Train and eval are split
   by prompt (unseen compositions are held out). The answer is the reference grid as text; the
   reward (``geneval_strict`` by default) needs only the ``metadata`` column.
   ``placement="quadrants"`` (an easier curriculum for tiny models) puts the k-th object at the
   top-left of the first fitting quadrant slot instead of a random spot, so the reference image
   is a compositional function of the prompt; the checks (and rewards) are unchanged.

Deviations from GenEval: objects are grid shapes, not COCO classes; single_object and two_object
prompts name no colour; "left of" etc. compare component centroids with a one-cell margin.
"""

from __future__ import annotations

import io
import itertools
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maskgrpo.tasks.base import Example, GeneratedTask

__all__ = [
    "PALETTE", "COLORS", "SHAPES", "GenEvalItem", "GenEvalMetadata", "DetectedObject", "ToyGenEvalTask",
    "grid_to_text", "text_to_grid", "grid_to_image", "image_to_grid", "grid_to_png", "png_to_grid",
    "detect_objects", "relation_holds", "load_geneval_metadata",
]

PALETTE: dict[str, tuple[int, tuple[int, int, int]]] = {  # name -> (code, RGB)
    "background": (0, (0, 0, 0)),
    "red": (1, (230, 40, 40)),
    "green": (2, (40, 200, 60)),
    "blue": (3, (50, 80, 240)),
    "yellow": (4, (240, 220, 40)),
}
COLORS = [name for name in PALETTE if name != "background"]
CODE_TO_COLOR = {code: name for name, (code, _) in PALETTE.items()}
NUM_CODES = len(PALETTE)

SHAPES: dict[str, frozenset[tuple[int, int]]] = {  # cells (row, col) normalised to the top-left
    "square": frozenset({(0, 0), (0, 1), (1, 0), (1, 1)}),
    "bar": frozenset({(0, 0), (0, 1), (0, 2)}),
    "plus": frozenset({(0, 1), (1, 0), (1, 1), (1, 2), (2, 1)}),
    "diamond": frozenset({(0, 1), (1, 0), (1, 2), (2, 1)}),
}
PLURALS = {"square": "squares", "bar": "bars", "plus": "pluses", "diamond": "diamonds"}
NUMBERS = {1: "a", 2: "two", 3: "three", 4: "four"}
RELATIONS = ("left of", "right of", "above", "below")
PLACEMENTS = ("random", "quadrants")
TAGS = ("single_object", "two_object", "counting", "colors", "color_attr", "position")

Grid = list[list[int]]


# ------------------------------------------------------------------------------------ codec


def grid_to_text(grid: Grid) -> str:
    """Row-major digits, one per cell.

    >>> grid_to_text([[0, 1], [2, 3]])
    '0123'
    """
    return "".join(str(c) for row in grid for c in row)


def text_to_grid(text: str, grid_size: int) -> Grid:
    """Inverse of ``grid_to_text``; wrong length or a non-code character -> ValueError."""
    if len(text) != grid_size * grid_size:
        raise ValueError(f"grid text has {len(text)} cells, expected {grid_size}x{grid_size} = {grid_size * grid_size}")
    if any(not ch.isdigit() or int(ch) >= NUM_CODES for ch in text):
        raise ValueError(f"grid text holds a character outside the codes 0..{NUM_CODES - 1}: {text!r}")
    return [[int(text[r * grid_size + c]) for c in range(grid_size)] for r in range(grid_size)]


def grid_to_image(grid: Grid, cell: int = 8):
    """An RGB ``PIL.Image`` with each code drawn as a ``cell x cell`` block of its colour."""
    from PIL import Image

    rgb = {code: PALETTE[name][1] for code, name in CODE_TO_COLOR.items()}
    h, w = len(grid), len(grid[0])
    image = Image.new("RGB", (w * cell, h * cell))
    pixels = image.load()
    for r, row in enumerate(grid):
        for c, code in enumerate(row):
            for y in range(r * cell, (r + 1) * cell):
                for x in range(c * cell, (c + 1) * cell):
                    pixels[x, y] = rgb[code]
    return image


def image_to_grid(image, grid_size: int) -> Grid:
    """The nearest palette code at each cell centre of an RGB image (any size)."""
    image = image.convert("RGB")
    w, h = image.size
    colours = [(code, rgb) for code, (_, rgb) in ((PALETTE[n][0], PALETTE[n]) for n in PALETTE)]
    out = []
    for r in range(grid_size):
        row = []
        for c in range(grid_size):
            px = image.getpixel((int((c + 0.5) * w / grid_size), int((r + 0.5) * h / grid_size)))
            row.append(min(colours, key=lambda item: sum((a - b) ** 2 for a, b in zip(item[1], px)))[0])
        out.append(row)
    return out


def grid_to_png(grid: Grid, cell: int = 8) -> bytes:
    buffer = io.BytesIO()
    grid_to_image(grid, cell).save(buffer, format="PNG")
    return buffer.getvalue()


def png_to_grid(data: bytes, grid_size: int) -> Grid:
    from PIL import Image

    return image_to_grid(Image.open(io.BytesIO(data)), grid_size)


# ------------------------------------------------------------------------------------ schema


@dataclass(frozen=True)
class GenEvalItem:
    cls: str  # "class" in the JSON
    count: int
    color: str | None = None
    position: tuple[str, int] | None = None  # (relation, index of the include item it refers to)

    @classmethod
    def from_json(cls, doc: Any, where: str) -> GenEvalItem:
        if not isinstance(doc, dict) or not isinstance(doc.get("class"), str):
            raise ValueError(f"{where}: an item needs a string 'class', got {doc!r}")
        unknown = set(doc) - {"class", "count", "color", "position"}
        if unknown:
            raise ValueError(f"{where}: unknown item field(s) {sorted(unknown)}")
        count = doc.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"{where}.count: expected a non-negative integer, got {count!r}")
        color = doc.get("color")
        if color is not None and not isinstance(color, str):
            raise ValueError(f"{where}.color: expected a string, got {color!r}")
        position = doc.get("position")
        if position is not None:
            if (not isinstance(position, (list, tuple)) or len(position) != 2 or position[0] not in RELATIONS
                    or isinstance(position[1], bool) or not isinstance(position[1], int)):
                raise ValueError(f"{where}.position: expected [one of {list(RELATIONS)}, index], got {position!r}")
            position = (position[0], position[1])
        return cls(doc["class"], count, color, position)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"class": self.cls, "count": self.count}
        if self.color is not None:
            doc["color"] = self.color
        if self.position is not None:
            doc["position"] = list(self.position)
        return doc


@dataclass(frozen=True)
class GenEvalMetadata:
    tag: str
    include: tuple[GenEvalItem, ...]
    exclude: tuple[GenEvalItem, ...] = ()
    prompt: str = ""

    @classmethod
    def from_json(cls, doc: Any, where: str = "metadata") -> GenEvalMetadata:
        if isinstance(doc, str):
            doc = json.loads(doc)
        if not isinstance(doc, dict):
            raise ValueError(f"{where}: expected an object, got {type(doc).__name__}")
        unknown = set(doc) - {"tag", "include", "exclude", "prompt"}
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}")
        if not isinstance(doc.get("tag"), str):
            raise ValueError(f"{where}.tag: expected a string")
        include = doc.get("include")
        if not isinstance(include, list) or not include:
            raise ValueError(f"{where}.include: expected a non-empty list")
        items = tuple(GenEvalItem.from_json(d, f"{where}.include[{i}]") for i, d in enumerate(include))
        for i, item in enumerate(items):
            if item.position is not None and not 0 <= item.position[1] < len(items):
                raise ValueError(f"{where}.include[{i}].position: index {item.position[1]} out of range")
        exclude = tuple(GenEvalItem.from_json(d, f"{where}.exclude[{i}]") for i, d in enumerate(doc.get("exclude", [])))
        return cls(doc["tag"], items, exclude, doc.get("prompt", ""))

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"tag": self.tag, "include": [i.to_json() for i in self.include]}
        if self.exclude:
            doc["exclude"] = [i.to_json() for i in self.exclude]
        doc["prompt"] = self.prompt
        return doc


def load_geneval_metadata(path: str | Path) -> list[GenEvalMetadata]:
    """Every row of a GenEval ``evaluation_metadata.jsonl``; a bad row -> ValueError naming its line."""
    path = Path(path)
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(GenEvalMetadata.from_json(json.loads(line), f"{path}:{n}"))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{n}: not JSON: {err}") from None
    return rows


# ------------------------------------------------------------------------------------ detection


@dataclass(frozen=True)
class DetectedObject:
    cls: str | None  # shape name, None when the component matches no template
    color: str
    cells: frozenset[tuple[int, int]]

    @property
    def center(self) -> tuple[float, float]:
        """(row, col) centroid."""
        return (sum(r for r, _ in self.cells) / len(self.cells), sum(c for _, c in self.cells) / len(self.cells))


def detect_objects(grid: Grid) -> list[DetectedObject]:
    """Connected components (8-neighbourhood) of each non-background colour, matched to SHAPES."""
    h, w = len(grid), len(grid[0])
    seen: set[tuple[int, int]] = set()
    found = []
    for r0, c0 in itertools.product(range(h), range(w)):
        code = grid[r0][c0]
        if code == 0 or (r0, c0) in seen:
            continue
        stack, cells = [(r0, c0)], set()
        seen.add((r0, c0))
        while stack:
            r, c = stack.pop()
            cells.add((r, c))
            for dr, dc in itertools.product((-1, 0, 1), repeat=2):
                nr, nc = r + dr, c + dc
                if 0 <= nr < h and 0 <= nc < w and (nr, nc) not in seen and grid[nr][nc] == code:
                    seen.add((nr, nc))
                    stack.append((nr, nc))
        top, left = min(r for r, _ in cells), min(c for _, c in cells)
        shape = frozenset((r - top, c - left) for r, c in cells)
        cls = next((name for name, template in SHAPES.items() if template == shape), None)
        found.append(DetectedObject(cls, CODE_TO_COLOR[code], frozenset(cells)))
    return found


def relation_holds(a: DetectedObject, relation: str, b: DetectedObject, margin: float = 1.0) -> bool:
    """``a`` is ``relation`` ``b`` when their centroids differ by at least ``margin`` cells that way."""
    (ar, ac), (br, bc) = a.center, b.center
    return {"left of": bc - ac, "right of": ac - bc, "above": br - ar, "below": ar - br}[relation] >= margin


# ------------------------------------------------------------------------------------ generator


def _object_phrase(count: int, cls: str, color: str | None) -> str:
    noun = cls if count == 1 else PLURALS[cls]
    return " ".join(w for w in (NUMBERS[count], color, noun) if w)


def all_metadata() -> Iterator[GenEvalMetadata]:
    """Every toy prompt, tag by tag, in a fixed order."""
    shapes = list(SHAPES)
    for s in shapes:
        yield GenEvalMetadata("single_object", (GenEvalItem(s, 1),), prompt=_object_phrase(1, s, None))
    for s1, s2 in itertools.permutations(shapes, 2):
        yield GenEvalMetadata("two_object", (GenEvalItem(s1, 1), GenEvalItem(s2, 1)),
                              prompt=f"{_object_phrase(1, s1, None)} and {_object_phrase(1, s2, None)}")
    for s, n in itertools.product(shapes, (2, 3, 4)):
        yield GenEvalMetadata("counting", (GenEvalItem(s, n),), (GenEvalItem(s, n + 1),), prompt=_object_phrase(n, s, None))
    for s, c in itertools.product(shapes, COLORS):
        yield GenEvalMetadata("colors", (GenEvalItem(s, 1, c),), prompt=_object_phrase(1, s, c))
    for (s1, s2), c1, c2 in itertools.product(itertools.permutations(shapes, 2), COLORS, COLORS):
        yield GenEvalMetadata("color_attr", (GenEvalItem(s1, 1, c1), GenEvalItem(s2, 1, c2)),
                              prompt=f"{_object_phrase(1, s1, c1)} and {_object_phrase(1, s2, c2)}")
    for (s1, s2), c1, c2, rel in itertools.product(itertools.permutations(shapes, 2), COLORS, COLORS, RELATIONS):
        # GenEval's shape: include[1] is <rel> include[0]; the prompt names include[1] first.
        yield GenEvalMetadata("position", (GenEvalItem(s1, 1, c1), GenEvalItem(s2, 1, c2, (rel, 0))),
                              prompt=f"{_object_phrase(1, s2, c2)} {rel} {_object_phrase(1, s1, c1)}")


def _free(grid: Grid, cells: list[tuple[int, int]]) -> bool:
    """Every cell and its 8 neighbours empty (objects never touch)."""
    h, w = len(grid), len(grid[0])
    for r, c in cells:
        if not (0 <= r < h and 0 <= c < w):
            return False
        for dr, dc in itertools.product((-1, 0, 1), repeat=2):
            nr, nc = r + dr, c + dc
            if 0 <= nr < h and 0 <= nc < w and grid[nr][nc]:
                return False
    return True


def place(meta: GenEvalMetadata, grid_size: int, rng: random.Random, attempts: int = 2000) -> Grid:
    """A grid satisfying ``meta`` (strictly, as the detector sees it); colourless items get a
    random colour. Raises ValueError when no placement is found."""
    for _ in range(attempts):
        grid = [[0] * grid_size for _ in range(grid_size)]
        ok = True
        for item in meta.include:
            color = item.color or rng.choice(COLORS)
            for _ in range(item.count):
                template = sorted(SHAPES[item.cls])
                tries = [(rng.randrange(grid_size), rng.randrange(grid_size)) for _ in range(30)]
                spot = next(((r, c) for r, c in tries if _free(grid, [(r + dr, c + dc) for dr, dc in template])), None)
                if spot is None:
                    ok = False
                    break
                for dr, dc in template:
                    grid[spot[0] + dr][spot[1] + dc] = PALETTE[color][0]
            if not ok:
                break
        if ok and metadata_satisfied(meta, grid):
            return grid
    raise ValueError(f"no placement of {meta.prompt!r} on a {grid_size}x{grid_size} grid")


def quadrant_anchors(grid_size: int) -> list[tuple[int, int]]:
    """Top-left cells of the four quadrant slots used by ``placement="quadrants"`` (row-major)."""
    half = grid_size // 2
    return [(r, c) for r in (1, half + 1) for c in (1, half + 1)]


def place_quadrants(meta: GenEvalMetadata, grid_size: int, rng: random.Random) -> Grid:
    """A canonical grid satisfying ``meta``: the k-th object (include order, then count) sits at
    the top-left of a quadrant, the first assignment of quadrants (in a fixed order) that passes
    the detector. Colourless items still get a (prompt-seeded) random colour."""
    items = [(item, item.color or rng.choice(COLORS)) for item in meta.include]
    objects = [(item.cls, color) for item, color in items for _ in range(item.count)]
    for anchors in itertools.permutations(quadrant_anchors(grid_size), len(objects)):
        grid = [[0] * grid_size for _ in range(grid_size)]
        cells = [[(r + dr, c + dc) for dr, dc in sorted(SHAPES[cls])] for (cls, _), (r, c) in zip(objects, anchors)]
        if all(0 <= r < grid_size and 0 <= c < grid_size for obj in cells for r, c in obj):
            for obj, (_, color) in zip(cells, objects):
                for r, c in obj:
                    grid[r][c] = PALETTE[color][0]
            if metadata_satisfied(meta, grid):
                return grid
    raise ValueError(f"no quadrant placement of {meta.prompt!r} on a {grid_size}x{grid_size} grid")


def _matching(objects: list[DetectedObject], item: GenEvalItem) -> list[DetectedObject]:
    return [o for o in objects if o.cls == item.cls and (item.color is None or o.color == item.color)]


def check_metadata(meta: GenEvalMetadata, grid: Grid) -> dict[str, float]:
    """Per-check scores in [0, 1] (GenEval's checks, plus ``clean``: no unrecognised blobs)."""
    objects = detect_objects(grid)
    checks: dict[str, float] = {}
    for i, item in enumerate(meta.include):
        found = _matching(objects, item)
        n = len(found)
        checks[f"include[{i}].count"] = 1.0 - abs(n - item.count) / max(n, item.count) if max(n, item.count) else 1.0
        if item.position is not None:
            relation, j = item.position
            others = _matching(objects, meta.include[j])
            checks[f"include[{i}].position"] = float(any(relation_holds(a, relation, b) for a in found for b in others))
    for i, item in enumerate(meta.exclude):
        checks[f"exclude[{i}]"] = float(len(_matching(objects, item)) < item.count)
    checks["clean"] = sum(o.cls is not None for o in objects) / len(objects) if objects else 1.0
    return checks


def metadata_satisfied(meta: GenEvalMetadata, grid: Grid) -> bool:
    return all(v == 1.0 for v in check_metadata(meta, grid).values())


class ToyGenEvalTask(GeneratedTask):
    """Every toy-GenEval prompt with a seeded reference grid (see the module docstring).

    >>> task = ToyGenEvalTask()
    >>> ex = task.examples("train", 1, seed=0)[0]
    >>> len(ex.answer) == 64 and ex.columns["metadata"]["prompt"] == ex.prompt
    True
    """

    name = "toy-geneval"
    modality = "image"
    reward = "geneval_strict"

    def __init__(self, grid_size: int = 8, tags: list[str] | tuple[str, ...] = TAGS, placement: str = "random") -> None:
        if not 6 <= grid_size <= 32:
            raise ValueError(f"grid_size must be in 6..32 (room for four 3x3 shapes), got {grid_size}")
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {list(PLACEMENTS)}, got {placement!r}")
        if placement == "quadrants" and grid_size < 8:
            raise ValueError(f"placement 'quadrants' needs grid_size >= 8 (four separated 3x3 slots), got {grid_size}")
        self.placement = placement
        unknown = sorted(set(tags) - set(TAGS))
        if unknown or not tags:
            raise ValueError(f"tags {unknown or list(tags)!r} invalid; valid tags: {list(TAGS)}")
        self.grid_size = grid_size
        self.tags = tuple(tags)
        self.completion_length = grid_size * grid_size

    def params(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"grid_size": self.grid_size, "tags": list(self.tags)}
        if self.placement != "random":  # the default leaves the seeding (and so the splits) unchanged
            doc["placement"] = self.placement
        return doc

    def _metadata(self) -> list[GenEvalMetadata]:
        return [m for m in all_metadata() if m.tag in self.tags]

    def space_size(self) -> int:
        return len(self._metadata())

    def enumerate_problems(self) -> Iterator[Example]:
        for meta in self._metadata():
            rng = random.Random(json.dumps([meta.prompt, self.grid_size]))
            grid = place_quadrants(meta, self.grid_size, rng) if self.placement == "quadrants" else place(meta, self.grid_size, rng)
            yield Example(meta.prompt, grid_to_text(grid), {"metadata": meta.to_json()})
