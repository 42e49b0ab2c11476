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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=100_000)
    args = parser.parse_args()
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
    texts = [f"{rng.choice(pool)} #{i}" for i in range(args.texts)]
    start = time.perf_counter()
    tagged = tag(texts)
    seconds = time.perf_counter() - start
    languages: dict[str, int] = {}
    for t in tagged:
        languages[t.language or "?"] = languages.get(t.language or "?", 0) + 1
    print(
        f"tagged {len(texts):,} texts in {seconds:.1f} s ({len(texts) / seconds:,.0f} a second); "
        f"languages {languages}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}"
    )


if __name__ == "__main__":
    main()
