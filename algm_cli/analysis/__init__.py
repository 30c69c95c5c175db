"""Analyses behind the paper's figures: `algm analyze similarity | merges | predictions`.

- `similarity`: intra- vs inter-class cosine similarity of tokens, in local windows of layer 1
  and globally per layer (paper Sec. 3.2, Fig. 2);
- `merges`: which tokens CLAP and GBM merge on a few images (paper Fig. 5, supp. Fig. 4-7);
- `predictions`: baseline vs ALGM predictions next to the ground truth (paper Fig. 8-9).

Each module holds pure functions on tensors plus the plotting; `cli.py` turns the Hydra config
(`conf/analyze.yaml`) into models and images and writes the files.
"""
