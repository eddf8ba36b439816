"""Image backbones whose feature maps become visual tokens (EfficientNet-Lite)."""
