"""Test and benchmark harness: real servers started on free loopback ports."""
