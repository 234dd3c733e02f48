"""The catalogue of known prompt sets (benchmarks and training sets) and what is present locally.

An entry names where a set lives on the Hugging Face hub and how its fields map onto crl's; ``crl data pull``
(crl/data/hub.py) downloads it, ``crl data list`` shows what is known, shipped and imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from crl.data.prompts import data_home

@dataclass(frozen=True)
class Known:
    """A catalogued prompt set: where it lives on the hub and how its fields map onto crl's."""

    name: str
    hub_id: str
    split: str
    config: str | None = None
    kind: str = "benchmark"
    rename: dict[str, str] = field(default_factory=dict)
    keep: Callable[[dict[str, Any]], bool] | None = None
    aliases: tuple[str, ...] = ()
    note: str = ""
    verifier: str = "math"  # what grades it when the run does not name a verifier

    @property
    def where(self) -> str:
        return f"{self.hub_id}" + (f" ({self.config})" if self.config else "") + f" [{self.split}]"


CATALOGUE: tuple[Known, ...] = (
    Known("math500", "HuggingFaceH4/MATH-500", "test", note="500 MATH test problems (Lightman et al.)"),
    Known("gsm8k_test", "openai/gsm8k", "test", config="main", aliases=("gsm8k",), note="GSM8K test, '#### n' answers",
          verifier="gsm8k"),
    Known("aime24", "HuggingFaceH4/aime_2024", "train", aliases=("aime2024", "aime_2024"), note="AIME 2024 I+II"),
    Known("aime25", "math-ai/aime25", "test", aliases=("aime2025", "aime_2025"), note="AIME 2025 I+II"),
    Known("amc23", "math-ai/amc23", "test", aliases=("amc2023", "amc_2023"), note="AMC 12 2023"),
    Known("minerva_math", "math-ai/minervamath", "test", aliases=("minerva",), note="Minerva OCW problems"),
    Known(
        "olympiadbench",
        "Hothan/OlympiadBench",
        "train",
        config="OE_TO_maths_en_COMP",
        note="English open-ended maths, gold = final_answer",
    ),
    Known("gsm8k_train", "openai/gsm8k", "train", config="main", kind="train", note="GSM8K train", verifier="gsm8k"),
    Known(
        "math_train",
        "DigitalLearningGmbH/MATH-lighteval",
        "train",
        config="default",
        kind="train",
        note="MATH train (Hendrycks), gold = last \\boxed{} of the solution",
    ),
    Known(
        "aime_1983_2023",
        "gneubig/aime-1983-2024",
        "train",
        kind="train",
        rename={"Question": "problem", "Answer": "answer", "ID": "id"},
        keep=lambda row: int(row.get("Year") or row.get("year") or 0) <= 2023,
        aliases=("aime_1983_2023_train",),
        note="AIME 1983-2023 (no overlap with AIME 2024/2025)",
    ),
    Known(
        "deepscaler",
        "agentica-org/DeepScaleR-Preview-Dataset",
        "train",
        kind="train",
        note="DeepScaleR-Preview 40k mix (AIME, AMC, Omni-MATH, STILL)",
    ),
)


def known(name: str) -> Known | None:
    """The catalogue entry called ``name`` (or one of its aliases), else None."""
    key = name.lower().replace("-", "_")
    return next((k for k in CATALOGUE if key == k.name or key in k.aliases), None)


def count_rows(path: Path) -> int | None:
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
        with path.open("rb") as f:
            return sum(1 for line in f if line.strip())
    except Exception:
        return None


def _local_file(folder: Path, names: Iterable[str]) -> Path | None:
    for n in names:
        for ext in (".parquet", ".jsonl"):
            if (folder / f"{n}{ext}").is_file():
                return folder / f"{n}{ext}"
    return None


def listing() -> list[dict[str, Any]]:
    """Known and present sets: name, kind, hub id, where it is found locally and its rows."""
    from crl.default import SHIPPED_DIR

    home = data_home()
    rows = []
    for entry in CATALOGUE:
        local = _local_file(home, (entry.name, *entry.aliases))
        rows.append(
            {"name": entry.name, "kind": entry.kind, "hub": entry.where, "path": local,
             "rows": count_rows(local) if local else None, "note": entry.note}
        )
    listed = {r["name"] for r in rows}
    for folder, kind in ((SHIPPED_DIR, "shipped"), (home, "imported")):
        if not folder.is_dir():
            continue
        for f in sorted([*folder.glob("*.parquet"), *folder.glob("*.jsonl")]):
            if f.stem in listed or f.name.startswith(".") or known(f.stem):
                continue
            listed.add(f.stem)
            rows.append({"name": f.stem, "kind": kind, "hub": "", "path": f, "rows": count_rows(f), "note": ""})
    return rows
