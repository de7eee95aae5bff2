"""One module per user-facing action; each takes options and a Reporter and returns an Outcome."""
