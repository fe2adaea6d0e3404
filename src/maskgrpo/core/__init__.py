"""The pure algorithm of MaskGRPO: torch and the standard library only.

Tensors and ``torch.Generator`` in, tensors (and detached stats) out. Nothing here knows about
specs, stores, loggers or orchestration (docs/design.md, "Layering"; a test enforces it).

Modules:
    schedules   noise schedules and the MaskGRPO mask-rate schedule r_j
    masks       seeded masks, each a pure function of (seed, row id, rate, shapes)
    sampling    shared sampling primitives (float64 Gumbel noise, per-row quotas)
    text_sampler   semi-autoregressive low-confidence sampler (LLaDA) and its faster options
    image_sampler  MaskGIT cosine and "emerge" (exact MDLM ancestral) samplers, with CFG
    importance  the importance estimators (d1, unigrpo, maskgrpo, coupled) and chunked log-probs
    advantages  group-relative advantages
    loss        the clipped surrogate with the k3 KL penalty
"""
