//! The crate's one logging macro. It compiles to nothing unless the `defmt` feature is on.

#[cfg(feature = "defmt")]
macro_rules! knits_trace {
    ($($arg:tt)*) => { defmt::trace!($($arg)*) };
}

#[cfg(not(feature = "defmt"))]
macro_rules! knits_trace {
    ($($arg:tt)*) => {{}};
}
