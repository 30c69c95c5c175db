"""algm: token merging (ALGM, ToMe, Segformer++) for semantic-segmentation Vision Transformers."""

__version__ = "0.1.0"
