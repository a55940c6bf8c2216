"""repvit-vos: streaming video object segmentation on RepViT-SAM."""
