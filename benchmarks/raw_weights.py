"""The raw (non-EMA) training weights of a run, as a model directory `diffuse eval` can score.

    .venv/bin/python benchmarks/raw_weights.py runs/bundle7 runs/bundle7-raw
    .venv/bin/diffuse eval runs/bundle7-raw

A run's model.safetensors holds the EMA of the weights (EDM's ema_halflife_kimg); its training
state holds the weights the optimizer was stepping. Scoring both from the same checkpoint
measures what the EMA length buys at that point (RESULTS.md, "The bundled model, measured").
"""

import argparse

from diffuse.checkpoint import load_checkpoint, load_training_state, save_checkpoint
from diffuse.training import trained_weights


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a run directory with a training state (diffuse train --out)")
    ap.add_argument("out", help="model directory to write")
    a = ap.parse_args()
    model, cfg = load_checkpoint(a.run)
    state, _ = load_training_state(a.run)
    model.load_state_dict(trained_weights(state))
    # save_checkpoint writes its own format, version and weights hash over the copied config's
    save_checkpoint(a.out, model, {**cfg, "weights": f"raw training weights of {a.run}"})
    print(a.out)


if __name__ == "__main__":
    main()
