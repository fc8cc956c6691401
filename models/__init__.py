"""Trained ETGNN model files shipped with ase_etgnn (see the model cards ``*.md`` beside them)."""
