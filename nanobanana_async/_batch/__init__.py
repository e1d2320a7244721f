"""The batch layer: outcome and event types, the engine behind stream/map, resume from a journal."""
