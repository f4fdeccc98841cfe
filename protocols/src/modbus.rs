//! Modbus register maps (being written).
