"""The model: the detector adapter, its predictions type, box geometry, training and the pretrained base."""
