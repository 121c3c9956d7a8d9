//! knits-proxy
