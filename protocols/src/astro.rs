//! Sunrise and sunset (being written).
