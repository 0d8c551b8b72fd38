"""Validate: accuracy on the held-out test.csv, and the bias delta — the
gap in accuracy between two slices of it (samples whose mean radius is
below the median, and the others)."""
import json
import os

import joblib
import numpy as np

work = os.environ["WEIR_WORK"]
model = joblib.load(os.path.join(work, "model.joblib"))
data = np.loadtxt(os.path.join(work, "test.csv"), delimiter=",")
x, y = data[:, :-1], data[:, -1].astype(int)
predicted = model.predict(x)
accuracy = float((predicted == y).mean())
small = x[:, 0] < np.median(x[:, 0])
slice_accuracy = [float((predicted[s] == y[s]).mean()) for s in (small, ~small)]
bias_delta = abs(slice_accuracy[0] - slice_accuracy[1])
metrics = {
    "accuracy": round(accuracy, 4),
    "bias_delta": round(bias_delta, 4),
    "accuracy.slice.small_radius": round(slice_accuracy[0], 4),
    "accuracy.slice.large_radius": round(slice_accuracy[1], 4),
}
with open(os.path.join(os.environ["WEIR_OUT"], "metrics.json"), "w") as f:
    json.dump(metrics, f)
print(json.dumps(metrics))
