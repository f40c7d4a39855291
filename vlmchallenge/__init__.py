"""vlmchallenge: fine-tune, evaluate and serve a video VLM for OpenPack operation recognition."""

from vlmchallenge.utils.library_notices import drop_known_notices

__version__ = "0.1.0"

drop_known_notices()  # before any command imports bitsandbytes (utils/library_notices.py says which and why)
