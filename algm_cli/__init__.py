"""algm: token merging (ALGM, ToMe, Segformer++) for semantic-segmentation Vision Transformers."""

from omegaconf import OmegaConf

__version__ = "0.1.0"

# `${if_smoke:${smoke},A,B}` in the configs: A for smoke=true runs, else B (results_dir keeps smoke
# rows apart from the real ones)
OmegaConf.register_new_resolver(
    "if_smoke", lambda smoke, yes, no: yes if str(smoke).lower() == "true" else no, replace=True)
