"""Tests of the local emulator, driven with plain aiohttp."""
