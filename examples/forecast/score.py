"""The check: mean absolute error of one-step-ahead forecasts over the last three years of sales.csv.

Prints `val_mae: <number>` (lower is better). Reads only sales.csv and forecast.py.
"""

import csv
from pathlib import Path

import forecast

HOLDOUT_MONTHS = 36

with open(Path(__file__).parent / "sales.csv", newline="", encoding="utf-8") as rows:
    units = [float(row["units"]) for row in csv.DictReader(rows)]
predicted = forecast.one_step_forecasts(units)
actual = units[2 * forecast.PERIOD :]
errors = [abs(p - a) for p, a in zip(predicted, actual)][-HOLDOUT_MONTHS:]
print(f"val_mae: {sum(errors) / len(errors):.4f}")
