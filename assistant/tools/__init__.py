"""Tools the model can call: one file per tool, registered in ``registry``; they use a ``Shop``."""
