//! knits-np-sim
