"""The file names of stage outputs, in one place (docs/design.md, "The store").

Stages write them, the modalities add their report files, the runners and the CLI read them.
A leaf module: it imports nothing, so every layer above ``core`` may use it.
"""

CHECKPOINT = "checkpoint"  # folder: a transformers checkpoint (or LoRA adapters) + tokenizer files
METRICS = "metrics.json"  # every stage: its result model, flat JSON
SAMPLES = "samples.jsonl"  # rollout and evaluate: one row per completion
LOSSES = "losses.json"  # sft: the loss of every step
ROLLOUT = "rollout.safetensors"  # rollout: sequences, estimator data, cached log-probs
SCORES = "scores.safetensors"  # score: rewards, advantages, keep
OPTIMIZER_TENSORS = "optimizer.safetensors"  # update: AdamW moments keyed "{index}.{key}"
OPTIMIZER_META = "optimizer.json"  # update: param groups and scalar state
IMAGE_GRID = "images.png"  # image evaluate: the PNG grid of the first prompts' images
