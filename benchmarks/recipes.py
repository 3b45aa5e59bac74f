"""Training recipes written out in full, so a benchmark reruns the table it made even after a
default of `diffuse train` changes (issue 23: 'pin every setting a table depends on').

Use: TrainConfig(data=..., out=..., **BEFORE_ISSUE_23, **candidate_overrides)."""

# The defaults of `diffuse train` from 2026-11-29 to 2026-12-04 (P_mean -0.4 adopted, no
# gradient clipping, constant learning rate; rsqrt became the default on 2026-12-04): the recipe
# of every table made in that time.
BEFORE_ISSUE_23 = dict(preset="small", image_size=32, batch_size=16, grad_accum=1, lr=2e-3, weight_decay=0.0,
                       warmup_steps=50, lr_schedule="constant", ema_halflife_kimg=2.0, ema_rampup=0.1,
                       caption_dropout=0.1, p_mean=-0.4, p_std=1.2, high_sigma_share=0.0, clip_grad=0.0,
                       lr_ref_steps=2000)  # lr_ref_steps came later; a constant schedule ignores it

# The same before P_mean -0.4 (to 2026-11-29): EDM's table 1 value.
BEFORE_PMEAN_CHANGE = {**BEFORE_ISSUE_23, "p_mean": -1.2}
