"""Inference backends behind one small protocol (`base.Backend`)."""
