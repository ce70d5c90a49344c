"""`fusion eval`: whether a fused panel beats its best single model. Pure domain code and shipped data."""
