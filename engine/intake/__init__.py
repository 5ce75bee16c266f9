"""The streaming intake: events and identify messages read from a source into the store."""
