"""The Label Studio ML backend of detector-al: a thin FastAPI layer over ``detector_al``."""
