"""Tests of invoke.backend."""
