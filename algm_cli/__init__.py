"""algm: token merging (ALGM, ToMe, Segformer++) for semantic-segmentation Vision Transformers."""

from omegaconf import OmegaConf

__version__ = "0.1.0"

# `${if_smoke:${smoke},A,B}` in the configs: A for smoke=true runs, else B (results_dir keeps smoke
# rows apart from the real ones)
OmegaConf.register_new_resolver(
    "if_smoke", lambda smoke, yes, no: yes if str(smoke).lower() == "true" else no, replace=True)

# `${fraction_of:${dataset.iterations},0.25}`: a share of a schedule as whole iterations (the
# fine-tuning rows of the presets: supp. Tab. 4d fine-tunes for 16 of the 64 training epochs)
OmegaConf.register_new_resolver(
    "fraction_of", lambda total, share: max(1, round(int(total) * float(share))), replace=True)
