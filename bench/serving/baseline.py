"""The seed design, kept as the benchmark's baseline: Flask, one DataFrame per request.

Serves the same fitted pipeline as the bundle (``model.joblib``) with werkzeug's
threaded WSGI server: ``python -m bench.serving.baseline --bundle-dir DIR --port P``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import joblib
import pandas as pd
from flask import Flask, jsonify, request
from werkzeug.serving import make_server


def create_app(bundle_dir: Path) -> Flask:
    pipeline = joblib.load(bundle_dir / "model.joblib")
    app = Flask("baseline")

    @app.post("/predict")
    def predict():
        record = request.get_json()
        frame = pd.DataFrame([record])
        return jsonify({"prediction": float(pipeline.predict(frame)[0])})

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    make_server("127.0.0.1", args.port, create_app(args.bundle_dir), threaded=True).serve_forever()


if __name__ == "__main__":
    main()
