"""Tagging speed: 100,000 texts in five languages, language + topics + tone.

    python benchmarks/bench_feedback.py [--texts N]

The texts are the labelled sets in tests/data/feedback/ (and a few sentences per
language below), drawn at random with a serial number each so that no two are alike.
Prints the wall time, the texts per second and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path

SAMPLES = [
    "ส่งของช้ามาก รอเป็นอาทิตย์ กล่องบุบด้วย",
    "เสื้อไซส์ไม่ตรง ใส่ไม่ได้เลย ขอเปลี่ยนได้ไหมคะ",
    "Доставка задержалась на неделю, курьер не отвечает",
    "Размер маломерит, пришлось оформить возврат",
    "Giao hàng chậm quá, hộp bị móp",
    "shop tư vấn nhiệt tình, hàng đẹp, sẽ ủng hộ tiếp",
    "التوصيل متأخر جدا والعلبة تالفة",
    "The parcel arrived late and the box was damaged",
]


def measure(n_texts: int = 100_000) -> dict:
    """Tag ``n_texts`` texts drawn from the labelled sets: the wall time and the mix."""
    from retain.feedback import tag

    data = Path(__file__).resolve().parent.parent / "tests" / "data" / "feedback"
    pool = list(SAMPLES)
    for path in sorted(data.glob("*.jsonl")):
        pool += [
            json.loads(line)["text"]
            for line in path.read_text("utf-8").splitlines()
            if line.strip()
        ]
    rng = random.Random(0)
    texts = [f"{rng.choice(pool)} #{i}" for i in range(n_texts)]
    begin = time.perf_counter()
    tagged = tag(texts)
    seconds = time.perf_counter() - begin
    languages: dict[str, int] = {}
    for t in tagged:
        languages[t.language or "?"] = languages.get(t.language or "?", 0) + 1
    return {"texts": n_texts, "seconds": seconds, "languages": languages}


def run(n_customers: int) -> list[dict]:
    """For ``benchmarks/run.py`` (``make bench``): 100,000 texts, whatever the size."""
    found = measure(100_000)
    return [
        {
            "name": "feedback tagging (language, topics, tone)",
            "texts": f"{found['texts']:,}",
            "wall_s": round(found["seconds"], 1),
            "texts_per_s": f"{found['texts'] / found['seconds']:,.0f}",
            "target": "under 60 s on 2 cores",
        }
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=100_000)
    args = parser.parse_args()
    found = measure(args.texts)
    seconds = found["seconds"]
    print(
        f"tagged {found['texts']:,} texts in {seconds:.1f} s "
        f"({found['texts'] / seconds:,.0f} a second); languages {found['languages']}; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )


if __name__ == "__main__":
    main()
