"""Train: standardise the features and fit a logistic regression on
train.csv; the fitted pipeline goes to model.joblib."""
import json
import os

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

work = os.environ["WEIR_WORK"]
data = np.loadtxt(os.path.join(work, "train.csv"), delimiter=",")
x, y = data[:, :-1], data[:, -1].astype(int)
model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, C=float(os.environ.get("WEIR_PARAM_C", "1.0"))))
model.fit(x, y)
joblib.dump(model, os.path.join(work, "model.joblib"))
train_accuracy = float(model.score(x, y))
with open(os.path.join(os.environ["WEIR_OUT"], "metrics.json"), "w") as f:
    json.dump({"train_accuracy": round(train_accuracy, 4)}, f)
print(f"trained on {len(y)} rows, training accuracy {train_accuracy:.4f}")
