//! knits-host
