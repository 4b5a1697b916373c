#!/usr/bin/env python3
"""Reference sentence embeddings of all-MiniLM-L6-v2 from Hugging Face
`transformers` on CPU, written to minilm_reference.json for tests/bert.rs
(so that test needs no Python).

    pip install torch transformers
    python3 tests/data/minilm_reference.py [MODEL_DIR]

MODEL_DIR defaults to ../shared/models/all-MiniLM-L6-v2. The embedding is
sentence-transformers' recipe for this model: the mean of the last hidden
states over non-padding tokens, L2-normalised.
"""
import json
import os
import sys

import torch
from transformers import AutoModel, AutoTokenizer

SENTENCES = [
    "A man is playing a guitar.",
    "it 's a charming and often affecting journey .",
    "unflinchingly bleak and desperate",
    "Hello",
    "The quick brown fox jumps over the lazy dog, doesn't it? Naïve café déjà vu!",
    "Shadergrad trains networks through hand-written WGSL compute shaders on any GPU, "
    "and its CPU backend is both the specification and a fallback.",
    "12345 67.89 -- @#$%",
]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    model_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        here, "..", "..", "..", "shared", "models", "all-MiniLM-L6-v2")
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    batch = tokenizer(SENTENCES, padding=True, truncation=True, max_length=256,
                      return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    embeddings = torch.nn.functional.normalize(mean, p=2, dim=1)
    out = {
        "model": "all-MiniLM-L6-v2",
        "made_by": "tests/data/minilm_reference.py with transformers "
        + __import__("transformers").__version__ + ", torch " + torch.__version__,
        "sentences": [
            {
                "text": s,
                "ids": [int(i) for i, m in zip(batch["input_ids"][k], batch["attention_mask"][k]) if m],
                "embedding": [round(float(x), 7) for x in embeddings[k]],
                # The first token's last hidden state, unpooled, to check the encoder itself.
                "cls_hidden": [round(float(x), 6) for x in hidden[k, 0]],
            }
            for k, s in enumerate(SENTENCES)
        ],
    }
    path = os.path.join(here, "minilm_reference.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {path}: {len(SENTENCES)} sentences")


if __name__ == "__main__":
    main()
