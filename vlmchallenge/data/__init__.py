"""OpenPack data pipeline: annotations + frames -> WebDataset shards."""
