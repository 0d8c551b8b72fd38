"""Ingest: read the shipped data set, optionally degrade it, and split it
into train.csv and test.csv in the run's work folder (fixed seed, so the
same params give the same files)."""
import csv
import json
import os
import random

work = os.environ["WEIR_WORK"]
out = os.environ["WEIR_OUT"]
# Bad data a gate must stop: this share of the training rows with a large
# mean radius (feature 0) get the wrong label, which skews one slice.
degrade = float(os.environ.get("WEIR_PARAM_DEGRADE", "0"))

with open("/opt/churn/data/breast_cancer.csv", newline="") as f:
    rows = list(csv.reader(f))[1:]

rng = random.Random(7)
rng.shuffle(rows)
cut = int(len(rows) * 0.75)
train, test = rows[:cut], rows[cut:]
radii = sorted(float(row[0]) for row in train)
median = radii[len(radii) // 2]
flipped = 0
for row in train:
    if float(row[0]) >= median and rng.random() < degrade:
        row[-1] = "1" if row[-1] == "0" else "0"
        flipped += 1

for name, part in (("train.csv", train), ("test.csv", test)):
    with open(os.path.join(work, name), "w", newline="") as f:
        csv.writer(f).writerows(part)

with open(os.path.join(out, "metrics.json"), "w") as f:
    json.dump({"train_rows": len(train), "test_rows": len(test), "flipped": flipped}, f)
print(f"{len(train)} training rows ({flipped} labels flipped), {len(test)} test rows")
