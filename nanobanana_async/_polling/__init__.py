"""The polling layer: task entries and their states, the scheduler loop, the completion model."""
