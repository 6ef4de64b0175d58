"""Recorder: archives a live room to object storage (see issue: recorder)."""
