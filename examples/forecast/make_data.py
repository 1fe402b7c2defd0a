"""Writes sales.csv: ten years of synthetic monthly sales (trend, a yearly season, a level shift, noise).

Run once; the committed sales.csv is what the check reads. Deterministic (fixed seed).
"""

import math
import random
from pathlib import Path

rng = random.Random(20240)
rows = ["month,units"]
level = 200.0
for month in range(120):
    level += 1.2 + rng.gauss(0, 2.0)
    if month == 70:
        level += 45
    season = 28 * math.sin(2 * math.pi * month / 12) + 11 * math.cos(4 * math.pi * month / 12)
    units = level + season + rng.gauss(0, 7)
    rows.append(f"{2015 + month // 12}-{month % 12 + 1:02d},{units:.1f}")
(Path(__file__).parent / "sales.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
