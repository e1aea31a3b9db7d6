"""Building blocks shared by every Perceiver IO model."""
