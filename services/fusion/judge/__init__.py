"""The judge: gathers a request's answers, decides when to release, analyses and fuses them."""
