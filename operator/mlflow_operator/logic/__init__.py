"""Pure decisions: no I/O, no clock (time is passed in), testable without a cluster."""
