"""Builders for the guest images the harness boots."""
