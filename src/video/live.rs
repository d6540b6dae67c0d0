//! Placeholder: live feed with drop policy (being written).
