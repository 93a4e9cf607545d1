//! Cross-service scenario tests live in `tests/scenarios/`; this library is empty.
