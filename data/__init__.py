"""Small assets shipped with treegym (the embedded default model under ``embedded/``)."""
