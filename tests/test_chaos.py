"""benchmarks/chaos_train.py, short: a run SIGKILLed three times (once each at startup, while
training and at a save's start) resumes to the weights of a run never killed."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
import chaos_train  # noqa: E402


def test_a_run_killed_three_times_ends_as_if_never_killed(tmp_path):
    c = chaos_train.Chaos(tmp_path, kills=3, steps=8, modes=("startup", "training", "save"),
                          training_s=1.0, save_s=0.03)
    o = chaos_train.run(c)
    assert o.failures == [], chaos_train.summary(c, o)
    assert len(o.kills) == 3 and o.final_step == 8 and o.equal and o.best_equal and o.loads and not o.leftovers
    assert o.tensors > 0 and max(k.lost for k in o.kills) <= c.checkpoint_every
