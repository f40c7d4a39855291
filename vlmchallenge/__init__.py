"""vlmchallenge: fine-tune, evaluate and serve a video VLM for OpenPack operation recognition."""

__version__ = "0.1.0"
