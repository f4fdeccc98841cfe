//! End-to-end suites spanning crates live in `tests/tests/`.
