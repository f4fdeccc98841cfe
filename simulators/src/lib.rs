//! Simulated fleets running the real firmware over physical models.
